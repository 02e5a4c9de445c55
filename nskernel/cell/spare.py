"""A cell's namespaces, entered ahead of time by a spare thread of the kernel.

Most of a plain ``%%isolate`` cell's time, after the fork, goes to entering its namespaces:
unshare, the mounts, the hostname and loopback, the keyring (2 ms of 13, measured in a stock
kernel). A thread can do all of that for itself (unshare, like a new session keyring,
changes the calling thread alone) and the child it forks inherits it. So after each such
cell a spare thread enters the same namespaces in the background, and waits; the next cell
with the same isolation is forked by it (one wake-up, instead of a thread started and the
namespaces entered on its way) and only mounts its /proc (:func:`finish_ahead`); even the
objects of its standard streams are made. A cell with another isolation ends the spare (its
namespaces go with it) and is run as before.

A spare is asked for at the fork of the cell before it, and made once that cell is over:
its child has exited and, in a kernel, the event loop has had its next turn (ipykernel
takes one after the cell, and one after its reply). On a machine with two CPUs, a spare's
work (and its turns at the interpreter's lock) would otherwise slow down that cell's child,
its exit and the kernel's reply; so would a used spare's end, which lets its namespaces
go (NAMESPACES_LINGER). A cell that comes while its spare is still being made waits for it
(never longer than doing the same work). The spare also detaches the kernel's /proc from
its mount namespace, so that the cell's PID 1 only mounts its own.

What the kernel's other threads see does not change: the spare's namespaces are its own.
Its working directory and umask are its own too (unshare(CLONE_NEWNS) unshares them): it
takes the kernel's again just before it forks. A spare serves one cell, because a thread
may enter a new pid namespace for its children once. Spares are started by a thread of
their own (a thread that entered a pid namespace may start no threads), so that the
kernel's main thread never waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import TextIO

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


def enter_ahead(isolation: Isolation) -> bool:
    """In a thread of the kernel, before the cell exists: what :func:`sandbox.enter` does
    but /proc. unshare changes the calling thread's namespaces alone (its pid namespace for
    its children), and so does joining a session keyring (credentials are a thread's):
    the child it forks inherits them, and then takes the last step, :func:`finish_ahead`.
    Whether the keyring was made (the user's key quota may be full: the child waits)."""
    _syscalls.unshare(isolation.clone_flags())
    sandbox.furnish(isolation)
    try:
        _syscalls.join_fresh_session_keyring()
    except _syscalls.NamespaceError:
        return False
    return True


def finish_ahead(isolation: Isolation, spare: Spare) -> None:
    """In the child forked by ``spare`` (PID 1 of its pid namespace): its /proc, and the
    session keyring of its own if the spare could not make it."""
    if not spare.has_keyring:
        sandbox.own_session_keyring(isolation)
    forks.mount_proc(detached=spare.proc_detached)


class Spare:
    """A thread in a cell's namespaces, waiting to fork it (see the module's docstring)."""

    def __init__(self, isolation: Isolation,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.isolation = isolation
        self._loop = loop  # the kernel's, if any: the spare ends on its next turn
        self.ready = threading.Event()
        self.failed = False
        self.has_keyring = False
        #: The kernel's /proc is detached from the spare's mount namespace already.
        self.proc_detached = False
        #: Those of the child's standard streams made ahead too, by descriptor
        self.streams: dict[int, TextIO] = {}
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="nskernel-spare", daemon=True).start()

    def _serve(self) -> None:
        try:
            self.has_keyring = enter_ahead(self.isolation)
            self.streams = _streams_ahead()
            proc = self._detach_proc()
        except Exception:  # noqa: BLE001 - no spares here; cells enter their namespaces
            self.failed = True
            return
        finally:
            self.ready.set()
        try:
            work = self._work.get()
            if work is not None:
                # Else the cell starts where the spare is (ValueError: no Umask line).
                with contextlib.suppress(OSError, ValueError):
                    _follow_the_kernel(proc)
                work()
                # Once the cell is over and the kernel idle: ending, the thread takes its
                # namespaces along, work that would slow down the kernel's reply.
                _wait_for_a_turn(self._loop)
                if self._loop is not None:
                    time.sleep(NAMESPACES_LINGER)
        finally:
            os.close(proc)

    def _detach_proc(self) -> int:
        """The cell's PID 1 mounts its /proc over nothing (:func:`forks.mount_proc`): the
        spare detaches the kernel's from its mount namespace, keeping a descriptor of it
        (returned) for :func:`_follow_the_kernel`."""
        proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            forks.detach_proc()
            self.proc_detached = True
        except _syscalls.NamespaceError:
            pass  # the cell's PID 1 tries again, and else mounts over it
        return proc

    def run_in(self, work: Callable[[], None]) -> None:
        """Have the spare run ``work`` (which forks the cell) and end with it."""
        self._work.put(work)

    def discard(self) -> None:
        self._work.put(None)


def _streams_ahead() -> dict[int, TextIO]:
    """The child's standard streams (:func:`forks.standard_stream`) that can be made before
    it exists, the same as it would make them. A stream remembers at its making whether its
    descriptor can seek: the child's stdin, /dev/null, can, and its stdout and stderr pipes
    cannot. Where one of the kernel's descriptors 0-2 differs (or is closed), the child
    makes that stream itself."""
    made: dict[int, TextIO] = {}
    for fd in (0, 1, 2):
        try:
            os.lseek(fd, 0, os.SEEK_CUR)
            seekable = True
        except OSError as exc:
            if exc.errno != errno.ESPIPE:
                continue
            seekable = False
        if seekable == (fd == 0):
            made[fd] = forks.standard_stream(fd)
    return made


def _follow_the_kernel(proc: int) -> None:
    """The kernel's working directory and umask, now (a cell may have changed them since
    the spare entered its namespaces), read in ``proc`` (a descriptor of the kernel's
    /proc), where "self" names the kernel's main thread. The directory is taken by its path,
    as the spare's mount namespace shows it (a copy of the kernel's): through the link
    itself the spare would be in the kernel's mount namespace's directory, which the cell's
    could not reach (getcwd fails). Only where that path is not there (a mount the kernel
    made after the copy) is the link followed."""
    try:
        os.chdir(os.readlink("self/cwd", dir_fd=proc))
    except OSError:
        cwd = os.open("self/cwd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc)
        try:
            os.fchdir(cwd)
        finally:
            os.close(cwd)
    fd = os.open("self/status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    try:
        status = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    start = status.index(b"\nUmask:") + len(b"\nUmask:")
    os.umask(int(status[start:status.index(b"\n", start)], 8))


#: Seconds a spare waits for the cell before it to exit (asked for at that cell's fork, it
#: waits through the cell: one that runs longer than this gets its spare made beside it,
#: where a few milliseconds of work no longer matter).
CHILD_EXIT_WAIT = 1.0
#: Seconds a spare waits for the kernel's event loop to take its next turn: a millisecond or
#: two after the cell's result, unless a cell runs cells in a loop of its own.
LOOP_TURN_WAIT = 0.005
#: Seconds a spare that forked a cell keeps its namespaces after the kernel's next turn
#: (which may come before the reply is sent): the teardown of a network namespace takes a
#: CPU for a millisecond or more, and slowed down the reply and the idle status by about as
#: much on a machine with two CPUs.
NAMESPACES_LINGER = 0.01
#: Seconds a cell waits for a spare that is still entering its namespaces (a few
#: milliseconds, or it is stuck: the cell enters them itself).
READY_WAIT = 0.5


#: What a cell asks of the starter: a spare for its isolation, once the cell is over (a
#: pidfd of its child, the event loop it ran in; either may be None).
_Wish = tuple[Isolation, "int | None", "asyncio.AbstractEventLoop | None"]


def _wait_until_over(wish: _Wish) -> None:
    """Until the cell that made ``wish`` is over (see the module's docstring), or about."""
    _isolation, exited, loop = wish
    if exited is not None:
        with contextlib.suppress(OSError):
            select.select([exited], [], [], CHILD_EXIT_WAIT)
        os.close(exited)
    _wait_for_a_turn(loop)


def _wait_for_a_turn(loop: asyncio.AbstractEventLoop | None) -> None:
    """Until ``loop`` (a kernel's, in its main thread) takes its next turn, at most
    LOOP_TURN_WAIT: a cell's reply and idle status are sent before it."""
    if loop is not None:
        turn = threading.Event()
        with contextlib.suppress(RuntimeError):  # the loop is closed: no turn to wait for
            loop.call_soon_threadsafe(turn.set)
            turn.wait(LOOP_TURN_WAIT)


class _Starter:
    """The thread that starts a process's spares, and the spare it started last."""

    def __init__(self) -> None:
        self.failed = False  # a spare could not enter its namespaces: none are made again
        self._spare: Spare | None = None
        #: Who takes the spare, a cell or the next one started, takes it alone: a spare given
        #: both a cell's work and its end could end first, and the cell wait forever.
        self._lock = threading.Lock()
        self._wanted: queue.SimpleQueue[_Wish] = queue.SimpleQueue()
        threading.Thread(target=self._start_spares, name="nskernel-spares",
                         daemon=True).start()

    def want(self, wish: _Wish) -> None:
        self._wanted.put(wish)

    def take(self) -> Spare | None:
        with self._lock:
            spare, self._spare = self._spare, None
        return spare

    def _start_spares(self) -> None:
        while True:
            wish = self._wanted.get()
            while True:  # only the newest wish counts
                _wait_until_over(wish)
                try:
                    wish = self._wanted.get_nowait()
                except queue.Empty:
                    break
            isolation, _exited, loop = wish
            old = self.take()
            if old is not None:
                old.discard()
            spare = Spare(isolation, loop)
            with self._lock:
                self._spare = spare


#: Each process's. A forked copy of the kernel (a cell) has none of its threads, and must
#: not use their queues: it starts with none (its pid, in a pid namespace of its own, may
#: well be the kernel's).
_starters: dict[int, _Starter] = {}
os.register_at_fork(after_in_child=_starters.clear)


def take(isolation: Isolation) -> Spare | None:
    """The spare that entered ``isolation``'s namespaces, once it is ready; None if there
    is none. A spare for another isolation is ended; so is one not ready in READY_WAIT."""
    starter = _starters.get(os.getpid())
    spare = starter.take() if starter is not None else None
    if starter is None or spare is None:
        return None
    if spare.failed:
        starter.failed = True
        return None
    if spare.isolation != isolation or not spare.ready.wait(READY_WAIT) or spare.failed:
        spare.discard()
        return None
    return spare


def for_the_next_cell(isolation: Isolation) -> Callable[[int | None], None] | None:
    """What asks for a spare for the next cell like this one: to be called with this cell's
    child (its pid, None if the fork failed) by the thread that forks it, so that the
    starter wakes while the kernel's main thread waits for the cell, not while it sends the
    reply. The spare is made once this cell is over: the child has exited (or ran for
    CHILD_EXIT_WAIT) and the event loop running this cell, if any, has taken its next turn.
    None where no spare can serve. Called in the thread that runs the cell: the starter is
    a thread, which a thread in a pid namespace of its own could not start."""
    if not may_enter_ahead(isolation):
        return None
    pid = os.getpid()
    if pid not in _starters:
        _starters[pid] = _Starter()
    starter = _starters[pid]
    if starter.failed:
        return None
    loop = None
    with contextlib.suppress(RuntimeError):  # none: a script, terminal IPython
        loop = asyncio.get_running_loop()

    def ask(child: int | None) -> None:
        exited = None
        if child is not None:
            with contextlib.suppress(OSError):
                exited = os.pidfd_open(child)
        starter.want((isolation, exited, loop))
    return ask
