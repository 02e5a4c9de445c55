"""How a process gets into new namespaces: one mechanism for the kernel and for the magics.

Callers fork first and call :func:`enter` in the single-threaded child (only there may a user
namespace be made), or a thread of the kernel enters a plain cell's namespaces for itself
ahead of time (:func:`furnish`, from :mod:`nskernel.cell.spare`). A new pid namespace applies
to children only, so the process that entered forks once more: that child is PID 1. The
kernel launcher's PID 1 becomes dumb-init; ``%%isolate`` runs the cell body as PID 1.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from nskernel import _syscalls
from nskernel.cell import maps
from nskernel.cell.forks import mount_proc
from nskernel.isolation import Isolation
from nskernel.locks import filesystem
from nskernel.locks.filesystem import CGROUP_ROOT


def enter(isolation: Isolation, *, is_pid1: bool = False) -> None:
    """Put the calling single-threaded process into the namespaces ``isolation`` asks for:
    root inside its user namespace (if it made one), mounts that no longer propagate to the
    host, its hostname and loopback, a session keyring of its own (the kernel's keys are not
    a cell's). ``is_pid1``: the caller already is PID 1 of a new pid namespace (see
    :func:`forked_in_thread`) and only needs its /proc."""
    flags = isolation.clone_flags() & ~(_syscalls.CLONE_NEWPID if is_pid1 else 0)
    own_session_keyring(isolation)  # not the kernel's, nor its session's
    if isolation.netns is not None:
        join_named_netns(isolation.netns)  # first: a new user namespace has no rights on it
    if isolation.uses_user_namespace:
        _unshare_as_root(flags, isolation.map_root_to)
    else:
        _syscalls.unshare(flags)
    furnish(isolation)
    if is_pid1:
        mount_proc()


def furnish(isolation: Isolation) -> None:
    """What new namespaces hold: private mounts, the new network's /sys and /run directories,
    the ipc filesystems, the hostname and loopback, the file locks."""
    if isolation.mount:
        _syscalls.mount("none", "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE)
        if isolation.net or isolation.netns is not None:
            _mount_sys()
        if isolation.net:
            private_run_dirs()
        if isolation.ipc:
            _mount_ipc_filesystems(isolation.tmpfs_size)
    _set_hostname_and_lo(isolation)
    if isolation.cgroups_hidden:
        filesystem.hide_cgroups()
    filesystem.make_view(isolation)


#: The outside uid and gid a root kernel stands for: on the host it acts as nobody.
NOBODY = 65534


def enter_walls(isolation: Isolation, *, user_namespace: bool, map_root_to: int | None = None,
                private_run: bool = False, run_dirs_owner: int | None = None,
                expose: Sequence[str] = (), is_pid1: bool = False,
                private_tmp: Sequence[str] | None = None, cgroups: Sequence[str] = ()) -> None:
    """First of two steps into namespaces that must not be walked out of (the Isolated
    Python kernel; a cell with a user and a pid namespace): new mount, pid and ipc
    namespaces (and the user namespace that owns them, if ``user_namespace``), with the
    mounts that must stay where they are: the private /run directories, /dev/shm and
    /dev/mqueue. /proc comes next, mounted by the new pid namespace's first process.

    Every mount made here, and that /proc, ends up *locked* in the mount namespace of the
    second step (:func:`enter_rooms`): that one belongs to a less privileged user
    namespace, so its root cannot unmount them to uncover what lies beneath (the host's
    /proc). bubblewrap reaches the same end by a different road. /dev is a fresh one with
    only what a notebook needs and terminals of its own (see :func:`filesystem.private_dev`).
    ``private_run``: private
    /run directories even without a new network namespace (the kernel keeps its scratch
    directory in there); ``run_dirs_owner``: the second step's root, in this namespace's
    ids; ``expose``: directories a root kernel, which is nobody on the host, must still
    reach (see :func:`expose_to_everyone`); ``is_pid1``: the caller is PID 1 of its pid
    namespace already. With ``isolation.readonly`` the host's files become read-only here,
    so that the second step cannot make them writable again; else ``private_tmp`` asks for
    a fresh /tmp of ``isolation.tmpfs_size``, with the directories it names bound back.
    ``cgroups``: the only cgroup directories left to see (see :func:`show_only_cgroups`).
    """
    flags = _syscalls.CLONE_NEWNS
    if isolation.pid and not is_pid1:
        flags |= _syscalls.CLONE_NEWPID
    if isolation.ipc:
        flags |= _syscalls.CLONE_NEWIPC
    # The session's keys (root's, for a root Jupyter) are for nothing behind the walls, the
    # kernel's init included (a rootless kernel may trace it).
    own_session_keyring(isolation)
    if user_namespace:
        _unshare_as_root(flags | _syscalls.CLONE_NEWUSER, map_root_to)
    else:
        _syscalls.unshare(flags)
    _syscalls.mount("none", "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE)
    filesystem.private_dev(host_ipc=not isolation.ipc)
    # First, so that the mounts made below stay writable.
    if isolation.readonly or isolation.hide:
        filesystem.make_view(isolation)
    if not isolation.readonly and private_tmp is not None:
        filesystem.private_tmp(isolation.tmpfs_size, private_tmp)
    expose_to_everyone(expose)
    if isolation.net or private_run:
        private_run_dirs(owner=run_dirs_owner)
    if isolation.ipc:
        _mount_ipc_filesystems(isolation.tmpfs_size)
    if cgroups:
        show_only_cgroups(cgroups)
    if isolation.cgroups_hidden:
        filesystem.hide_cgroups()


def show_only_cgroups(directories: Sequence[str]) -> None:
    """Cover /sys/fs/cgroup with a tmpfs that holds only ``directories`` (bound back at their
    places): a kernel that owns its cgroup sees neither the host's tree nor another kernel's
    cgroups, which belong to the same "nobody" and so would be writable to it."""
    filesystem.cover_with_tmpfs(CGROUP_ROOT, "mode=755", directories,
                                flags=_NOSUID_NODEV_NOEXEC, recursive=False)
    for directory in dict.fromkeys(directories):
        filesystem.cgroup_limits_readonly(directory)
    _syscalls.mount("none", CGROUP_ROOT, None, _syscalls.MS_REMOUNT | _syscalls.MS_RDONLY
                    | _NOSUID_NODEV_NOEXEC)


def enter_rooms(isolation: Isolation, *, map_root_to: int | None = None,
                keep_cgroups: bool = False, own_keyring: bool = True) -> None:
    """Second step, after /proc is mounted: a user namespace of its own that owns new
    mount, net and uts namespaces.

    Its root has every capability over its own namespaces (the lab needs them) and none
    over anything outside: not over the host's network (SIOCGSKNS on the kernel's adopted
    listening sockets fails), sysctls, devices, modules or processes, not over the mounts
    of the first step, and not over any key of the session it came from (it gets a
    session keyring of its own). ``map_root_to``: whom root stands for outside; ``None`` for
    the caller itself. ``keep_cgroups``: /sys/fs/cgroup stays as it was, under the fresh
    /sys of a new network namespace (the kernel makes its cells' cgroups in there).
    ``own_keyring=False``: keep the session keyring that the first step made, when nothing
    but our own code ran between the steps (a cell: one keyring each, not two, in the
    user's key quota).
    """
    flags = _syscalls.CLONE_NEWUSER | _syscalls.CLONE_NEWNS
    if isolation.net:
        flags |= _syscalls.CLONE_NEWNET
    if isolation.uts:
        flags |= _syscalls.CLONE_NEWUTS
    if own_keyring:
        own_session_keyring(isolation)  # shared with nothing outside the rooms
    _unshare_as_root(flags, map_root_to)
    if isolation.net:
        cgroup_root = (os.open(CGROUP_ROOT, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                       if keep_cgroups else None)
        try:
            _mount_sys()
            if cgroup_root is not None:
                _syscalls.mount(f"/proc/self/fd/{cgroup_root}", CGROUP_ROOT, None,
                                _syscalls.MS_BIND | _syscalls.MS_REC)
        finally:
            if cgroup_root is not None:
                os.close(cgroup_root)
    _set_hostname_and_lo(isolation)
    _syscalls.set_no_new_privs()


#: How long a process waits for a full key quota: the kernel frees the keyrings of processes
#: that ended in the background (after their namespaces), and fast cells outrun it.
KEY_QUOTA_WAIT = 5.0


def own_session_keyring(isolation: Isolation) -> None:
    """A fresh session keyring for the calling process (see
    :func:`_syscalls.join_fresh_session_keyring`). With the user's key quota full, a process
    that will run under the seccomp filter goes on without (the filter refuses it every
    keyring call); any other waits for the keyrings of ended processes to be freed, and what
    is still full after ``KEY_QUOTA_WAIT`` is held by live ones (say, another kernel)."""
    give_up_at = time.monotonic() + KEY_QUOTA_WAIT
    pause = 0.005
    while True:
        try:
            return _syscalls.join_fresh_session_keyring()
        except _syscalls.NamespaceError as exc:
            if exc.errno != errno.EDQUOT:
                raise
            if isolation.seccomp:
                return
            if time.monotonic() >= give_up_at:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


def walls_and_rooms(isolation: Isolation) -> bool:
    """Whether a cell enters its namespaces in the two steps above rather than one: with a
    user namespace and a pid namespace (the user namespace's root could otherwise unmount
    the /proc it mounted itself, and uncover the one beneath), or with a read-only view
    (which its root could otherwise make writable again, or unmount)."""
    return isolation.netns is None and (
        isolation.readonly or bool(isolation.hide) or (isolation.uses_user_namespace
                               and (isolation.pid or isolation.cgroups_hidden)))


def expose_to_everyone(directories: Sequence[str]) -> None:
    """Make ``directories`` reachable by every user, in this mount namespace only.

    A root kernel is nobody on the host, and Python, nskernel or the notebooks may live
    under a directory only root may enter (/root, say). Each such directory on the way is
    covered with a tmpfs that holds nothing but the way on, with the directory needed bound
    back at its place (reached through an fd opened before covering). What else was in
    there stays hidden from the kernel. Modes below the directories are left as they are.
    """
    for _ in range(8):  # each round opens the topmost closed directory on every way
        closed: dict[str, list[str]] = {}
        for directory in directories:
            target = os.path.realpath(directory)
            blocked = _closed_to_others(target)
            if blocked is not None:
                closed.setdefault(blocked, []).append(target)
        if not closed:
            return
        for blocked, targets in closed.items():
            filesystem.cover_with_tmpfs(blocked, "mode=755", targets)  # only the way on
    raise _syscalls.NamespaceError(f"expose {', '.join(directories)}", errno.ELOOP)


def _closed_to_others(path: str) -> str | None:
    """The topmost directory above ``path`` that others may not enter."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        directory = "/" + "/".join(parts[:depth])
        info = os.stat(directory)
        if not info.st_mode & stat.S_IXOTH and info.st_uid != NOBODY:
            return directory
    return None


def _unshare_as_root(flags: int, map_root_to: int | None) -> None:
    """unshare(flags), which include CLONE_NEWUSER; afterwards we are root in the new user
    namespace, standing for ``map_root_to`` outside (``None``: for our own ids)."""
    uid, gid = os.geteuid(), os.getegid()
    privileged_map = map_root_to not in (None, uid)
    finish_map = None
    if privileged_map:
        finish_map = (maps.ask_parent_to_map(*maps.map_by_parent, map_root_to)
                      if maps.map_by_parent is not None
                      else maps.map_writer(map_root_to, map_root_to))
    try:
        _syscalls.unshare(flags)
    except _syscalls.NamespaceError:
        if finish_map:
            finish_map(False)
        raise
    if finish_map:
        finish_map(True)
        # Our own ids are not mapped inside: become the root that the map does name.
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        _syscalls.set_dumpable()
    else:
        _syscalls.write_id_maps(uid, gid)


def _mount_sys() -> None:
    """/sys/class/net lists the netns's links; read-only where /sys is (else Linux refuses)."""
    _syscalls.mount("sysfs", "/sys", "sysfs", _NOSUID_NODEV_NOEXEC | (
        _syscalls.MS_RDONLY if os.statvfs("/sys").f_flag & os.ST_RDONLY else 0))


def _mount_ipc_filesystems(size: str) -> None:
    """POSIX shm and mqueues live in filesystems, not in the ipc namespace itself. /dev/shm
    gets ``size`` (the scratch tmpfs size, no more than the memory limit: see
    :func:`nskernel.isolation.from_args`): a tmpfs without one may take half the machine's
    RAM, and no rlimit counts its pages (only a memory cgroup does)."""
    _syscalls.mount("tmpfs", "/dev/shm", "tmpfs", _syscalls.MS_NOSUID | _syscalls.MS_NODEV,
                    f"mode=1777,size={size}")
    if os.path.isdir("/dev/mqueue"):
        _syscalls.mount("mqueue", "/dev/mqueue", "mqueue", _NOSUID_NODEV_NOEXEC)


def _set_hostname(name: str) -> None:
    try:
        socket.sethostname(name)
    except OSError as exc:
        hint = "needs a new uts namespace owned by this user" if exc.errno == errno.EPERM else ""
        raise _syscalls.NamespaceError(f"sethostname({name!r})", exc.errno, hint) from None


def _set_hostname_and_lo(isolation: Isolation) -> None:
    if isolation.hostname:
        _set_hostname(isolation.hostname)
    if isolation.net and isolation.loopback_up:
        _syscalls.set_link_up("lo")


def thread_in_new_netns() -> AbstractContextManager[None]:
    """The calling thread alone in a new network namespace for the block, then back.

    Network namespaces are per thread: a worker thread can make and enter namespaces while
    the kernel's other threads stay where they are.
    """
    return _for_this_thread(_syscalls.CLONE_NEWNET, "net")


@contextmanager
def _for_this_thread(flag: int, ns_file: str) -> Iterator[None]:
    """unshare(flag) for the calling thread during the block; setns back to where it was."""
    home = os.open(f"/proc/thread-self/ns/{ns_file}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _syscalls.unshare(flag)
        try:
            yield
        finally:
            _syscalls.setns(home, flag, f"back to the original {ns_file} namespace")
    finally:
        os.close(home)


_NOSUID_NODEV_NOEXEC = _syscalls.MS_NOSUID | _syscalls.MS_NODEV | _syscalls.MS_NOEXEC
NETNS_DIR = "/run/netns"
#: nskernel's own place in /run: the labs' records, the kernel's scratch directory.
RUN_DIR = "/run/nskernel"
#: Where named network namespaces and the lab's records live; private in a new netns.
PRIVATE_RUN_DIRS = (NETNS_DIR, RUN_DIR)
#: The Isolated Python kernel's own scratch directory, in its private /run/nskernel: it goes
#: with the kernel's mount namespace, however the kernel ends.
KERNEL_SCRATCH_DIR = f"{RUN_DIR}/kernel"


def private_run_dirs(owner: int | None = None) -> None:
    """Fresh, empty /run/netns and /run/nskernel for a new network namespace's mount namespace.

    Namespace names made in here stay in here, and go when it goes. Where one of them does
    not exist on the host and we may not create it (a rootless kernel on a machine where
    nobody ever ran `ip netns add`), /run itself becomes a tmpfs with every entry of the
    host's /run bound back at its place (as bubblewrap builds a root), plus the two.
    ``owner``: the uid and gid that the directories belong to (default: ours).
    """
    if not all(_made(directory) for directory in PRIVATE_RUN_DIRS):
        _rebuild_run(owner=owner)
        return
    ids = "" if owner is None else f",uid={owner},gid={owner}"
    for directory in PRIVATE_RUN_DIRS:
        _syscalls.mount("tmpfs", directory, "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=755" + ids)


def _made(directory: str) -> bool:
    """Whether ``directory`` exists or we could create it."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return False
    return True


def _rebuild_run(run: str = "/run", owner: int | None = None) -> None:
    """Cover ``run`` with a tmpfs holding the private directories and, bound back, all that
    was there before (reached through an fd opened before covering it)."""
    host_run = os.open(run, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _syscalls.mount("tmpfs", run, "tmpfs", _syscalls.MS_NOSUID | _syscalls.MS_NODEV,
                        "mode=755")
        for entry in os.scandir(f"/proc/self/fd/{host_run}"):
            target = os.path.join(run, entry.name)
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
                continue
            if entry.is_dir(follow_symlinks=False):
                os.mkdir(target)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
            _syscalls.mount(entry.path, target, None, _syscalls.MS_BIND | _syscalls.MS_REC)
    finally:
        os.close(host_run)
    for directory in PRIVATE_RUN_DIRS:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        if owner is not None:
            os.chown(directory, owner, owner)


def join_named_netns(name: str) -> None:
    """setns into /run/netns/NAME (what `ip netns exec NAME` does first)."""
    try:
        fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _syscalls.NamespaceError(f"open netns {name!r}", exc.errno) from None
    try:
        _syscalls.setns(fd, _syscalls.CLONE_NEWNET, f"netns {name}")
    finally:
        os.close(fd)


