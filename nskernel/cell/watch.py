"""The cell's child as the kernel watches it: its pipes and pidfd in one poller
(:class:`Child`), its output pumped to the notebook until its result is in (:func:`pump`),
the signals that stop it and all it started (:func:`signal_tree`), its end reaped in the
background (:func:`reap_soon`), and the thread that forked it let go (:func:`let_go_soon`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import select
import signal
import time
from collections.abc import Callable

from nskernel import children
from nskernel.cell import tracebacks
from nskernel.cell.errors import IsolatedRunError
from nskernel.cell.wire import Channel
from nskernel.locks import cgroup_cleanup

StreamCallback = Callable[[str, str], None]
#: How long an interrupted child gets to stop on SIGINT before it is killed.
INTERRUPT_GRACE = 0.5
#: How often a CPU time limit on the whole cell is checked, in seconds.
CPU_CHECK_INTERVAL = 0.05


class Child:
    """The cell's child as the kernel watches it: its pid, and its pidfd in the poller that
    waits for the cell's output. Where a thread of ours forks it, that thread registers the
    pidfd and closes our copies of the pipes' write ends (:meth:`forked`): the kernel's main
    thread need not wake up for the fork, and sleeps from asking for it until the cell's
    output. ``pid_of`` is set by whoever forks it: a function that returns its pid, waiting
    for the fork if need be."""

    def __init__(self, pipes: dict[str, tuple[int, int]], is_pid1: bool) -> None:
        self.poller = select.epoll()
        #: The read ends of its pipes (registered in the poller) by name.
        self.outputs = {pipes[name][0]: name for name in pipes}
        for read_end in self.outputs:
            self.poller.register(read_end, select.EPOLLIN)
        self.is_pid1 = is_pid1  # of a pid namespace of its own: it takes all inside along
        self.pidfd: int | None = None
        self._pipes = pipes
        self.pid_of: Callable[[], int] | None = None  # see the class's docstring

    def forked(self, pid: int | None) -> None:
        """Once it is forked (``pid``), or could not be (None): the write ends are its alone.
        The pidfd is registered first: a pipe's end then means it is watched."""
        try:
            if pid is not None:
                self.pidfd = os.pidfd_open(pid)
                self.poller.register(self.pidfd, select.EPOLLIN)
        except OSError:  # out of descriptors: its pipes' end stands for its exit
            pass
        finally:
            for name, (read_end, write_end) in self._pipes.items():
                self._pipes[name] = (read_end, -1)
                close_quietly(write_end)

    @property
    def pid(self) -> int:
        """Its pid, once forked (raises what the fork raised)."""
        assert self.pid_of is not None
        return self.pid_of()

    def exists(self) -> bool:
        try:
            self.pid  # noqa: B018 - waits for the fork
        except Exception:  # noqa: BLE001 - raised where the pid was first needed
            return False
        return True

    def take_pidfd(self) -> int | None:
        pidfd, self.pidfd = self.pidfd, None
        return pidfd

    def close(self) -> None:
        if self.pidfd is not None:
            close_quietly(self.pidfd)
            self.pidfd = None
        self.poller.close()


