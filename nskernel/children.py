"""Wait for a child while watching our own parent; kill the child if the parent dies; end
what a child left behind.

Used twice: by ``%%isolate`` (the cell's middle process, whose parent is the kernel, see
:mod:`nskernel.cell.child`) and by the kernel's supervisor (:mod:`nskernel.kernel.supervisor`),
which runs in a site-less interpreter: kept to the standard library and
:mod:`nskernel._syscalls` alone.
"""

from __future__ import annotations

import _signal  # not signal: its enums cost the supervisor 0.4 MB for its life
import os
import select

TYPE_CHECKING = False  # not typing's: this runs without site, and typing costs start-up
if TYPE_CHECKING:
    from typing import Any


#: Signals a supervisor passes on to the process it watches (SIGINT reaches the kernel's
#: process group directly; SIGKILL cannot be caught and needs no forwarding).
FORWARDED_SIGNALS = (_signal.SIGTERM, _signal.SIGHUP)


def supervise(child: int, *, parent_fd: int | None = None, reap_orphans: bool = False,
              relay: Any = None) -> int:
    """Wait for ``child`` while watching our parent; return the child's exit code.

    If the parent (the Jupyter server, or the kernel for a magic) dies, the child is killed
    at once: with a pid namespace that takes everything inside with it. ``parent_fd`` is a
    pidfd of the parent opened earlier (before anything could orphan us); without it, our
    current parent is watched. Pidfds mean no polling loop and no wake-up while nothing
    happens. ``reap_orphans`` is for a child subreaper without a pid namespace: orphans
    reparented to us are reaped as they die. ``relay``: the kernel's connections and output,
    carried while we wait (see :mod:`nskernel.kernel.relay`).
    """
    if parent_fd is None:
        parent_fd = os.pidfd_open(os.getppid())
    child_fd = os.pidfd_open(child)
    _forward_signals_to(child)
    if reap_orphans:
        _signal.signal(_signal.SIGCHLD, lambda _signum, _frame: _reap_all_but(child))
    try:
        # With a relay, its epoll waits for our two pidfds too: one wake-up per message.
        poller = relay.poller if relay is not None else select.epoll()
        poller.register(parent_fd, select.EPOLLIN)
        poller.register(child_fd, select.EPOLLIN)
        while True:
            events = poller.poll()
            ready = {fd for fd, _event in events}
            if relay is not None:
                relay.handle([event for event in events if event[0] not in (parent_fd, child_fd)])
            if child_fd in ready:
                if relay is not None:
                    relay.drain_outputs()
                break
            if parent_fd in ready:
                os.kill(child, _signal.SIGKILL)
                poller.unregister(parent_fd)
        _pid, status = os.waitpid(child, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        if relay is None:
            poller.close()
        os.close(parent_fd)
        os.close(child_fd)


def _forward_signals_to(pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED_SIGNALS:
        _signal.signal(signum, forward)


def _reap_all_but(child: int) -> None:
    """Reap exited orphans, leaving ``child`` for :func:`supervise` to wait for.

    A SIGCHLD handler: it can run again inside itself when orphans die in a burst, so the
    inner call may reap what the outer one just saw (ECHILD there is not an error).
    """
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == child:
            return
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            pass


def kill_descendants(pid: int, spare: int | None = None) -> None:
    """SIGKILL every descendant of ``pid`` (for when there is no pid namespace to do it),
    but ``spare`` (the launcher's cgroup keeper, which outlives us on purpose)."""
    for child in _children(pid):
        if child == spare:
            continue
        kill_descendants(child)
        try:
            os.kill(child, _signal.SIGKILL)
        except ProcessLookupError:
            pass


def as_shell_status(code: int) -> int:
    """An exit code as a shell reports it: killed by signal N (a negative code) is 128 + N."""
    return code if code >= 0 else 128 - code


def end_descendants() -> None:
    """Kill and reap every descendant of ours (a child subreaper: orphans of our
    descendants are our children), until none is left."""
    while True:
        kill_descendants(os.getpid())
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children += [int(word) for word in handle.read().split()]
        except OSError:
            pass
    return children
