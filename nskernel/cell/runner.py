"""Run a Python callable in new namespaces, from inside a live (multi-threaded) kernel.

The pattern: fork; the child points fds 1/2 at pipes, swaps ``sys.stdout`` and
``sys.stderr`` for plain files and never touches zmq; it enters the namespaces; it runs the
callable and sends its value, or its exception with the traceback, over a message pipe.
The parent streams the pipes to its callbacks as bytes arrive and kills the whole child
tree on timeout or interrupt. Forking keeps the interpreter warm: no start-up per call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from nskernel import children
from nskernel.cell import forks, maps, spare, tracebacks, watch
from nskernel.cell.cgroup_plan import (
    cell_group,
    cell_usage,
    cpu_time_check,
    walled_from_its_cgroups,
)
from nskernel.cell.child import RESULT_PIPE_GONE, child_main, exec_argv, with_locks
from nskernel.cell.errors import IsolatedRunError, RemoteTraceback
from nskernel.cell.watch import StreamCallback
from nskernel.cell.wire import Channel
from nskernel.isolation import Isolation, within_memory
from nskernel.limits import Limits
from nskernel.locks import cgroup_cleanup, cgroups, shown, usage

DisplayCallback = Callable[[dict, dict], None]
UsageCallback = Callable[[usage.Usage], None]


def run(isolation: Isolation, target: Callable[[], Any] | list[str], *,
        timeout: float | None = None, on_stream: StreamCallback | None = None,
        on_display: DisplayCallback | None = None, limits: Limits | None = None,
        on_usage: UsageCallback | None = None, untrusted: bool = False,
        pass_fds: Sequence[int] = ()) -> Any:
    """Call ``target()`` in a child inside ``isolation``; return its (pickled) value.

    ``target`` may instead be an argv to exec (with a pid namespace, it becomes PID 1); then
    the result is its exit code. ``on_stream(name, text)`` gets the child's stdout/stderr as
    they are written (default: this process's sys.stdout/sys.stderr); ``on_display(data,
    metadata)`` gets rich display output. An exception in ``target`` is raised here, with the
    child's traceback as its cause. ``limits``: for the body (see nskernel.limits), on the
    whole tree too where we may make cgroups; ``on_usage(usage)`` gets what the cell used,
    however it ended, before its result or error comes back. ``pass_fds``: descriptors of
    ours the child keeps (as subprocess's ``pass_fds``); it inherits no other.

    ``untrusted``: the child may be hostile (a jail), so what it sends is decoded as plain
    data only (:func:`nskernel.cell.jailed_output.loads`; a pickle would run code here), at most
    ``jailed_output.OUTPUT_LIMIT`` bytes of it; its exceptions come back as builtin ones.
    """
    __tracebackhide__ = True  # IPython shows an interrupt or error at the user's cell
    check_timeout(timeout)
    watch.let_go_now()
    memory = bool(limits and limits.memory)  # refuses memory no limit counts: a filter too
    if isolation.seccomp or memory:
        try:
            from nskernel.locks import seccomp

            # Here, once: building them in each cell's fork would cost milliseconds, and
            # the child may no longer see the module.
            if isolation.seccomp:
                seccomp.compiled_filter()
            if memory:
                seccomp.memory_filter()
        except (ImportError, OSError) as exc:
            lock = "--seccomp" if isolation.seccomp else "--memory"
            raise IsolatedRunError(f"{lock} needs libseccomp (Debian: apt-get install "
                                   f"libseccomp2): {exc}") from None
    if isolation.readonly:
        shown.note_python_directories()
    if limits and limits.memory:  # each tmpfs of the cell's holds no more than its memory
        isolation = dataclasses.replace(
            isolation, tmpfs_size=within_memory(isolation.tmpfs_size, limits.memory))
    group, run_in = cell_group(limits, on_usage is not None)
    if group is not None:
        isolation = walled_from_its_cgroups(isolation)
    on_stream = on_stream or _write_to_sys
    main = target if callable(target) else lambda: exec_argv(target)
    main = with_locks(main, isolation, limits, python_body=callable(target), plain=untrusted)
    pipes = {name: os.pipe() for name in ("stdout", "stderr", "messages")}
    channel = Channel(plain=untrusted)
    status = rusage = None
    exec_mode = not callable(target)
    over_limit = cpu_time_check(group, limits)
    started = time.monotonic()
    try:
        # All else is ready before the fork is asked for: until the kernel's main thread
        # waits for the cell, a thread that forks it would wait for the interpreter's lock.
        with _forked_child(isolation, main, pipes, exec_mode, group, run_in,
                           pass_fds) as child:
            try:
                watch.pump(child, channel, on_stream, timeout, until_exit=not callable(target),
                      over_limit=over_limit)
            finally:
                for read_end, _write_end in pipes.values():
                    watch.close_quietly(read_end)
                if child.exists():  # else the fork failed, and that is the error
                    watch.signal_tree(child, signal.SIGKILL)  # whatever the cell left running
                    if group is not None:
                        group.kill(wait=False)
                    if channel.has_result and callable(target) and on_usage is None:
                        watch.reap_soon(child.pid, child.take_pidfd())  # only its end matters
                    else:
                        _pid, status, rusage = os.wait4(child.pid, 0)
                child.close()
                if on_usage is not None:
                    on_usage(cell_usage(time.monotonic() - started, group, rusage))
        oom_kills = group.oom_kills() if group is not None else 0
        if oom_kills and limits and limits.memory and not (status and _killed(status)):
            on_stream("stderr", f"{limits.memory_exceeded()}: the kernel ended {oom_kills} "
                                "of the cell's processes\n")
    finally:
        if group is not None:
            # Gone when the result is back: once the cell's last processes have exited.
            cgroup_cleanup.remove_now(group)
            cgroup_cleanup.retry_pending()  # those of earlier cells that something held
    return _outcome(channel, status, on_display, exec_mode, contained=isolation.pid,
                    limits=limits, oom=oom_kills > 0)


@contextlib.contextmanager
def _forked_child(isolation: Isolation, main: Callable[[], Any],
                  pipes: dict[str, tuple[int, int]], exec_mode: bool, group: cgroups.Group | None,
                  run_in: Callable[[Callable[[], None]], None] | None,
                  pass_fds: Sequence[int] = ()) -> Iterator[watch.Child]:
    """Fork the child that runs ``main`` in ``isolation``; the block gets it (:class:`watch.Child`).

    Without a new user namespace, a thread of ours makes the new pid namespace and forks
    the child as its PID 1 (:func:`forks.forked_in_thread`): without cgroups, a spare that
    is in the cell's namespaces already (:mod:`nskernel.cell.spare`); with ``run_in``, the
    parked thread of ``group``. Else, with a ``group``, we move the child into it while it
    enters its namespaces (a move waits for an RCU grace period, which the two spend side by
    side); it waits for the word to go on."""
    joined = os.pipe() if group is not None and run_in is None else None
    # Root mapped to another id needs a writer outside: we are one, and a helper forked
    # from the child (a copy of the kernel) would cost milliseconds.
    mapping = ((os.pipe(), os.pipe()) if isolation.uses_user_namespace
               and isolation.map_root_to not in (None, os.geteuid()) else None)
    own_pid_namespace = isolation.pid and not isolation.uses_user_namespace
    child = watch.Child(pipes, is_pid1=own_pid_namespace)
    with contextlib.ExitStack() as stack:
        try:
            spares_serve = own_pid_namespace and group is None
            ready = spare.take(isolation) if spares_serve else None
            ask_for_a_spare = spare.for_the_next_cell(isolation) if spares_serve else None

            def after_fork(pid: int | None) -> None:  # in the forking thread
                child.forked(pid)
                if ask_for_a_spare is not None:
                    ask_for_a_spare(pid)

            if own_pid_namespace or run_in is not None:
                child.pid_of = stack.enter_context(forks.forked_in_thread(
                    lambda: child_main(isolation, main, pipes, own_pid_namespace, exec_mode,
                                       joined, mapping, group is not None, pass_fds,
                                       ahead=ready),
                    new_pid_namespace=own_pid_namespace and ready is None,
                    run_in=ready.run_in if ready is not None else run_in,
                    after_fork=after_fork, let_go=watch.let_go_soon if run_in is None else None))
            else:
                pid = forks.fork()
                if pid == 0:
                    child_main(isolation, main, pipes, False, exec_mode, joined, mapping,
                                group is not None, pass_fds)
                child.pid_of = lambda: pid
                child.forked(pid)
            if mapping is not None or joined is not None:
                child.pid  # noqa: B018 - forked: the child has its ends of these pipes
            if mapping is not None:
                (request_r, request_w), (reply_r, reply_w) = mapping
                os.close(request_w)  # so that the read below ends if the child does
                os.close(reply_r)
                mapping = ((request_r, -1), (-1, reply_w))
                maps.write_maps_for(child.pid, int(isolation.map_root_to or 0), request_r,
                                    reply_w)
            if group is not None and joined is not None:
                os.close(joined[0])
                joined = (-1, joined[1])
                try:
                    group.join(child.pid)
                except OSError as exc:
                    watch.signal_tree(child, signal.SIGKILL)
                    os.waitpid(child.pid, 0)
                    raise IsolatedRunError(f"cannot move the cell into its cgroup: "
                                           f"{exc.strerror}") from None
                os.write(joined[1], b"1")
        except BaseException:
            for fds in pipes.values():
                for fd in fds:
                    if fd >= 0:
                        watch.close_quietly(fd)
            child.close()
            raise
        finally:
            for pair in ([joined] if joined else []) + (list(mapping) if mapping else []):
                for fd in pair:
                    if fd >= 0:
                        watch.close_quietly(fd)
        yield child


def check_timeout(timeout: float | None) -> None:
    """None, or a finite number of seconds above zero (inf and nan would never fire)."""
    if timeout is not None and not (isinstance(timeout, (int, float))
                                    and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout {timeout!r}: give a finite number of seconds above 0")


def _killed(status: int) -> bool:
    """Whether the child died of SIGKILL (itself, or as a shell reports it)."""
    code = os.waitstatus_to_exitcode(status)
    return code in (-signal.SIGKILL, 128 + signal.SIGKILL)


def _outcome(channel: Channel, status: int | None, on_display: DisplayCallback | None,
             exec_mode: bool, contained: bool, limits: Limits | None = None,
             oom: bool = False) -> Any:
    __tracebackhide__ = True
    result = None
    for message in channel.messages:
        kind = message[0]
        if kind == "display":
            if on_display is not None:
                on_display(message[1], message[2])
        else:
            result = message
    code = 0 if status is None else os.waitstatus_to_exitcode(status)
    signum = -code if code < 0 else code - 128 if code > 128 else 0  # as itself or a shell
    over = limits.explain_death(signum) if result is None and limits and signum else None
    if result is None and limits and oom and signum == signal.SIGKILL:
        over = limits.memory_exceeded()
    if over:
        raise IsolatedRunError(over)
    if result is None and exec_mode:
        return children.as_shell_status(code)
    if result is None:
        reason = (f"was killed by signal {signal.Signals(-code).name}" if code < 0
                  else f"exited with status {code}")
        if code == RESULT_PIPE_GONE:
            raise IsolatedRunError("the cell closed the pipe its result comes back through "
                                   "(an fd it did not open), so there is no result")
        left = "" if contained else (
            "; anything it started may still run (the cell ended the process that stops "
            "it; with --pid nothing outlives the cell)")
        raise IsolatedRunError(f"the isolated process {reason} before returning a result{left}")
    if result[0] == "value":
        return result[1]
    _kind, error, text = result
    if text:
        error.__cause__ = RemoteTraceback(text)
    raise tracebacks.mark(error)


def _write_to_sys(name: str, text: str) -> None:
    stream = sys.stdout if name == "stdout" else sys.stderr
    stream.write(text)
    stream.flush()
