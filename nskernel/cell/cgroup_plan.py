"""Which cgroups a cell runs in, if any: made for it, or taken parked (see
:mod:`nskernel.locks.parking`), and what they say after (its CPU time, its usage)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from nskernel.cell.errors import IsolatedRunError
from nskernel.isolation import Isolation
from nskernel.limits import Limits
from nskernel.locks import cgroup_cleanup, cgroups, parking, usage
from nskernel.owners import owner_id


def walled_from_its_cgroups(isolation: Isolation) -> Isolation:
    """A cell in cgroups of its own must not reach them: they belong to the kernel's user
    on the host, which the cell is too. So no cgroup filesystem is shown to it, and unless
    the kernel is root on the host (a stock kernel run by root, whose cells are root there
    anyway), the cell gets a user namespace of its own: its root keeps its rights over the
    cell's files and namespaces and has none over the kernel's, so it cannot uncover the
    kernel's view of the cgroups (the cover is then locked), enter the kernel's mount
    namespace, or reach it through /proc/PID/root. Its cgroup namespace is rooted at its
    leaf (see cgroups.Group), where any cgroup filesystem it mounts begins."""
    user = isolation.user
    if user is None and not _in_initial_user_namespace():
        user = True
    return dataclasses.replace(isolation, cgroups_hidden=True, user=user)


def _in_initial_user_namespace() -> bool:
    """Whether this process is in the machine's first user namespace (all ids mapped)."""
    with open("/proc/self/uid_map") as handle:
        return handle.read().split() == ["0", "0", "4294967295"]


def cell_group(limits: Limits | None, stats: bool
                ) -> tuple[cgroups.Group | None, Callable[[Callable[[], None]], None] | None]:
    """The cgroups of a cell that asks for a limit on the whole tree, or for its usage, and
    where to run the function that forks the cell (None: the child is moved in instead). No
    group where none is needed, or none may be made here (the rlimits still hold).

    Where every limit lives in cgroup v1, the cell takes the set a parked thread waits in
    (see :mod:`nskernel.locks.parking`), and that thread forks it: no move
    into a cgroup (an RCU grace period) on the cell's way. Not for --stats: the kernel's
    own threads in those cgroups would count among the cell's processes.
    """
    if not (stats or (limits and limits.for_the_tree)):
        return None, None
    the_plan = _cgroup_plan()
    cpus = limits.cpus if limits else None
    if cpus is not None and "cpu" not in the_plan.places:
        raise IsolatedRunError(f"--cpus cannot be enforced here: {the_plan.missing['cpu']}")
    if not the_plan.places:
        return None, None
    if _in_initial_user_namespace():  # not in an Isolated Python kernel, whose keeper it is
        cgroup_cleanup.keep_cells(the_plan, owner_id())
    memory = limits.memory if limits and "memory" in the_plan.places else None
    cpu_time = limits.cpu_time if limits else None
    needed = ({"memory"} if memory else set()) | ({"cpu"} if cpus else set()) | (
        {"cpuacct"} if cpu_time is not None else set())
    if not stats and parking.ParkingThread.serves(the_plan, needed):
        parked = _parking_thread(the_plan)
        group = parked.take()
        if group is not None:
            try:
                group.set_limits(memory=memory, cpus=cpus)
                return group, parked.run_in
            except OSError:
                parked.give_back()
                cgroup_cleanup.remove_soon(group)
    # What the cell reads back: CPU time (for its limit, or --stats), the peaks (--stats).
    jobs = needed | ({"cpuacct", "memory", "pids"} if stats else set())
    try:
        return cgroups.Group.create(_next_cell_name(), cpus=cpus, memory=memory,
                                    the_plan=the_plan, jobs=jobs, leaf=True), None
    except cgroups.CgroupError as exc:
        if cpus is not None:
            raise IsolatedRunError(f"--cpus: {exc}") from None
        return None, None


def _next_cell_name() -> str:
    global _cells_made
    _cells_made += 1
    return f"{cgroups.PREFIX}{owner_id()}.{_cells_made}"


_parking: dict[int, parking.ParkingThread] = {}


def _parking_thread(the_plan: cgroups.Plan) -> parking.ParkingThread:
    """This process's parked thread, started at its first cell with a limit."""
    pid = os.getpid()
    if pid not in _parking:
        _parking[pid] = parking.ParkingThread(the_plan, _next_cell_name)
    return _parking[pid]


_cells_made = 0


_plans: dict[int, cgroups.Plan] = {}


def _cgroup_plan() -> cgroups.Plan:
    """Where this process's cell cgroups go, found once per process."""
    pid = os.getpid()
    if pid not in _plans:
        _plans[pid] = cgroups.plan()
    return _plans[pid]


def cpu_time_check(group: cgroups.Group | None,
                    limits: Limits | None) -> Callable[[], str | None] | None:
    """With a cgroup, the CPU time limit holds for the whole cell (the rlimit, per process)."""
    if group is None or limits is None or limits.cpu_time is None:
        return None
    if group.cpu_seconds() is None:
        return None

    def over() -> str | None:
        used = group.cpu_seconds() or 0.0
        return limits.cpu_time_exceeded() if used > limits.cpu_time else None
    return over


def cell_usage(wall: float, group: cgroups.Group | None, rusage: Any) -> usage.Usage:
    """From the cell's cgroup where it has one; else what the kernel counted for its first
    process and the descendants that process waited for (no count of processes)."""
    cpu = group.cpu_seconds() if group else None
    memory = group.memory_peak() if group else None
    if cpu is None and rusage is not None:
        cpu = rusage.ru_utime + rusage.ru_stime
    if memory is None and rusage is not None:
        memory = rusage.ru_maxrss * 1024
    return usage.Usage(wall, cpu, memory, group.pids_peak() if group else None)