def pump(child: Child, channel: Channel, on_stream: StreamCallback, timeout: float | None,
         until_exit: bool, over_limit: Callable[[], str | None] | None = None) -> None:
    """Forward the child's output until it is done; enforce timeout and interrupt.

    Done: the pipes are closed and the child has exited, or (for a callable, unless
    ``until_exit``) has sent its result and closed its output: its exit, tearing down a
    kernel-sized process, need not be waited for, nor the end of the message pipe. An
    exec'd command's result is its exit status, so the child must be left to exit by itself
    before anything is killed. When the child exits, whatever it left running in its process
    group is killed and the pipes are drained (for at most a second: a process that escaped
    the group may hold them). ``over_limit()``, checked every CPU_CHECK_INTERVAL, names a
    limit the cell went past: it is killed, and that is the error.
    """
    __tracebackhide__ = True
    fds = child.outputs
    decoders: dict[str, codecs.IncrementalDecoder] = {}
    started = time.monotonic()
    poller = child.poller
    open_fds = set(fds)
    interrupted = timed_out = False
    over = None
    kill_at = None if timeout is None else started + timeout
    drain_until = None
    while open_fds or (drain_until is None and (until_exit or not channel.has_result)):
        if not open_fds and child.pidfd is None:
            child.pid  # noqa: B018 - raises what the fork raised, if it failed
            break  # no pidfd to watch (out of descriptors): the pipes' end is its end
        check_at = (time.monotonic() + CPU_CHECK_INTERVAL
                    if over_limit and drain_until is None and over is None else None)
        limits = [t for t in (kill_at, drain_until, check_at) if t is not None]
        # At most an hour per wait: huge timeouts overflow.
        wait = min(max(0.0, min(limits) - time.monotonic()), 3600.0) if limits else -1
        try:
            ready = [fd for fd, _event in poller.poll(wait)]
        except KeyboardInterrupt:
            if not interrupted:
                interrupted = True
                signal_tree(child, signal.SIGINT)
                kill_at = time.monotonic() + INTERRUPT_GRACE
            continue
        now = time.monotonic()
        if child.pidfd is not None and child.pidfd in ready:
            ready.remove(child.pidfd)
            poller.unregister(child.pidfd)
            signal_tree(child, signal.SIGKILL)  # stragglers of the cell
            drain_until = now + 1.0
        if drain_until is not None and now >= drain_until:
            break
        if check_at is not None and over_limit is not None and drain_until is None:
            over = over_limit()
            if over is not None:
                signal_tree(child, signal.SIGKILL)
        if kill_at is not None and now >= kill_at and drain_until is None:
            timed_out = not interrupted
            signal_tree(child, signal.SIGKILL)
            kill_at = None
        for fd in ready:
            data = os.read(fd, 65536)
            name = fds[fd]
            if not data:
                open_fds.discard(fd)
                poller.unregister(fd)
            elif name == "messages":
                channel.feed(data)
                if channel.has_result and not until_exit:  # nothing comes after it
                    open_fds.discard(fd)
                    poller.unregister(fd)
            else:
                if name not in decoders:
                    decoders[name] = codecs.getincrementaldecoder("utf-8")("replace")
                text = decoders[name].decode(data)
                if text:
                    on_stream(name, text)
    if interrupted:
        raise tracebacks.mark(KeyboardInterrupt(
            "interrupted: stopped the cell and everything it started"))
    if over is not None:
        raise IsolatedRunError(over)
    if timed_out:
        raise IsolatedRunError(
            f"timed out after {timeout:g} s: killed the cell and everything it started")


def signal_tree(child: Child, signum: int) -> None:
    """Signal the child's process group; with SIGKILL also every descendant by pid.

    The PID 1 of a pid namespace of its own is enough: its end takes everything inside
    along (nothing inside can leave the namespace)."""
    pid = child.pid
    if signum == signal.SIGKILL and child.is_pid1:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return
    if signum == signal.SIGKILL:
        for _ in range(3):  # a process that forks while the tree is walked adds a child
            children.kill_descendants(pid)
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


#: Children that sent their result and hung up, but may not have finished exiting:
#: {pid: (pidfd, the event loop watching it)}
_exiting: dict[int, tuple[int, asyncio.AbstractEventLoop]] = {}


def reap_soon(child: int, pidfd: int | None = None) -> bool:
    """Reap a child that is exiting without waiting for it here; True if it was reaped.

    The exit of a forked kernel-sized process (tearing down its copy of the address space)
    takes milliseconds that the cell need not wait for. In a kernel, the event loop reaps it
    as soon as it is gone (and then removes the cgroups of cells that ended); every run
    also reaps the ones already gone. Without a running event loop (a script, terminal
    IPython) it is reaped here and now. ``pidfd``: the child's, which it takes over.
    """
    reap_exited(remove_cgroups=False)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if pidfd is not None:
            os.close(pidfd)
        os.waitpid(child, 0)
        return True
    if pidfd is None:
        pidfd = os.pidfd_open(child)
    _exiting[child] = (pidfd, loop)
    # Watched from the loop's next turn: registered now, it cost the reply 0.1 ms.
    loop.call_soon(_watch_exit, child)
    return False


def _watch_exit(child: int) -> None:
    if child in _exiting:  # else reaped already, by a run since
        pidfd, loop = _exiting[child]
        loop.add_reader(pidfd, reap_exited)


def reap_exited(remove_cgroups: bool = True) -> None:
    if remove_cgroups:
        cgroup_cleanup.retry_pending()
    for child, (pidfd, loop) in list(_exiting.items()):
        if os.waitpid(child, os.WNOHANG)[0]:
            del _exiting[child]
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.remove_reader(pidfd)
            os.close(pidfd)


#: What lets the threads that forked the last cells end: see :func:`let_go_soon`.
_to_let_go: list[Callable[[], None]] = []

# A forked copy of the kernel (a cell) has none of its children to reap, nor its threads to
# let go: a cell that runs cells of its own starts with none (waitpid on another's child
# fails, and a lock copied mid-use would hang).
os.register_at_fork(after_in_child=_exiting.clear)
os.register_at_fork(after_in_child=_to_let_go.clear)


def let_go_soon(end: Callable[[], None]) -> None:
    """Let a thread that forked a cell end (``end()``) at the event loop's next turn, or
    when the next cell starts, whichever comes first; without a running loop, now. Ending,
    it wakes up and lets its namespaces go: work that slowed down the cell's reply."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        end()
        return
    _to_let_go.append(end)
    loop.call_soon(let_go_now)


def let_go_now() -> None:
    while _to_let_go:
        _to_let_go.pop()()


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


