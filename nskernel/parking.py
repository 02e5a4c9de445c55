"""Cell cgroups without the wait: a thread parked in the next cell's cgroups.

Moving a process into a cgroup waits for an RCU grace period (the kernel's lock on every
thread group's cgroups is made for readers, and a writer waits them out): 5-13 ms on a
machine like ours, for every cell with a limit on its whole tree. A new thread, or a child
it forks, starts in its creator's cgroups at no cost. In cgroup v1 one thread may sit in
cgroups of its own: so a thread of the kernel waits in a fresh set of v1 cgroups, moved there
in the background once the last cell is over, and the next cell's forking thread is started
by it.

cgroup v2 lets threads of one process sit apart only in threaded subtrees: there the cell's
child is moved after all (clone3's CLONE_INTO_CGROUP would spare that; Python has no clone3).
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
from collections.abc import Callable

from nskernel.cgroups import CgroupError, Group, Plan

#: How long a cell waits for the next set of cgroups to be ready (a grace period or two).
READY_WAIT = 1.0


class ParkingThread:
    """One per kernel: keeps a set of empty v1 cgroups ready, with itself inside."""

    def __init__(self, the_plan: Plan, next_name: Callable[[], str]) -> None:
        self.plan = Plan({job: h for job, h in the_plan.places.items() if h.version == 1}, {})
        self.next_name = next_name
        self._ready: queue.Queue[Group | None] = queue.Queue(maxsize=1)
        self._to_start: queue.Queue[threading.Thread | None] = queue.Queue()
        self._started = threading.Event()
        self._parked: Group | None = None
        self.failed = False  # no parking here: every cell is moved the slow way
        self._thread = threading.Thread(target=self._park, name="nskernel-cgroups",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    @staticmethod
    def serves(the_plan: Plan, jobs: set[str]) -> bool:
        """Whether every one of ``jobs`` lives in a v1 hierarchy (where threads may part)."""
        return all(job in the_plan.places and the_plan.places[job].version == 1
                   for job in jobs)

    def take(self) -> Group | None:
        """The ready set of cgroups (with us inside, until a thread is started from it);
        None if it is not ready in time or cannot be made here."""
        if self.failed:
            return None
        try:
            return self._ready.get(timeout=READY_WAIT)
        except queue.Empty:
            return None

    def start_in(self, thread: threading.Thread) -> None:
        """Start ``thread`` from the parked thread: it begins life in the taken cgroups.
        The parked thread then moves on, to the next set."""
        self._started.clear()
        self._to_start.put(thread)
        self._started.wait()

    def stop(self) -> None:
        self._to_start.put(None)
        self._thread.join(timeout=READY_WAIT)

    def _park(self) -> None:
        own = {job: h.own for job, h in self.plan.places.items()}
        try:
            while True:
                group = Group.create(self.next_name(), the_plan=self.plan)
                group.join_thread(threading.get_native_id())  # the wait, off the cell's path
                self._parked = group
                self._ready.put(group)
                thread = self._to_start.get()
                if thread is None:
                    break
                thread.start()
                self._started.set()
                # Move on once the cell is over: a move slows every fork and exit on the
                # machine while it waits, the cell's own among them.
                thread.join()
        except (OSError, CgroupError):
            self.failed = True
            self._ready.put(None)  # no parking here: cells are moved the slow way
        finally:
            # Out of the last set (not yet taken: removed) and back where we were.
            with contextlib.suppress(OSError):
                Group("own", own).join_thread(threading.get_native_id())
            self._started.set()
            if self._parked is not None and not self._ready.empty():
                with contextlib.suppress(OSError, queue.Empty):
                    self._ready.get_nowait().remove()
