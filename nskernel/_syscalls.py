"""The one module that talks to the kernel's namespace, mount and process syscalls.

Everything else in nskernel calls these functions and never ctypes or raw ioctls itself, so
that every failure is turned, in one place, into a :class:`NamespaceError` whose one-line
message says which step failed, why, and what to do about it (bubblewrap's habit).

Python gained ``os.unshare``/``os.setns`` in 3.12; on 3.10/3.11 we reach glibc through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWCGROUP = 0x02000000

#: clone flag -> the name used in /proc/PID/ns, CLI flags and messages.
NAMESPACE_FLAGS: dict[str, int] = {
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "mnt": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "cgroup": CLONE_NEWCGROUP,
}

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_CAPABILITY_VERSION_3 = 0x20080522

KEYCTL_JOIN_SESSION_KEYRING = 1
#: keyctl's system call number by machine (glibc has no wrapper: libkeyutils does).
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "loongarch64": 219,
               "ppc64le": 271, "ppc64": 271, "s390x": 280, "i686": 288, "i386": 288,
               "armv7l": 311, "armv8l": 311}

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")

USERNS_HINT = (
    "user namespaces are disabled on this machine; "
    "as root run 'sysctl -w user.max_user_namespaces=15000' "
    "(and 'sysctl -w kernel.unprivileged_userns_clone=1' on Debian kernels, "
    "'sysctl -w kernel.apparmor_restrict_unprivileged_userns=0' on Ubuntu)"
)


class NamespaceError(OSError):
    """A namespace step failed; ``str()`` is one line: the step, the reason, the fix.

    The parts are kept as ``step`` (what was tried), ``reason`` (the errno's text) and
    ``hint`` (what to do; may be empty), for callers that word their own message.
    """

    def __init__(self, step: str, err: int, hint: str = "") -> None:
        self.step = step
        self.reason = os.strerror(err)
        self.hint = hint
        super().__init__(err, f"{step}: {self.reason}" + (f" ({hint})" if hint else ""))

    def __str__(self) -> str:
        return str(self.strerror)


# The C library is already loaded into every Python process: no find_library() (which
# spawns ldconfig) is needed, just a handle on the symbols already there.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def _check(result: int, step: str, hints: dict[int, str] | None = None) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise NamespaceError(step, err, (hints or {}).get(err, ""))


def flag_names(flags: int) -> str:
    """'net,uts' for CLONE_NEWNET|CLONE_NEWUTS: how steps are named in messages."""
    return ",".join(name for name, bit in NAMESPACE_FLAGS.items() if flags & bit)


def _unshare_hints(flags: int) -> dict[int, str]:
    if flags & CLONE_NEWUSER:
        eperm = USERNS_HINT
    else:
        eperm = "creating namespaces needs root; as another user ask for a user namespace too"
    return {
        errno.EPERM: eperm,
        errno.EACCES: eperm,
        errno.ENOSPC: "the namespace limit is reached: " + USERNS_HINT
        if flags & CLONE_NEWUSER
        else "the namespace limit is reached (see /proc/sys/user/max_*_namespaces)",
        errno.EINVAL: "unshare needs a single-threaded process; fork first",
        errno.EUSERS: "too many nested user namespaces",
    }


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (see unshare(2))."""
    step = f"unshare({flag_names(flags)})"
    if hasattr(os, "unshare"):
        try:
            os.unshare(flags)
        except OSError as exc:
            hint = _unshare_hints(flags).get(exc.errno, "")
            raise NamespaceError(step, exc.errno, hint) from None
        return
    _check(_libc.unshare(flags), step, _unshare_hints(flags))


def setns(fd: int, nstype: int = 0, what: str = "namespace") -> None:
    """Join the namespace that ``fd`` (an open /proc/PID/ns/* or /run/netns/* file) names."""
    step = f"setns({what})"
    hints = {errno.EPERM: "joining a namespace needs root in its owning user namespace",
             errno.EINVAL: "setns needs a single-threaded process; fork first"}
    if hasattr(os, "setns"):
        try:
            os.setns(fd, nstype)
        except OSError as exc:
            raise NamespaceError(step, exc.errno, hints.get(exc.errno, "")) from None
        return
    _check(_libc.setns(fd, nstype), step, hints)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str = "") -> None:
    """mount(2); the step in the message reads like the mount(8) command that would do it."""
    _check(
        _libc.mount(source.encode(), target.encode(),
                    fstype.encode() if fstype else None, flags,
                    data.encode() if data else None),
        f"mount {fstype or 'bind'} on {target}",
        {errno.EPERM: "mounting needs root or a user namespace that owns the mount namespace"},
    )


def umount(target: str, flags: int = MNT_DETACH) -> None:
    """umount2(2), lazily by default so that busy mounts go away when released."""
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def prctl(option: int, arg: int, arg3: int = 0) -> None:
    _check(_libc.prctl(option, arg, arg3, 0, 0), f"prctl({option})")


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent thread dies."""
    prctl(PR_SET_PDEATHSIG, signum)


def set_child_subreaper() -> None:
    """Orphaned descendants get reparented to this process instead of the host's init."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_dumpable() -> None:
    """Own our /proc/self files again after changing ids (which gives them to global root,
    so that a nested user namespace could not write its own maps)."""
    prctl(PR_SET_DUMPABLE, 1)


