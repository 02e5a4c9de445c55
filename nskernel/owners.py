"""Names for a process that never name a later one: "PID-STARTTIME".

What nskernel makes outside a kernel (a lab's namespaces and links, cgroups) is marked with
its maker's name, so that ``nskernel clean`` removes only what a dead maker left. Kept to the
standard library: the launcher names its kernel's cgroup before anything heavy is imported.
"""

from __future__ import annotations

import os


def _process_start(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[19])


def owner_id(pid: int | None = None) -> str:
    """"PID-STARTTIME": names a process for as long as it lives, never a later one."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_process_start(pid)}"


def owner_alive(owner: str) -> bool:
    pid, _, start = owner.partition("-")
    try:
        return _process_start(int(pid)) == int(start)
    except (OSError, ValueError):
        return False
