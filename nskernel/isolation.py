"""What to isolate: one small value object, parsed once from CLI flags or magic arguments.

The kernelspec, the launcher and the magics all describe isolation with the same flags
(``--pid --net --mount --uts --ipc --hostname H``, and ``--user`` for cells); this module
owns their parsing, validation and the resulting clone flags, so the three never disagree.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field

from nskernel import _syscalls

#: Namespaces in the order they are shown and written to argv.
NAMESPACES = ("pid", "net", "mount", "uts", "ipc")
KERNEL_DEFAULT = NAMESPACES
DEFAULT_HOSTNAME = "isolated"
DEFAULT_TMPFS_SIZE = "64m"
#: The size of an Isolated Python kernel's own /tmp.
KERNEL_TMP_SIZE = "1g"
_SIZE = re.compile(r"^[0-9]{1,12}[kKmMgG]?$")
_SHIFTS = {"k": 10, "m": 20, "g": 30}
#: The largest scratch tmpfs (1 PiB): a cap, not memory set aside.
MAX_TMPFS_SIZE = 1 << 50

_HOSTNAME = re.compile(r"^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


class IsolationError(ValueError):
    """Bad isolation settings; the message is one line saying what to change."""


def short_repr(text: str) -> str:
    """repr(text), cut short for a one-line message when it is long."""
    return repr(text) if len(text) <= 70 else f"{text[:60]!r}... ({len(text)} characters)"


def check_hostname(name: str) -> str:
    if len(name) > 64 or not _HOSTNAME.match(name):  # length first: the pattern backtracks
        raise IsolationError(
            f"bad hostname {short_repr(name)}: use 1-64 letters, digits, '-' and '.', "
            "not starting or ending with '-'")
    return name


@dataclass(frozen=True)
class Isolation:
    """Which new namespaces a process gets, and how they are set up.

    ``user=None`` means "a user namespace exactly when not root": root can create the other
    namespaces directly, everybody else needs a user namespace to own them.
    ``pid``, ``net`` and ``ipc`` imply ``mount``: a new pid namespace needs its own /proc, a
    network namespace its own /sys (class/net shows the netns that mounted it), an ipc
    namespace its own /dev/shm (POSIX shared memory is files there); or else those files
    describe the parent's.
    """

    pid: bool = False
    net: bool = False
    mount: bool = False
    uts: bool = False
    ipc: bool = False
    user: bool | None = None
    hostname: str | None = None
    loopback_up: bool = True
    #: Join this named network namespace (/run/netns/NAME) instead of making a new one.
    netns: str | None = None
    #: Outside uid/gid that root inside a new user namespace stands for; None: the caller's.
    map_root_to: int | None = None
    #: The host's files read-only, fresh tmpfs scratch space (see nskernel.locks.filesystem).
    readonly: bool = False
    #: The size of each scratch tmpfs, as tmpfs takes it ("64m").
    tmpfs_size: str = DEFAULT_TMPFS_SIZE
    #: Host directories shown inside a read-only view: (path, writable).
    binds: tuple[tuple[str, bool], ...] = ()
    #: A view of the system's directories, Python's and the working directory's alone;
    #: every other directory of the host's is absent (implies ``readonly``).
    visible_only: bool = False
    #: In that view, whether the working directory (the notebook's) is writable.
    workdir_writable: bool = True
    #: Paths made absent: an empty directory, a file that cannot be opened.
    hide: tuple[str, ...] = ()
    #: Calls that reach past a sandbox fail with EPERM (see nskernel.locks.seccomp).
    seccomp: bool = False
    #: The body keeps no capability at all (root inside included).
    drop_caps: bool = False
    #: No cgroup filesystem inside: the cell's limits live there, in files its root may
    #: own (set by the runner for a cell in cgroups of its own; no flag).
    cgroups_hidden: bool = False
    namespaces: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _SIZE.match(self.tmpfs_size):
            raise IsolationError(f"bad size {short_repr(self.tmpfs_size)}: give a number with "
                                 "k, m or g, as 64m")
        unit = _SHIFTS.get(self.tmpfs_size[-1].lower(), 0)
        size = int(self.tmpfs_size.rstrip("kKmMgG")) << unit
        if not 0 < size <= MAX_TMPFS_SIZE:  # tmpfs reads 0 as no limit; past 2**64, wraps
            raise IsolationError(f"bad size {short_repr(self.tmpfs_size)}: give a size above "
                                 f"0, up to {MAX_TMPFS_SIZE >> 30}g, as 64m")
        seen = set()
        for path, _writable in self.binds:
            if not os.path.isabs(path):
                raise IsolationError(f"bind {short_repr(path)}: give an absolute path")
            if os.path.normpath(path) in seen:
                raise IsolationError(f"bind {short_repr(path)} is given twice: give it once, "
                                     "with :rw if it is to be writable")
            seen.add(os.path.normpath(path))
        for path in self.hide:
            if not os.path.isabs(path) or os.path.normpath(path) == "/":
                raise IsolationError(f"hide {short_repr(path)}: give an absolute path below /")
        if not self.workdir_writable and not self.visible_only:
            raise IsolationError("--workdir says how --visible-only shows the working "
                                 "directory: add --visible-only")
        if self.visible_only and not self.readonly:
            object.__setattr__(self, "readonly", True)
        if self.binds and not self.readonly:
            raise IsolationError("--bind shows a directory in a read-only view: add --readonly")
        if (self.visible_only or self.hide) and not self.pid:
            # Else /proc/PID/root of a process outside the view leads around it.
            object.__setattr__(self, "pid", True)
        if (self.readonly or self.hide or self.cgroups_hidden) and not self.mount:
            object.__setattr__(self, "mount", True)
        if self.netns is not None:
            if self.net:
                raise IsolationError("join a named network namespace or make a new one, not both")
            object.__setattr__(self, "mount", True)  # for its own /sys, as `ip netns exec`
        if (self.pid or self.net or self.ipc) and not self.mount:
            object.__setattr__(self, "mount", True)
        if self.hostname is not None:
            check_hostname(self.hostname)
            if not self.uts:
                object.__setattr__(self, "uts", True)
        chosen = tuple(name for name in NAMESPACES if getattr(self, name))
        object.__setattr__(self, "namespaces", chosen)
        if not chosen and not self.user and self.netns is None:
            raise IsolationError(
                "no namespace chosen: give at least one of " +
                ", ".join(f"--{name}" for name in NAMESPACES))

    @classmethod
    def kernel_default(cls) -> Isolation:
        return cls(**{name: True for name in KERNEL_DEFAULT}, hostname=DEFAULT_HOSTNAME,
                   tmpfs_size=KERNEL_TMP_SIZE)

    @property
    def uses_user_namespace(self) -> bool:
        return self.user if self.user is not None else os.geteuid() != 0

    def clone_flags(self) -> int:
        flags = 0
        for name in self.namespaces:
            flags |= _syscalls.NAMESPACE_FLAGS["mnt" if name == "mount" else name]
        if self.uses_user_namespace:
            flags |= _syscalls.CLONE_NEWUSER
        return flags

    def to_argv(self, user_flag: str | None = None, locks: bool = False,
                tmpfs_default: str = DEFAULT_TMPFS_SIZE) -> list[str]:
        """The flags that :func:`from_args` (on a parser with the same ``user_flag``, and
        :func:`add_lock_arguments` without --caps if ``locks``) turns back into an equal
        object.

        Settings no flag can say are refused rather than dropped: ``user=False``, ``user``
        without a ``user_flag``, ``netns`` and ``map_root_to`` (those are passed to
        :func:`from_args` beside the flags), the locks unless ``locks``, and ``drop_caps``.
        """
        unsayable = [name for name, value in (("user", self.user), ("netns", self.netns),
                                              ("map_root_to", self.map_root_to),
                                              ("readonly", (self.readonly and not locks)
                                               or None),
                                              ("hide", (self.hide and not locks) or None),
                                              ("seccomp", (self.seccomp and not locks) or None),
                                              ("drop_caps", self.drop_caps or None),
                                              ("cgroups_hidden",
                                               self.cgroups_hidden or None))
                     if value is not None and not (name == "user" and value and user_flag)]
        if unsayable:
            raise IsolationError(f"{', '.join(unsayable)} cannot be given as flags here")
        argv = [f"--{name}" for name in self.namespaces]
        if self.user:
            argv.append(str(user_flag))
        if self.hostname:
            argv += ["--hostname", self.hostname]
        if not self.loopback_up:
            argv.append("--no-lo")
        if self.visible_only:
            argv.append("--visible-only")
            if not self.workdir_writable:
                argv += ["--workdir", "ro"]
        elif self.readonly:
            argv.append("--readonly")
        for path in self.hide:
            argv += ["--hide", path]
        if locks and self.tmpfs_size != tmpfs_default:
            argv += ["--tmpfs-size", self.tmpfs_size]
        if self.readonly:
            for path, writable in self.binds:
                argv += ["--bind", path + (":rw" if writable else "")]
        if self.seccomp:
            argv.append("--seccomp")
        return argv

    def describe(self) -> str:
        """'pid, net, mount (user namespace: auto)' for messages and docs."""
        user = {None: "when not root", True: "yes", False: "no"}[self.user]
        return ", ".join(self.namespaces) + f" (user namespace: {user})"


def parse_bind(text: str) -> tuple[str, bool]:
    """"PATH" (read-only) or "PATH:rw" (writable), as --bind takes them."""
    path, _, mode = text.rpartition(":") if text.endswith((":rw", ":ro")) else (text, "", "ro")
    return path, mode == "rw"


def add_lock_arguments(parser: argparse.ArgumentParser, *, caps: bool = True,
                       tmpfs_default: str = DEFAULT_TMPFS_SIZE) -> None:
    """--readonly, --tmpfs-size and --bind (see :mod:`nskernel.locks.filesystem`), --seccomp and
    --caps: the locks of a cell, beside its namespaces. The kernel takes them without
    --caps: it has none outside its own namespaces, and needs them inside (the lab)."""
    group = parser.add_argument_group("files")
    group.add_argument("--readonly", action="store_true",
                       help="the host's files read-only; fresh tmpfs on /tmp, /var/tmp, "
                            "/dev/shm and the home directory")
    group.add_argument("--tmpfs-size", default=tmpfs_default, metavar="SIZE",
                       help=f"size of each of those tmpfs (default {tmpfs_default})")
    group.add_argument("--bind", action="append", default=[], metavar="PATH[:rw]",
                       help="show a host directory inside (read-only, or writable with :rw); "
                            "repeatable")
    group.add_argument("--visible-only", action="store_true",
                       help="show only the system's directories (/usr, /etc, /lib*, ...), "
                            "Python's and the working directory; everything else (homes, "
                            "/root, /srv, /var, ...) is absent; implies --readonly")
    group.add_argument("--workdir", choices=["rw", "ro"], default="rw",
                       help="with --visible-only: the working directory writable (default) or "
                            "read-only")
    group.add_argument("--hide", action="append", default=[], metavar="PATH",
                       help="make a file or directory absent inside; repeatable")
    parser.add_argument("--seccomp", action="store_true",
                        help="calls that reach past a sandbox (modules, kexec, reboot, bpf, "
                             "keyring, mount, namespaces, ptrace, ...) fail with EPERM")
    if caps:
        parser.add_argument("--caps", choices=["all", "none"],
                            help="capabilities the body keeps (default: none with --seccomp, "
                                 "else all that its user has)")


def add_arguments(parser: argparse.ArgumentParser, user_flag: str | None = None) -> None:
    """Add the isolation flags to a parser; ``user_flag`` (e.g. ``--user``) asks for a user
    namespace even as root. The kernel needs none: it always has a user namespace.

    Each namespace has ``--X`` and ``--no-X``; see :func:`from_args` for how they combine
    with a default set.
    """
    group = parser.add_argument_group("namespaces")
    for name in NAMESPACES:
        group.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                           help=f"new {name} namespace")
    if user_flag is not None:
        group.add_argument(user_flag, dest="user_ns", action="store_true", default=None,
                           help="new user namespace even as root (always used when not root)")
    group.add_argument("--hostname", help="hostname inside (implies --uts)")
    group.add_argument("--no-lo", dest="loopback_up", action="store_false",
                       help="leave the new network namespace's lo down")


def within_memory(tmpfs_size: str, memory: str | int | None) -> str:
    """A tmpfs size no larger than the memory limit (``--memory``'s text, or bytes): files
    in a tmpfs are memory that no rlimit counts, so each tmpfs we mount holds at most that
    much. Unchanged where either cannot be read (the limit's own parser says why)."""
    from nskernel.limits import LimitError, parse_size

    if memory is None:
        return tmpfs_size
    try:
        limit = memory if isinstance(memory, int) else parse_size(memory, "--memory")
        size = parse_size(tmpfs_size, "--tmpfs-size")
    except LimitError:
        return tmpfs_size
    return tmpfs_size if size <= limit else f"{limit // 1024}k"


def from_args(args: argparse.Namespace, default: tuple[str, ...] = (),
              default_hostname: str | None = None, **settings: object) -> Isolation:
    """Build an :class:`Isolation` from parsed :func:`add_arguments` flags.

    Namespaces named with ``--X`` are exactly the ones used; with none named, ``default``
    minus those turned off with ``--no-X``. ``default_hostname`` applies when the result has
    a uts namespace and no ``--hostname`` was given. ``settings`` are further Isolation
    fields (``netns``, ``map_root_to``).
    """
    asked = {name: getattr(args, name) for name in NAMESPACES}
    if any(asked.values()):
        chosen = {name: bool(value) for name, value in asked.items()}
    else:
        chosen = {name: name in default and value is not False for name, value in asked.items()}
    hostname = args.hostname
    if hostname is None and chosen["uts"]:
        hostname = default_hostname
    files = {}
    if hasattr(args, "readonly"):  # a parser with add_lock_arguments
        files = {"readonly": args.readonly, "visible_only": args.visible_only,
                 "workdir_writable": args.workdir == "rw",
                 "hide": tuple(os.path.normpath(path) for path in args.hide),
                 "tmpfs_size": within_memory(args.tmpfs_size, getattr(args, "memory", None)),
                 "binds": tuple(parse_bind(text) for text in args.bind),
                 "seccomp": args.seccomp}
        if hasattr(args, "caps"):
            files["drop_caps"] = (args.caps or ("none" if args.seccomp else "all")) == "none"
    return Isolation(**chosen, **files, user=getattr(args, "user_ns", None), hostname=hostname,
                     loopback_up=args.loopback_up, **settings)
