"""Cell cgroups without the wait: a thread parked in the next cell's cgroups.

Moving a process into a cgroup may wait for an RCU grace period (the kernel's lock on every
thread group's cgroups is made for readers, and a writer waits them out): on kernel 6.18,
10-20 ms for one move in two, for every cell with a limit on its whole tree. A new thread,
or a child it forks, starts in its creator's cgroups at no cost. In cgroup v1 one thread may
sit in cgroups of its own: so a thread of the kernel waits in a fresh set of v1 cgroups (in
their leaves, see :class:`nskernel.locks.cgroups.Group`), moved there in the background, and
forks the next cell itself (a thread it started would cost the cell two more wake-ups).

That thread lives while the cell runs (a child's parent-death signal is tied to the thread
that forked it), then ends: a thread that exits leaves its cgroups without a move, and the
cell's cgroups can be removed as soon as it and the cell's processes are gone. A thread that
stayed in them would have to move out first (a grace period on the cell's way out). Each set
gets a fresh parked thread; a manager thread, which never moves, makes the sets one after the
other, the next while a cell runs: a judge's next cell comes as soon as this one is over.

cgroup v2 lets threads of one process sit apart only in threaded subtrees: there the cell's
child is moved after all (clone3's CLONE_INTO_CGROUP would spare that; Python has no clone3).
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
from collections.abc import Callable

from nskernel.locks import cgroup_cleanup
from nskernel.locks.cgroups import CgroupError, Group, Plan

#: How long a cell waits for the next set of cgroups to be ready (a grace period or two).
READY_WAIT = 1.0


class _Parked:
    """One set of cgroups and the thread that waits inside them."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.inside = threading.Event()  # the thread has moved in (or failed to)
        self.failed = False
        self.to_run: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._wait_inside, name="nskernel-parked",
                                       daemon=True)

    def _wait_inside(self) -> None:
        try:
            self.group.join_thread(threading.get_native_id())  # the wait, off the cell's path
        except OSError:
            self.failed = True
            return
        finally:
            self.inside.set()
        work = self.to_run.get()
        if work is not None:
            work()
        # Ending here takes this thread out of the set, with no move.


class ParkingThread:
    """One per kernel: keeps a set of empty v1 cgroups ready, with a thread of ours inside."""

    def __init__(self, the_plan: Plan, next_name: Callable[[], str]) -> None:
        self.plan = Plan({job: h for job, h in the_plan.places.items() if h.version == 1}, {})
        self.next_name = next_name
        self._ready: queue.Queue[_Parked | None] = queue.Queue(maxsize=1)
        #: The parked thread of a set just taken (the manager's cue), or None to stop.
        self._cells: queue.Queue[threading.Thread | None] = queue.Queue()
        self._taken: _Parked | None = None
        self._waiting: _Parked | None = None
        self.failed = False  # no parking here: every cell is moved the slow way
        self._thread = threading.Thread(target=self._manage, name="nskernel-cgroups",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    @staticmethod
    def serves(the_plan: Plan, jobs: set[str]) -> bool:
        """Whether every one of ``jobs`` lives in a v1 hierarchy (where threads may part)."""
        return all(job in the_plan.places and the_plan.places[job].version == 1
                   for job in jobs)

    def take(self) -> Group | None:
        """The ready set of cgroups (with a thread of ours inside, for :meth:`run_in`); None
        if it is not ready in time or cannot be made here."""
        if self.failed:
            return None
        try:
            parked = self._ready.get(timeout=READY_WAIT)
        except queue.Empty:
            return None
        if parked is None:
            return None
        self._taken = parked
        return parked.group

    def run_in(self, work: Callable[[], None]) -> None:
        """Have the parked thread of the taken set run ``work`` (which forks the cell: the
        child begins life in those cgroups), and end with it; the next set is made at once.
        Returns at once."""
        parked, self._taken = self._taken, None
        assert parked is not None, "run_in without take"
        parked.to_run.put(work)
        self._cells.put(parked.thread)

    def give_back(self) -> None:
        """The taken set is not used after all: its thread ends, the next one is made.
        The caller removes the set."""
        parked, self._taken = self._taken, None
        if parked is not None:
            parked.to_run.put(None)
            parked.thread.join()
            self._cells.put(parked.thread)  # ended: the manager moves on at once

    def stop(self) -> None:
        self._cells.put(None)
        self._thread.join(timeout=READY_WAIT)

    def _manage(self) -> None:
        try:
            while True:
                parked = _Parked(Group.create(self.next_name(), the_plan=self.plan,
                                              leaf=True))
                self._waiting = parked
                parked.thread.start()
                parked.inside.wait()
                if parked.failed:
                    parked.thread.join()
                    raise CgroupError("cannot park a thread in a cell's cgroups")
                self._ready.put(parked)
                thread = self._cells.get()
                if thread is None:
                    break
                self._waiting = None  # the next set is made now, while the cell runs
        except (OSError, CgroupError):
            self.failed = True
            with contextlib.suppress(queue.Full):
                self._ready.put_nowait(None)  # no parking here: cells are moved the slow way
        finally:
            self._end_waiting()

    def _end_waiting(self) -> None:
        """The set made last and not taken: its thread ends, and the set is removed."""
        parked, self._waiting = self._waiting, None
        if parked is None or parked is self._taken:
            return  # none, or a cell is about to start from it
        with contextlib.suppress(queue.Empty):
            self._ready.get_nowait()
        parked.to_run.put(None)
        if parked.thread.is_alive():
            parked.thread.join(timeout=READY_WAIT)
        # join() returns a moment before the thread has left the set: poll it away.
        cgroup_cleanup.remove_now(parked.group, wait=READY_WAIT)
