"""A read-only view of the host's files for an isolated process, with fresh scratch space.

Called in a mount namespace of the caller's own, after its other mounts are made: every
mount becomes read-only (but /proc, /sys and /dev, which are views, not files), /tmp,
/var/tmp, /dev/shm and the home directory become fresh, size-capped tmpfs, and chosen host
directories are bound back, read-only or writable. As bubblewrap's ``--ro-bind / /``,
``--tmpfs`` and ``--bind``; in a user namespace too, where mounts inherited from outside
keep their flags locked (nosuid, nodev, noexec, atime): a remount must repeat them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence

from nskernel import _syscalls
from nskernel.locks import shown

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nskernel.isolation import Isolation

CGROUP_ROOT = "/sys/fs/cgroup"
_NOSUID_NODEV_NOEXEC = _syscalls.MS_NOSUID | _syscalls.MS_NODEV | _syscalls.MS_NOEXEC
#: Mounts left as they are: not files but views of the kernel's state and devices.
VIEWS = ("/proc", "/sys", "/dev")
#: Directories that get a fresh tmpfs (when they exist), beside the home directory.
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")

_STATVFS_TO_MS = ((os.ST_NOSUID, _syscalls.MS_NOSUID), (os.ST_NODEV, _syscalls.MS_NODEV),
                  (os.ST_NOEXEC, _syscalls.MS_NOEXEC), (os.ST_NOATIME, _syscalls.MS_NOATIME),
                  (os.ST_NODIRATIME, _syscalls.MS_NODIRATIME),
                  (os.ST_RELATIME, _syscalls.MS_RELATIME))


def make_view(isolation: Isolation) -> None:
    """The file locks of ``isolation``: a read-only view (or one of the system's directories
    alone), and paths hidden in it."""
    if isolation.readonly:
        make_readonly(isolation.tmpfs_size, isolation.binds,
                                 visible_only=isolation.visible_only,
                                 workdir_writable=isolation.workdir_writable,
                                 hide=isolation.hide)
    elif isolation.hide:
        hide_paths(isolation.hide)


#: What a --visible-only view shows of the host's root, read-only, beside the views: the
#: system's programs, libraries and configuration (on a merged-/usr system most are links).
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
#: In such a view, /run is fresh (the lab's names and the kernel's scratch go there).
RUN = "/run"


def make_readonly(tmpfs_size: str, binds: Sequence[tuple[str, bool]] = (), *,
                  visible_only: bool = False, workdir_writable: bool = True,
                  hide: Sequence[str] = ()) -> None:
    """Make the calling process's view of the host read-only; see the module's docstring.

    ``tmpfs_size``: each scratch tmpfs's size, as tmpfs takes it ("64m"); ``binds``: (host
    path, writable) pairs, shown at the same path. Python's own directories (``sys.path``)
    that a scratch tmpfs would hide (a virtual environment in the home directory, say) are
    bound back read-only, so that the cell can still import what the kernel can.

    A scratch directory that is itself shown (the notebook's directory is the home, or a
    ``--bind /tmp``) gets no tmpfs: the bind shows the host's directory there, and a tmpfs
    beneath would come back on top of it with the (recursive) bind, read-only.

    ``visible_only``: a view built from a list, as bubblewrap and nsjail build one. Every
    directory at the top of the host's root but :data:`SYSTEM`, the views and the scratch
    directories is covered with an empty, read-only tmpfs (homes, /root, /srv, /var, /opt,
    /mnt, ...), /run is fresh, and only Python's directories, the working directory
    (writable unless ``workdir_writable`` is false) and ``binds`` come back through it. As
    root, what of /etc only root may read (/etc/shadow, private keys) is hidden too.
    ``hide``: paths made absent afterwards (see :func:`hide_paths`).
    """
    home = os.path.expanduser("~")
    found = [d for d in (*SCRATCH, home) if d != "/" and os.path.isdir(d)]
    # One inside another (a home directory under /tmp) is fresh with the outer one.
    scratch = [d for d in found if not any(d.startswith(os.path.join(o, "")) for o in found)]
    covered = _covered_directories(scratch) if visible_only else []
    workdir = os.getcwd() if visible_only else "/"
    python = shown.python_paths_below(scratch + covered, code_only=visible_only)
    binds = [*((path, False) for path in python),
             *([(workdir, workdir_writable)] if workdir != "/" else []), *binds]
    bound = {os.path.realpath(path) for path, _writable in binds}
    scratch = [d for d in scratch if os.path.realpath(d) not in bound]
    sources = {}
    try:
        for path, _writable in binds:
            if path in sources:
                continue
            try:
                sources[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError as exc:
                raise _syscalls.NamespaceError(f"bind {path}", exc.errno or errno.ENOENT) from None
        for mount_point in _mount_points():
            _remount(mount_point, readonly=True)
        for directory in covered:
            _syscalls.mount("tmpfs", directory, "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=755,size=1m")
        if visible_only and os.path.isdir(RUN):
            _syscalls.mount("tmpfs", RUN, "tmpfs", _syscalls.MS_NOSUID | _syscalls.MS_NODEV,
                            f"mode=755,size={tmpfs_size}")
        for directory in scratch:
            os.makedirs(directory, exist_ok=True)  # /var/tmp, in a covered /var
            _syscalls.mount("tmpfs", directory, "tmpfs", _syscalls.MS_NOSUID | _syscalls.MS_NODEV,
                            f"size={tmpfs_size},mode={1777 if directory != home else 700}")
        os.makedirs(home, mode=0o700, exist_ok=True)
        for path, writable in binds:
            _make_mount_point(path, sources[path])  # under a fresh tmpfs it may not be there yet
            _syscalls.mount(f"/proc/self/fd/{sources[path]}", path, None,
                            _syscalls.MS_BIND | _syscalls.MS_REC)
            _remount(path, readonly=not writable)
        for directory in covered:
            _syscalls.mount("none", directory, None, _syscalls.MS_REMOUNT | _syscalls.MS_BIND
                            | _syscalls.MS_RDONLY | _NOSUID_NODEV_NOEXEC)
    finally:
        for fd in sources.values():
            os.close(fd)
    if visible_only:
        hide_paths([*_top_level_files(), *shown.root_only_in_etc()])
    hide_paths(hide)
    with contextlib.suppress(OSError):  # gone from the view: it stays where it was
        os.chdir(workdir if visible_only else os.getcwd())  # through the new mounts


def _make_mount_point(path: str, source: int) -> None:
    """A directory, or for a file (a module of its own) an empty file, to bind onto."""
    if stat.S_ISDIR(os.fstat(source).st_mode):
        os.makedirs(path, exist_ok=True)
    elif not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def hide_paths(paths: Sequence[str]) -> None:
    """Make each of ``paths`` absent, as far as a mount can: a directory becomes an empty,
    read-only tmpfs; a file becomes one that cannot be opened (/dev/null bound over it on a
    mount without devices: EACCES). A path that is not there is absent already."""
    for path in paths:
        try:
            is_dir = os.path.isdir(path)
            os.lstat(path)
        except OSError:
            continue
        if is_dir:
            _syscalls.mount("tmpfs", path, "tmpfs", _syscalls.MS_RDONLY | _NOSUID_NODEV_NOEXEC,
                            "mode=000,size=4k")
        else:
            _syscalls.mount("/dev/null", path, None, _syscalls.MS_BIND)
            _syscalls.mount("none", path, None, _syscalls.MS_REMOUNT | _syscalls.MS_BIND
                            | _syscalls.MS_RDONLY | _NOSUID_NODEV_NOEXEC)


def _covered_directories(scratch: Sequence[str]) -> list[str]:
    """The directories at the top of the root that a --visible-only view covers."""
    kept = {*SYSTEM, *VIEWS, RUN, *scratch}
    return sorted(entry.path for entry in os.scandir("/")
                  if entry.is_dir(follow_symlinks=False) and entry.path not in kept)


def _top_level_files() -> list[str]:
    """Files at the top of the root (a container's /.dockerenv, a machine's notes)."""
    return sorted(entry.path for entry in os.scandir("/")
                  if not entry.is_dir(follow_symlinks=False) and not entry.is_symlink())




def private_tmp(size: str, keep: Sequence[str]) -> None:
    """A fresh /tmp and /var/tmp (tmpfs, mode 1777, ``size`` each), so that one kernel's
    files there (ipykernel's ``/tmp/ipykernel_PID``, where every isolated kernel is PID 2; a
    secret one kernel keeps in /var/tmp) never meet another's, nor outlive the kernel on the
    host's disk. Directories of ``keep`` that lie below them (the notebook's, a virtual
    environment) are bound back at their places, writable as before."""
    below = {os.path.realpath(d) for d in keep if os.path.isdir(d)}
    for directory in ("/tmp", "/var/tmp"):
        if os.path.isdir(directory) and not os.path.islink(directory):
            cover_with_tmpfs(directory, f"size={size},mode=1777",
                             [d for d in below if d.startswith(directory + "/")])


#: The host's devices a notebook needs, bound into a fresh /dev (bubblewrap's --dev list).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: Symbolic links of a fresh /dev: the process's own descriptors, and /dev/ptmx into the
#: devpts instance beside it.
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
#: Mounts of the host's /dev bound back when the caller shares the host's ipc namespace.
HOST_IPC_DIRS = ("shm", "mqueue")


def private_dev(host_ipc: bool) -> None:
    """A /dev of the caller's own (as bubblewrap's ``--dev``): a small tmpfs with the host's
    DEVICES bound in, a devpts instance of its own (ptys made inside are numbered from 0 and
    no terminal of the host's, an ssh session's or a Jupyter terminal's, is in there to be
    read or typed into), /dev/ptmx pointing into it, and empty /dev/shm and /dev/mqueue (for
    the caller's own ipc namespace to mount) or, with ``host_ipc``, the host's bound back.
    Everything else of the host's (/dev/fuse, /dev/net/tun, disks, consoles) is gone. It is
    read-only afterwards: nothing new appears in it but mounts.

    Bound, not made: a device node is usable only on a mount that allows devices, and those
    made in a user namespace never do; a bind keeps the host mount's permission.
    """
    host_dev = os.open("/dev", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _syscalls.mount("tmpfs", "/dev", "tmpfs", _NOSUID_NODEV_NOEXEC,
                        "mode=755,size=64k,nr_inodes=64")
        for name in DEVICES:
            source = f"/proc/self/fd/{host_dev}/{name}"
            if not os.path.exists(source):
                continue
            os.close(os.open(f"/dev/{name}", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
            _syscalls.mount(source, f"/dev/{name}", None, _syscalls.MS_BIND)
        for name, target in DEV_LINKS.items():
            os.symlink(target, f"/dev/{name}")
        os.mkdir("/dev/pts", 0o755)
        # No gid=: the tty group may not be mapped in a user namespace.
        _syscalls.mount("devpts", "/dev/pts", "devpts", _syscalls.MS_NOSUID | _syscalls.MS_NOEXEC,
                        "newinstance,ptmxmode=0666,mode=620")
        for name in HOST_IPC_DIRS:
            source = f"/proc/self/fd/{host_dev}/{name}"
            there = os.path.isdir(source)
            if there or name == "shm":  # a notebook needs /dev/shm; mqueue where the host has it
                os.mkdir(f"/dev/{name}", 0o755)  # a mount comes over it
            if there and host_ipc:
                _syscalls.mount(source, f"/dev/{name}", None, _syscalls.MS_BIND | _syscalls.MS_REC)
    finally:
        os.close(host_dev)
    _syscalls.mount("none", "/dev", None, _syscalls.MS_REMOUNT | _syscalls.MS_BIND
                    | _syscalls.MS_RDONLY | _NOSUID_NODEV_NOEXEC)


def cover_with_tmpfs(directory: str, options: str, keep: Sequence[str], *,
                     flags: int = _syscalls.MS_NOSUID | _syscalls.MS_NODEV,
                     recursive: bool = True) -> None:
    """Mount a tmpfs (``options``) over ``directory`` and bind each of ``keep`` (paths below
    it; one inside another is kept with the outer one) back at its place, reached through
    an fd opened before the cover. ``recursive``: with the mounts below each kept path."""
    outermost = {d for d in keep if not any(d.startswith(o + "/") for o in keep if o != d)}
    sources = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in sorted(outermost)}
    try:
        _syscalls.mount("tmpfs", directory, "tmpfs", flags, options)
        for path, fd in sources.items():
            os.makedirs(path, mode=0o755, exist_ok=True)
            _syscalls.mount(f"/proc/self/fd/{fd}", path, None,
                            _syscalls.MS_BIND | (_syscalls.MS_REC if recursive else 0))
    finally:
        for fd in sources.values():
            os.close(fd)


def hide_cgroups() -> None:
    """Cover /sys/fs/cgroup with an empty, read-only tmpfs in the caller's mount namespace: a
    cell's limits are files there that its root may own (a kernel's cells are its own
    user's), and others that root owns. One mount, where making each cgroup filesystem
    read-only took one remount apiece."""
    if os.path.isdir(CGROUP_ROOT):
        _syscalls.mount("tmpfs", CGROUP_ROOT, "tmpfs", _syscalls.MS_RDONLY | _syscalls.MS_NOSUID
                        | _syscalls.MS_NODEV | _syscalls.MS_NOEXEC, "size=4k,mode=555")


def _mount_points() -> list[str]:
    """Mount points from /proc/self/mountinfo, parents first, views left out."""
    points = set()
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = _unescape(line.split()[4])
            if not _is_view(point):
                points.add(point)
    return sorted(points, key=lambda point: (point.count("/"), point))


def _remount(mount_point: str, readonly: bool) -> None:
    """Remount one mount read-only (or writable), repeating the flags it has."""
    try:
        flags = os.statvfs(mount_point).f_flag
    except OSError:
        return  # out of reach (a directory we may not enter): nothing to write there either
    ms = _syscalls.MS_BIND | _syscalls.MS_REMOUNT
    ms |= sum(bit for st, bit in _STATVFS_TO_MS if flags & st)
    if readonly:
        ms |= _syscalls.MS_RDONLY
    try:
        _syscalls.mount("none", mount_point, None, ms)
    except _syscalls.NamespaceError:
        if not readonly or not flags & os.ST_RDONLY:
            raise  # already read-only is all we wanted


def _is_view(path: str) -> bool:
    return any(path == view or path.startswith(view + "/") for view in VIEWS)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


#: What a kernel must still write in its own cgroup: moving its cells' processes, and
#: passing controllers on to their cgroups (what systemd's Delegate=yes hands over).
CGROUP_DELEGATED_FILES = frozenset({"cgroup.procs", "cgroup.threads", "cgroup.subtree_control",
                                    "tasks"})


def cgroup_limits_readonly(directory: str) -> None:
    """Bind every writable file of a kernel's cgroup ``directory`` (its limits: memory.max,
    pids.max, cpu.max, ...) read-only over itself, but :data:`CGROUP_DELEGATED_FILES`. A
    rootless kernel is the user who made those files, and so may write them; these mounts,
    made with the kernel's walls, end up locked in the kernel's own user namespace, which can
    neither unmount them nor make them writable again. A root kernel's are root's anyway."""
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name in CGROUP_DELEGATED_FILES or not os.path.isfile(path) \
                or not os.stat(path).st_mode & 0o222:
            continue
        _syscalls.mount(path, path, None, _syscalls.MS_BIND)
        _syscalls.mount("none", path, None, _syscalls.MS_REMOUNT | _syscalls.MS_BIND
                        | _syscalls.MS_RDONLY | _syscalls.MS_NOSUID | _syscalls.MS_NODEV
                        | _syscalls.MS_NOEXEC)
