"""A cell's namespaces, entered ahead of time by a spare thread of the kernel.

Most of a plain ``%%isolate`` cell's time, after the fork, goes to entering its namespaces:
unshare, the mounts, the hostname and loopback (2 ms of 13, measured in a stock kernel). A
thread can do all of that for itself (unshare changes the calling thread's namespaces
alone) and the child it forks inherits them. So after each such cell a spare thread enters
the same namespaces in the background, and waits; the next cell with the same isolation is
forked by it (one wake-up, instead of a thread started and the namespaces entered on its
way) and only takes its keyring and its /proc (:func:`finish_ahead`). A cell with
another isolation ends the spare (its namespaces go with it) and is run as before.

What the kernel's other threads see does not change: the spare's namespaces are its own.
Its working directory and umask are its own too (unshare(CLONE_NEWNS) unshares them): it
takes the kernel's again just before it forks. A spare serves one cell, because a thread
may enter a new pid namespace for its children once. Spares are started by a thread of
their own (a thread that entered a pid namespace may start no threads), so that the
kernel's main thread never waits for one.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable

from nskernel import _syscalls
from nskernel.cell import forks, sandbox
from nskernel.isolation import Isolation


def may_enter_ahead(isolation: Isolation) -> bool:
    """Whether a thread of the kernel may enter a cell's namespaces before the cell comes
    (:func:`enter_ahead`): a pid namespace and no new user namespace (which a thread of a
    multi-threaded process cannot make), in one step (not behind walls, see
    :func:`sandbox.walls_and_rooms`), not joining a named network namespace, no cgroups."""
    return (isolation.pid and not isolation.uses_user_namespace and isolation.netns is None
            and not sandbox.walls_and_rooms(isolation) and not isolation.cgroups_hidden)


def enter_ahead(isolation: Isolation) -> None:
    """In a thread of the kernel, before the cell exists: what :func:`sandbox.enter` does
    but the keyring and /proc. unshare changes the calling thread's namespaces alone (its
    pid namespace for its children), and the child it forks inherits them: that child
    then takes the last steps, :func:`finish_ahead`."""
    _syscalls.unshare(isolation.clone_flags())
    sandbox.furnish(isolation)


def finish_ahead(isolation: Isolation) -> None:
    """In the child forked by a thread that ran :func:`enter_ahead` (PID 1 of its pid
    namespace): a session keyring of its own and its /proc."""
    sandbox.own_session_keyring(isolation)
    forks.mount_proc()


class Spare:
    """A thread in a cell's namespaces, waiting to fork it (see the module's docstring)."""

    def __init__(self, isolation: Isolation) -> None:
        self.isolation = isolation
        self.ready = threading.Event()
        self.failed = False
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="nskernel-spare", daemon=True).start()

    def _serve(self) -> None:
        try:
            enter_ahead(self.isolation)
        except Exception:  # noqa: BLE001 - no spares here; cells enter their namespaces
            self.failed = True
            return
        finally:
            self.ready.set()
        work = self._work.get()
        if work is not None:
            with contextlib.suppress(OSError):  # else the cell starts where the spare is
                _follow_the_kernel()
            work()
        # Ending here, the thread takes its namespaces along (the cell's own stay).

    def run_in(self, work: Callable[[], None]) -> None:
        """Have the spare run ``work`` (which forks the cell) and end with it."""
        self._work.put(work)

    def discard(self) -> None:
        self._work.put(None)


def _follow_the_kernel() -> None:
    """The kernel's working directory and umask, now (a cell may have changed them since
    the spare entered its namespaces): /proc/self names the kernel's main thread. The
    directory is taken by its path, as the spare's mount namespace shows it (a copy of the
    kernel's): through the link itself the spare would be in the kernel's mount namespace's
    directory, which the cell's could not reach (getcwd fails). Only where that path is not
    there (a mount the kernel made after the copy) is the link followed."""
    try:
        os.chdir(os.readlink("/proc/self/cwd"))
    except OSError:
        os.chdir("/proc/self/cwd")
    with open("/proc/self/status") as status:
        umask = next(line.split()[1] for line in status if line.startswith("Umask:"))
    os.umask(int(umask, 8))


class _Starter:
    """The thread that starts a process's spares, and the spare it started last."""

    def __init__(self) -> None:
        self.failed = False  # a spare could not enter its namespaces: none are made again
        self._spare: Spare | None = None
        #: Who takes the spare, a cell or the next one started, takes it alone: a spare given
        #: both a cell's work and its end could end first, and the cell wait forever.
        self._lock = threading.Lock()
        self._wanted: queue.SimpleQueue[Isolation] = queue.SimpleQueue()
        threading.Thread(target=self._start_spares, name="nskernel-spares",
                         daemon=True).start()

    def want(self, isolation: Isolation) -> None:
        self._wanted.put(isolation)

    def take(self) -> Spare | None:
        with self._lock:
            spare, self._spare = self._spare, None
        return spare

    def _start_spares(self) -> None:
        while True:
            isolation = self._wanted.get()
            old = self.take()
            if old is not None:
                old.discard()
            spare = Spare(isolation)
            with self._lock:
                self._spare = spare


#: Each process's. A forked copy of the kernel (a cell) has none of its threads, and must
#: not use their queues: it starts with none (its pid, in a pid namespace of its own, may
#: well be the kernel's).
_starters: dict[int, _Starter] = {}
os.register_at_fork(after_in_child=_starters.clear)


def take(isolation: Isolation) -> Spare | None:
    """The spare that entered ``isolation``'s namespaces and is ready; None if there is
    none. A spare for another isolation is ended; so is one not ready yet."""
    starter = _starters.get(os.getpid())
    spare = starter.take() if starter is not None else None
    if starter is None or spare is None:
        return None
    if spare.failed:
        starter.failed = True
        return None
    if spare.isolation != isolation or not spare.ready.is_set():
        spare.discard()
        return None
    return spare


def prepare(isolation: Isolation) -> None:
    """Have a spare enter ``isolation``'s namespaces for the next cell, in the background."""
    if not may_enter_ahead(isolation):
        return
    pid = os.getpid()
    if pid not in _starters:
        _starters[pid] = _Starter()
    if not _starters[pid].failed:
        _starters[pid].want(isolation)