def set_no_new_privs() -> None:
    """execve can never grant more privileges again (setuid bits, file capabilities)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def drop_all_capabilities() -> None:
    """No capability left in any set: bounding (so that no exec brings one back),
    effective, permitted, inheritable, ambient."""
    drop_bounding_set()
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = struct.pack("=Ii", _CAPABILITY_VERSION_3, 0)
    empty = bytes(2 * 3 * 4)  # two {effective, permitted, inheritable} words, all clear
    _check(_libc.capset(header, empty), "capset(none)")


def join_fresh_session_keyring() -> None:
    """Give the calling thread (and what it starts from now on) a new, empty session keyring.

    The session keyring survives fork, setsid, a new user namespace and a change of uid: a
    kernel started from root's login session would possess root's keys, and could search,
    read and overwrite them. Nothing to do where keyrings are closed to us already: a
    seccomp filter refuses keyctl (EPERM), or the kernel has none (ENOSYS). The new keyring
    counts in the user's key quota: EDQUOT when that is full.
    """
    step = "keyctl(KEYCTL_JOIN_SESSION_KEYRING)"
    number = _SYS_KEYCTL.get(platform.machine())
    if number is None:
        raise NamespaceError(step, errno.ENOSYS, f"nskernel does not know keyctl's system call "
                                                 f"number on {platform.machine()}")
    if _libc.syscall(ctypes.c_long(number), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING),
                     ctypes.c_void_p(None)) < 0:
        err = ctypes.get_errno()
        if err not in (errno.EPERM, errno.ENOSYS):
            raise NamespaceError(step, err, {errno.EDQUOT: (
                "this user holds as many keys as /proc/sys/kernel/keys/maxkeys allows: end "
                "what made them, or use --seccomp, under which none is needed")}.get(err, ""))


#: mallopt's parameter for the most malloc arenas a process makes (glibc's M_ARENA_MAX).
_M_ARENA_MAX = -8


def limit_malloc_arenas(count: int) -> bool:
    """Have glibc's malloc make at most ``count`` arenas from now on; False where the C
    library has no such setting (musl's mallopt does nothing). By default each new thread
    may get an arena, reserving 64 MiB of address space it rarely uses; under an
    address-space limit those reservations would be counted as memory."""
    mallopt = getattr(_libc, "mallopt", None)
    return bool(mallopt and mallopt(ctypes.c_int(_M_ARENA_MAX), ctypes.c_int(count)))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp_filter(program: bytes) -> None:
    """Load a compiled seccomp BPF program (8 bytes per instruction) into this process."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
          ctypes.cast(ctypes.pointer(fprog), ctypes.c_void_p).value)


def drop_bounding_set() -> None:
    """Remove every capability from the bounding set: after the next execve, this process
    has none, even as root (it needs CAP_SETPCAP now to do this)."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if ctypes.get_errno() != errno.EINVAL or cap == 0:  # EINVAL: past the last capability
        _check(-1, f"prctl(PR_CAPBSET_DROP, {cap})")


def write_id_maps(uid: int, gid: int, pid: int | str = "self") -> None:
    """Map root inside the user namespace of ``pid`` to ``uid``/``gid`` outside (one id each).

    A process may write exactly this one-line map for itself (own ids, after denying
    setgroups); mapping to other ids needs a privileged writer outside the namespace
    (user_namespaces(7)), which is the case ``pid`` is for.
    """
    steps = [(f"/proc/{pid}/uid_map", f"0 {uid} 1"), (f"/proc/{pid}/gid_map", f"0 {gid} 1")]
    if pid == "self":
        steps.insert(0, ("/proc/self/setgroups", "deny"))
    for path, text in steps:
        try:
            with open(path, "w") as handle:
                handle.write(text)
        except OSError as exc:
            hint = (f"without privileges outside, a process may map only its own ids "
                    f"(here uid {uid}, gid {gid}), once, after denying setgroups"
                    if exc.errno == errno.EPERM else "")
            raise NamespaceError(f"write {path} ({text!r})", exc.errno or errno.EPERM,
                                 hint) from None


def set_link_up(name: str = "lo") -> None:
    """Bring an interface of the current network namespace up (SIOCSIFFLAGS).

    Used for ``lo`` at start-up, where importing pyroute2 would cost more than the whole
    namespace set-up; everything else about links goes through pyroute2.
    """
    import socket  # here, not at the top: the launcher's supervisor never needs it

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = _IFREQ.pack(name.encode(), 0)
            flags = _IFREQ.unpack(fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(name.encode(), flags | _IFF_UP))
    except OSError as exc:
        raise NamespaceError(f"ip link set {name} up", exc.errno or errno.EPERM) from None
