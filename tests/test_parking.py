"""The parked thread (nskernel.locks.parking) on real v1 cgroups: it forks the cell itself, in
the taken set, and the next set is ready while the cell still runs (a judge's next cell comes
as soon as this one is over)."""

from __future__ import annotations

import itertools
import threading

import pytest

from nskernel.locks import cgroup_cleanup, cgroups, parking
from nskernel.owners import owner_id

PLAN = cgroups.plan()
pytestmark = pytest.mark.skipif(
    not parking.ParkingThread.serves(PLAN, {"memory", "pids"}),
    reason="needs memory and pids in cgroup v1 hierarchies we may write (root, hybrid tree)")

_numbers = itertools.count()


def names() -> str:
    return f"{cgroups.PREFIX}{owner_id()}.p{next(_numbers)}"


def own_cgroups() -> dict[str, str]:
    """This thread's v1 cgroups: {controller: path}."""
    found = {}
    with open("/proc/thread-self/cgroup") as handle:
        for line in handle:
            _number, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                found[controller] = path
    return found


def test_the_parked_thread_runs_the_cell_and_the_next_set_is_ready_meanwhile():
    parked = parking.ParkingThread(PLAN, names)
    release, inside = threading.Event(), threading.Event()
    seen: dict[str, object] = {}
    taken: list[cgroups.Group] = []
    try:
        first = parked.take()
        assert first is not None
        taken.append(first)

        def cell() -> None:
            seen["cgroups"] = own_cgroups()
            seen["thread"] = threading.current_thread().name
            inside.set()
            release.wait(30)

        parked.run_in(cell)
        assert inside.wait(10)
        second = parked.take()  # made while the first "cell" still runs
        assert second is not None and second.name != first.name
        taken.append(second)
        parked.give_back()
        assert seen["thread"] == "nskernel-parked"
        for job in ("memory", "pids"):
            assert seen["cgroups"][job].endswith(f"/{first.name}/{cgroups.LEAF}"), seen
        release.set()
        # The thread ends with the cell: the set can go at once.
        assert cgroup_cleanup.remove_now(first, wait=5)
    finally:
        release.set()
        parked.stop()
        for group in taken:
            cgroup_cleanup.remove_now(group, wait=5)
