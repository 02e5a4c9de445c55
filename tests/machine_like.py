"""Run a command as UID:GID on what looks like another machine, without touching this one.

    python machine_like.py UID GID [--no-userns] [--no-run-netns] COMMAND...

``--no-userns``: unprivileged user namespaces look disabled (as on machines that turn
them off). ``--no-run-netns``: /run is an empty tmpfs, as on a machine where nobody ever ran
`ip netns add` (no /run/netns, no /run/nskernel) and where the user may not create them;
it holds a directory ``lock`` with a file ``probe``, a file ``utmp`` and a symlink ``shm``.

How: we enter a new user namespace (and, for ``--no-run-netns``, a mount namespace) in
which the ids we need map to themselves; still holding that namespace's capabilities, we
set its ``user.max_user_namespaces`` to 0 and/or mount the tmpfs, then become UID:GID and
exec COMMAND, which loses those capabilities at exec. The host's sysctl and mounts stay
as they were. Root maps every id (a privileged parent writes the map); anybody else maps
just their own ids, which is all that they can run as anyway.
"""

from __future__ import annotations

import os
import sys

from nskernel import _syscalls

FULL_MAP = "0 0 4294967295"


def main(uid: int, gid: int, options: set[str], argv: list[str]) -> int:
    flags = _syscalls.CLONE_NEWUSER
    if "--no-run-netns" in options:
        flags |= _syscalls.CLONE_NEWNS
    if os.geteuid() != 0:
        own_uid, own_gid = os.geteuid(), os.getegid()
        if (uid, gid) != (own_uid, own_gid):
            sys.exit(f"machine_like: as uid {own_uid}, run as yourself ({own_uid} {own_gid})")
        _syscalls.unshare(flags)
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        return _become(uid, gid, options, argv, set_groups=False)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        _syscalls.unshare(flags)
        os.write(ready_w, b"x")
        os.read(go_r, 1)  # the parent, privileged outside, writes our id maps
        _become(uid, gid, options, argv, set_groups=True)
    os.read(ready_r, 1)
    for name in ("uid_map", "gid_map"):
        _write(f"/proc/{child}/{name}", FULL_MAP)
    os.write(go_w, b"x")
    _pid, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def _become(uid: int, gid: int, options: set[str], argv: list[str], set_groups: bool) -> int:
    """In the new namespaces, with their capabilities: change the machine, then exec."""
    if "--no-userns" in options:
        _write("/proc/sys/user/max_user_namespaces", "0")
    if "--no-run-netns" in options:
        _syscalls.mount("none", "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE)
        _syscalls.mount("tmpfs", "/run", "tmpfs", _syscalls.MS_NOSUID | _syscalls.MS_NODEV,
                        "mode=755")
        # What such a /run holds: directories, files, a symlink (all root's, read-only to us).
        os.mkdir("/run/lock")
        _write("/run/lock/probe", "kept")
        _write("/run/utmp", "")
        os.symlink("/dev/shm", "/run/shm")
    if set_groups:
        os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    os.execvp(argv[0], argv)
    return 127


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    rest = sys.argv[3:]
    options = set()
    while rest and rest[0] in ("--no-userns", "--no-run-netns"):
        options.add(rest.pop(0))
    command = rest
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), options, command))
