"""Forks from a live kernel: quietly (the kernel has threads), from a thread of our own into a
new pid namespace, and children that die with their parent (PID 1 gets its own /proc)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TextIO

from nskernel import _syscalls
from nskernel.isolation import Isolation

#: What Python 3.12+ says at every os.fork() from a process with more than one thread.
_FORK_WARNING = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks"


def fork() -> int:
    """os.fork(), without the DeprecationWarning Python 3.12+ gives when the caller has
    threads (a kernel always has: ipykernel's and libzmq's).

    The fork is the design, not an accident: the child never touches zmq or another thread's
    locks, leaves by ``os._exit`` on every path, and runs only our code and the cell's
    (see :mod:`nskernel.cell.runner`). Only this message is silenced, for this call: a user's own
    ``os.fork()`` in a cell still warns. ``catch_warnings`` swaps the process's filter list
    for the moment of the fork; nothing in a kernel changes filters from another thread.
    """
    import warnings  # here: the launcher, single-threaded, does without it

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _FORK_WARNING, DeprecationWarning)
        return os.fork()


@contextmanager
def forked_in_thread(child_main: Callable[[], NoReturn], *, new_pid_namespace: bool,
                     run_in: Callable[[Callable[[], None]], None] | None = None,
                     after_fork: Callable[[int | None], None] | None = None,
                     let_go: Callable[[Callable[[], None]], None] | None = None
                     ) -> Iterator[Callable[[], int]]:
    """Fork, from a thread other than the caller's, a child that runs ``child_main``; the
    block gets a function that returns its pid (waiting for the fork, or raising its error).
    For a multi-threaded caller (a kernel).

    ``new_pid_namespace``: the thread unshares CLONE_NEWPID first, so the child is PID 1 of
    a new pid namespace. unshare(CLONE_NEWPID) changes only the calling thread's namespace
    for children: one fork makes the PID 1, instead of a fork that unshares and forks again
    (every fork of a big kernel process costs milliseconds), and no thread of the kernel is
    left pointing at the new namespace. (Switching a thread back with setns would need
    privileges over the kernel's own pid namespace, which an isolated kernel does not have.)
    That needs root in the caller's user namespace; not for new user namespaces, which must
    own the pid namespace. ``run_in``: runs the forking function in a thread that ends with
    it (default: a new thread of our own); a child begins life in the cgroups of the thread
    that forks it (see :mod:`nskernel.locks.parking`). That thread lives until the block
    ends, because the child's parent-death signal fires when the thread that forked it ends.
    ``after_fork(pid)``: run by the forking thread in the parent as soon as the fork is done
    (``None`` if it failed), so that a caller that waits for the child's output need not
    wake up for the fork in between. ``let_go(end)``: how the thread is told to end once
    the block is over (default: ``end()`` at once).
    """
    outcome: dict[str, int | BaseException] = {}
    forked, finished = threading.Event(), threading.Event()

    def unshare_and_fork() -> None:
        try:
            if new_pid_namespace:
                _syscalls.unshare(_syscalls.CLONE_NEWPID)
            pid = fork()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            outcome["error"] = exc
            try:
                if after_fork is not None:
                    after_fork(None)
            finally:
                forked.set()
            return
        if pid == 0:
            child_main()  # in the child this thread is the only one, and never returns
        outcome["pid"] = pid
        try:
            if after_fork is not None:
                after_fork(pid)
        finally:
            forked.set()
        finished.wait()

    def child_pid() -> int:
        forked.wait()
        if "error" in outcome:
            raise outcome["error"]
        return int(outcome["pid"])

    if run_in is None:
        threading.Thread(target=unshare_and_fork, name="nskernel-cell", daemon=True).start()
    else:
        run_in(unshare_and_fork)
    try:
        yield child_pid
    finally:
        # The thread ends by itself: waiting for it would cost a wake-up.
        (let_go or (lambda end: end()))(finished.set)


def standard_stream(fd: int) -> TextIO:
    """A child's sys.stdin (``fd`` 0), sys.stdout (1) or sys.stderr (2): a text file over
    that descriptor, whatever it is when used (its pipes to the kernel), which it never
    closes. A spare may make it ahead of time (see :mod:`nskernel.cell.spare`)."""
    if fd == 0:
        return open(0, closefd=False)
    return open(fd, "w", buffering=1, closefd=False)


def mount_proc(*, detached: bool = False) -> None:
    """Give the calling process (PID 1 of a new pid namespace) a /proc that shows only it.

    Where we may, the /proc beneath is detached first (:func:`detach_proc`; ``detached``:
    that was done ahead), so that unmounting the new one later uncovers nothing. Where we may
    not, it is locked to its place (see :func:`enter_walls`).
    """
    if not detached:
        with contextlib.suppress(_syscalls.NamespaceError):
            detach_proc()
    _syscalls.mount("proc", "/proc", "proc",
                    _syscalls.MS_NOSUID | _syscalls.MS_NODEV | _syscalls.MS_NOEXEC)


def detach_proc() -> None:
    """Detach the /proc of the calling thread's mount namespace (a new one, never the
    kernel's). It waits for an RCU grace period: a tenth of a millisecond or more."""
    _syscalls.umount("/proc")


def fork_pid1(isolation: Isolation, main: Callable[[], int]) -> int:
    """Fork a child that runs ``main`` and exits with its result; return the child's pid.

    Called after :func:`enter`, so with ``isolation.pid`` the child is PID 1 of the new pid
    namespace and gets its own /proc first. The child dies with its parent.
    """
    return fork_child(main, new_proc=isolation.pid)


def fork_child(main: Callable[[], int], *, new_proc: bool = False) -> int:
    """Fork a child that dies with its parent, runs ``main`` and exits with its result."""
    parent = os.getpid()
    pid = fork()
    if pid:
        return pid
    code = 1
    try:
        _syscalls.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() not in (parent, 0):  # 0: the parent is outside our pid namespace
            os._exit(1)  # the parent died before the death signal was armed
        if new_proc:
            mount_proc()
        code = main()
    except BaseException as exc:  # noqa: BLE001 - a forked child must never return
        _report(exc)
    finally:
        os._exit(code)


def _report(exc: BaseException) -> None:
    if not isinstance(exc, SystemExit):
        os.write(2, f"nskernel: {exc}\n".encode())
