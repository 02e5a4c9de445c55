"""Removing cgroups: a cell's at its end (or later, if something still holds them), and what a
dead kernel left behind: the keeper that outlives a stock kernel, and `nskernel clean`."""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import time

from nskernel.locks.cgroups import PREFIX, Group, Plan, _cpu_seconds, _read, hierarchies
from nskernel.owners import owner_alive

#: Groups that held exiting processes when their cell ended: removed on a later try.
_pending: list[Group] = []


#: How long the end of a cell waits for its killed processes to finish exiting, so that its
#: cgroups are gone when its result is back (a forked copy of a kernel takes milliseconds).
REMOVE_WAIT = 5.0


def remove_now(group: Group, wait: float = REMOVE_WAIT) -> bool:
    """Remove a cell's ``group`` once what is left in it (killed already) has exited,
    waiting up to ``wait`` s; kill again whatever forked meanwhile. False if something still
    holds it then: it goes on a later :func:`retry_pending` (or at exit)."""
    deadline = time.monotonic() + wait
    step = 0.0001
    while True:
        with contextlib.suppress(OSError):
            if group.remove():
                return True
        if time.monotonic() >= deadline:
            _pending.append(group)
            return False
        group.kill(wait=False)
        time.sleep(step)
        step = min(step * 2, 0.001)  # a thread or a process ends in about a millisecond


def remove_soon(group: Group, now: bool = True) -> None:
    """Remove ``group`` on a later :func:`retry_pending` (or at exit); try ``now`` too."""
    _pending.append(group)
    if now:
        retry_pending()


@atexit.register
def _at_exit() -> None:
    retry_pending(wait=1.0)


def retry_pending(wait: float = 0.0) -> None:
    deadline = time.monotonic() + wait
    while True:
        for group in list(_pending):
            with contextlib.suppress(OSError):
                if group.remove():
                    _pending.remove(group)
        if not _pending or time.monotonic() >= deadline:
            return
        time.sleep(0.005)


#: A cell-cgroup keeper for a process that is not inside an Isolated Python kernel (a stock
#: kernel): a shell that waits for end of file on its stdin (a pipe only that process holds
#: open), then kills what is left in the process's cell cgroups (``PREFIX + OWNER + .*``
#: in each directory given) and removes them, deepest first. A SIGKILLed kernel leaves
#: none behind: not the set parked for its next cell, nor a cell's daemons.
CELL_KEEPER = r"""
prefix=$1; shift
while read -r _; do :; done
for attempt in $(seq 50); do
    left=0
    for own in "$@"; do
        for cgroup in "$own/$prefix".*; do
            [ -d "$cgroup" ] || continue
            left=1
            [ -f "$cgroup/cgroup.kill" ] && echo 1 > "$cgroup/cgroup.kill" 2>/dev/null
            find "$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null \
                | xargs -r kill -9 2>/dev/null
            find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null
        done
    done
    [ "$left" = 0 ] && exit 0
    sleep 0.1
done
"""


CELL_KEEPER_NAME = "nskernel-cells"


_keeper_pipe: dict[int, int] = {}


def keep_cells(the_plan: Plan, owner: str) -> None:
    """Start this process's cell-cgroup keeper (once): see :data:`CELL_KEEPER`. Its own
    session, so that Jupyter's kill of the kernel's process group spares it; the pipe's end
    we keep is close-on-exec, so that only forks of ours (cells, which end with us) hold it."""

    if os.getpid() in _keeper_pipe:
        return
    gone, alive = os.pipe2(os.O_CLOEXEC)
    places = list(dict.fromkeys(h.own for h in the_plan.places.values()))
    try:
        subprocess.Popen(["/bin/sh", "-c", CELL_KEEPER, CELL_KEEPER_NAME, PREFIX + owner,
                          *places], executable="/bin/sh", stdin=gone,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError:
        os.close(alive)
        return
    finally:
        os.close(gone)
    _keeper_pipe[os.getpid()] = alive


def own_use() -> dict[str, str]:
    """What the calling process's own cgroups count now, for the ones that count it:
    {"memory": bytes, "pids": processes, "cpu": seconds}, as text."""
    found: dict[str, str] = {}
    for hierarchy in hierarchies():
        own = hierarchy.own
        memory = _read(own, "memory.current") or _read(own, "memory.usage_in_bytes")
        if memory.strip() and "memory" not in found:
            found["memory"] = f"{int(memory) / (1 << 20):.1f} MiB in use"
        pids = _read(own, "pids.current")
        if pids.strip() and "pids" not in found:
            found["pids"] = f"{int(pids)} now"
        cpu = _cpu_seconds(own)
        if cpu is not None and "cpus" not in found:
            found["cpus"] = f"{cpu:.1f} CPU seconds so far"
    return found


def clean() -> list[str]:
    """``nskernel clean``: remove empty cgroups named ours whose owner process died, under
    our own cgroup in each hierarchy (and their children). Nothing else."""

    removed = []
    for hierarchy in hierarchies():
        try:
            entries = os.listdir(hierarchy.own)
        except OSError:
            continue
        for entry in entries:
            if not entry.startswith(PREFIX):
                continue
            owner = entry[len(PREFIX):].rsplit(".", 1)[0]
            path = os.path.join(hierarchy.own, entry)
            if owner_alive(owner) or not os.path.isdir(path):
                continue
            for below, _dirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(below)
            if not os.path.exists(path):
                removed.append(f"cgroup {path}")
    return removed
