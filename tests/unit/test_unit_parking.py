"""The parked thread, where it cannot park: cells go on without it, at once."""

from __future__ import annotations

from nskernel.locks import parking
from nskernel.locks.cgroups import Hierarchy, Plan


def test_where_no_cgroup_can_be_made_a_cell_does_not_wait_for_one(tmp_path):
    nowhere = Hierarchy(1, frozenset({"memory"}), str(tmp_path / "missing" / "memory"))
    parked = parking.ParkingThread(Plan({"memory": nowhere}, {}), lambda: "nskernel.1-1.1")
    try:
        assert parked.take() is None
        assert parked.failed  # so every later cell is told at once, not after READY_WAIT
        assert [parked.take() for _ in range(3)] == [None] * 3
    finally:
        parked.stop()


def test_only_v1_hierarchies_let_a_thread_park():
    v1 = Hierarchy(1, frozenset({"memory"}), "/sys/fs/cgroup/memory")
    v2 = Hierarchy(2, frozenset({"memory"}), "/sys/fs/cgroup/unified")
    assert parking.ParkingThread.serves(Plan({"memory": v1}, {}), {"memory"})
    assert not parking.ParkingThread.serves(Plan({"memory": v2}, {}), {"memory"})
    assert not parking.ParkingThread.serves(Plan({}, {}), {"memory"})
