"""Names for a process that never name a later one: "PID-STARTTIME".

What nskernel makes outside a kernel (a lab's namespaces and links, cgroups) is marked with
its maker's name, so that ``nskernel clean`` removes only what a dead maker left. Kept to the
standard library: the launcher names its kernel's cgroup before anything heavy is imported.
"""

from __future__ import annotations

import os


def _process_stat(pid: int) -> tuple[str, int]:
    """(state, start time) from /proc/PID/stat (after the name, which may hold anything)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def owner_id(pid: int | None = None) -> str:
    """"PID-STARTTIME": names a process for as long as it lives, never a later one."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_process_stat(pid)[1]}"


def owner_alive(owner: str) -> bool:
    """Whether the process ``owner`` names still runs. A zombie (Z; X is the moment it is
    reaped) does not: it has ended, and only waits for its parent to read its status, which
    a parent that outlives it may not do for a long time."""
    pid, _, start = owner.partition("-")
    try:
        recorded = int(start)
        state, started = _process_stat(int(pid))
    except (OSError, ValueError, IndexError):
        return False
    return started == recorded and state not in ("Z", "X")
