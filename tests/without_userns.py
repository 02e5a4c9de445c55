"""Run a command as UID:GID where user namespaces are off, without touching the machine.

    python without_userns.py UID GID COMMAND...

Root enters a new user namespace (all ids mapped to themselves), sets that namespace's
user.max_user_namespaces to 0, drops to UID:GID and execs COMMAND. To COMMAND it looks like a
machine where unprivileged user namespaces are disabled; the host's sysctl is unchanged.
"""

from __future__ import annotations

import os
import sys

from nskernel import _syscalls

FULL_MAP = "0 0 4294967295"


def main(uid: int, gid: int, argv: list[str]) -> int:
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        _syscalls.unshare(_syscalls.CLONE_NEWUSER)
        os.write(ready_w, b"x")
        os.read(go_r, 1)  # the parent, privileged outside, writes our id maps
        with open("/proc/sys/user/max_user_namespaces", "w") as limit:
            limit.write("0")
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        os.execvp(argv[0], argv)
    os.read(ready_r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{child}/{name}", "w") as mapping:
            mapping.write(FULL_MAP)
    os.write(go_w, b"x")
    _pid, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))
