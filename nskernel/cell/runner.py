"""Run a Python callable in new namespaces, from inside a live (multi-threaded) kernel.

The pattern: fork; the child points fds 1/2 at pipes, swaps ``sys.stdout`` and
``sys.stderr`` for plain files and never touches zmq; it enters the namespaces (and forks
once more to be PID 1 when a pid namespace is asked for); it runs the callable and sends its
value, or its exception with the traceback, back over a message pipe. The parent streams
the pipes to its own callbacks as bytes arrive and kills the whole child tree on timeout or
interrupt. Forking keeps the interpreter warm: no Python start-up is paid per call.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import errno
import math
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from nskernel import _syscalls
from nskernel.cell import jailed_output, sandbox, tracebacks
from nskernel.isolation import Isolation, within_memory
from nskernel.kernel import supervisor
from nskernel.limits import Limits
from nskernel.locks import cgroups, filesystem, parking
from nskernel.owners import owner_id

_HEADER = struct.Struct("!I")
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: How long an interrupted child gets to stop on SIGINT before it is killed.
INTERRUPT_GRACE = 0.5

#: The child's exit status when it cannot send its result: the cell closed the pipe.
RESULT_PIPE_GONE = 125

#: In the child: the fd of the message pipe, for :func:`publish_display`.
_child_messages: int | None = None
#: In the child of an ``untrusted`` run: what it sends must be plain data (see jailed_output).
_child_sends_plain = False

StreamCallback = Callable[[str, str], None]
DisplayCallback = Callable[[dict, dict], None]
UsageCallback = Callable[[cgroups.Usage], None]
#: How often a CPU time limit on the whole cell is checked, in seconds.
CPU_CHECK_INTERVAL = 0.05


class IsolatedRunError(RuntimeError):
    """The isolated call did not finish: timed out, killed, or failed to set up."""


class RemoteTraceback(Exception):
    """Carries the child's formatted traceback as the ``__cause__`` of a re-raised error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


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
    if isolation.seccomp:
        try:
            from nskernel.locks.seccomp import compiled_filter

            compiled_filter()  # here, once: the child may no longer see the module
        except (ImportError, OSError) as exc:
            raise IsolatedRunError(f"--seccomp needs libseccomp (Debian: apt-get install "
                                   f"libseccomp2): {exc}") from None
    if isolation.readonly:
        filesystem.note_python_directories()
    if limits and limits.memory:  # each tmpfs of the cell's holds no more than its memory
        isolation = dataclasses.replace(
            isolation, tmpfs_size=within_memory(isolation.tmpfs_size, limits.memory))
    group, start_thread = _cell_group(limits, on_usage is not None)
    if group is not None:
        isolation = _walled_from_its_cgroups(isolation)
    on_stream = on_stream or _write_to_sys
    main = target if callable(target) else lambda: _exec(target)
    main = _body(main, isolation, limits, python_body=callable(target), plain=untrusted)
    pipes = {name: os.pipe() for name in ("stdout", "stderr", "messages")}
    channel = _Channel(plain=untrusted)
    status = rusage = None
    exec_mode = not callable(target)
    started = time.monotonic()
    try:
        with _forked_child(isolation, main, pipes, exec_mode, group, start_thread,
                           pass_fds) as child:
            for _read_end, write_end in pipes.values():
                os.close(write_end)
            try:
                _pump(child, {pipes[name][0]: name for name in pipes}, channel, on_stream,
                      timeout, until_exit=not callable(target),
                      over_limit=_cpu_time_check(group, limits))
            finally:
                for read_end, _write_end in pipes.values():
                    _close_quietly(read_end)
                _signal_tree(child, signal.SIGKILL)  # whatever the cell left running
                if group is not None:
                    group.kill(wait=False)
                if channel.has_result and callable(target) and on_usage is None:
                    _reap_soon(child)  # its status is not needed, only its end
                else:
                    _pid, status, rusage = os.wait4(child, 0)
                if on_usage is not None:
                    on_usage(_usage(time.monotonic() - started, group, rusage))
        oom_kills = group.oom_kills() if group is not None else 0
        if oom_kills and limits and limits.memory and not (status and _killed(status)):
            on_stream("stderr", f"{limits.memory_exceeded()}: the kernel ended {oom_kills} "
                                "of the cell's processes\n")
    finally:
        if group is not None:
            # Gone when the result is back: once the cell's last processes have exited.
            cgroups.remove_now(group)
            cgroups.retry_pending()  # those of earlier cells that something held
    return _outcome(channel, status, on_display, exec_mode, contained=isolation.pid,
                    limits=limits, oom=oom_kills > 0)


def _walled_from_its_cgroups(isolation: Isolation) -> Isolation:
    """A cell in cgroups of its own must not reach them: they belong to the kernel's user
    on the host, which the cell is too. So no cgroup filesystem is shown to it, and unless
    the kernel is root on the host (a stock kernel run by root, whose cells are root there
    anyway), the cell gets a user namespace of its own: its root keeps its rights over the
    cell's files and namespaces and has none over the kernel's, so it cannot uncover the
    kernel's view of the cgroups (the cover is then locked), enter the kernel's mount
    namespace, or reach it through /proc/PID/root. Its cgroup namespace is rooted at its
    leaf (see cgroups.Group), where any cgroup filesystem it mounts begins."""
    user = isolation.user
    if user is None and not _in_initial_user_namespace():
        user = True
    return dataclasses.replace(isolation, cgroups_hidden=True, user=user)


def _in_initial_user_namespace() -> bool:
    """Whether this process is in the machine's first user namespace (all ids mapped)."""
    with open("/proc/self/uid_map") as handle:
        return handle.read().split() == ["0", "0", "4294967295"]


def _cell_group(limits: Limits | None, stats: bool
                ) -> tuple[cgroups.Group | None, Callable[[threading.Thread], None] | None]:
    """The cgroups of a cell that asks for a limit on the whole tree, or for its usage, and
    how to start the thread that forks the cell (None: the child is moved in instead). No
    group where none is needed, or none may be made here (the rlimits still hold).

    Where every limit lives in cgroup v1, the cell takes the set a parked thread waits in
    (see :mod:`nskernel.locks.parking`), and its forking thread is started from there: no move
    into a cgroup (an RCU grace period) on the cell's way. Not for --stats: the kernel's
    own threads in those cgroups would count among the cell's processes.
    """
    if not (stats or (limits and limits.for_the_tree)):
        return None, None
    the_plan = _cgroup_plan()
    cpus = limits.cpus if limits else None
    if cpus is not None and "cpu" not in the_plan.places:
        raise IsolatedRunError(f"--cpus cannot be enforced here: {the_plan.missing['cpu']}")
    if not the_plan.places:
        return None, None
    if _in_initial_user_namespace():  # not in an Isolated Python kernel, whose keeper it is
        cgroups.keep_cells(the_plan, owner_id())
    memory = limits.memory if limits and "memory" in the_plan.places else None
    cpu_time = limits.cpu_time if limits else None
    needed = ({"memory"} if memory else set()) | ({"cpu"} if cpus else set()) | (
        {"cpuacct"} if cpu_time is not None else set())
    if not stats and parking.ParkingThread.serves(the_plan, needed):
        parked = _parking_thread(the_plan)
        group = parked.take()
        if group is not None:
            try:
                group.set_limits(memory=memory, cpus=cpus)
                return group, parked.start_in
            except OSError:
                parked.give_back()
                cgroups.remove_soon(group)
    # What the cell reads back: CPU time (for its limit, or --stats), the peaks (--stats).
    jobs = needed | ({"cpuacct", "memory", "pids"} if stats else set())
    try:
        return cgroups.Group.create(_next_cell_name(), cpus=cpus, memory=memory,
                                    the_plan=the_plan, jobs=jobs, leaf=True), None
    except cgroups.CgroupError as exc:
        if cpus is not None:
            raise IsolatedRunError(f"--cpus: {exc}") from None
        return None, None


def _next_cell_name() -> str:
    global _cells_made
    _cells_made += 1
    return f"{cgroups.PREFIX}{owner_id()}.{_cells_made}"


_parking: dict[int, parking.ParkingThread] = {}


def _parking_thread(the_plan: cgroups.Plan) -> parking.ParkingThread:
    """This process's parked thread, started at its first cell with a limit."""
    pid = os.getpid()
    if pid not in _parking:
        _parking[pid] = parking.ParkingThread(the_plan, _next_cell_name)
    return _parking[pid]


_cells_made = 0
_plans: dict[int, cgroups.Plan] = {}


def _cgroup_plan() -> cgroups.Plan:
    """Where this process's cell cgroups go, found once per process."""
    pid = os.getpid()
    if pid not in _plans:
        _plans[pid] = cgroups.plan()
    return _plans[pid]


def _cpu_time_check(group: cgroups.Group | None,
                    limits: Limits | None) -> Callable[[], str | None] | None:
    """With a cgroup, the CPU time limit holds for the whole cell (the rlimit, per process)."""
    if group is None or limits is None or limits.cpu_time is None:
        return None
    if group.cpu_seconds() is None:
        return None

    def over() -> str | None:
        used = group.cpu_seconds() or 0.0
        return limits.cpu_time_exceeded() if used > limits.cpu_time else None
    return over


def _usage(wall: float, group: cgroups.Group | None, rusage: Any) -> cgroups.Usage:
    """From the cell's cgroup where it has one; else what the kernel counted for its first
    process and the descendants that process waited for (no count of processes)."""
    cpu = group.cpu_seconds() if group else None
    memory = group.memory_peak() if group else None
    if cpu is None and rusage is not None:
        cpu = rusage.ru_utime + rusage.ru_stime
    if memory is None and rusage is not None:
        memory = rusage.ru_maxrss * 1024
    return cgroups.Usage(wall, cpu, memory, group.pids_peak() if group else None)


@contextlib.contextmanager
def _forked_child(isolation: Isolation, main: Callable[[], Any],
                  pipes: dict[str, tuple[int, int]], exec_mode: bool,
                  group: cgroups.Group | None,
                  start_thread: Callable[[threading.Thread], None] | None,
                  pass_fds: Sequence[int] = ()) -> Iterator[int]:
    """Fork the child that runs ``main`` in ``isolation``; the block gets its pid.

    Without a new user namespace a new pid namespace is made from a thread of ours (see
    :func:`sandbox.forked_in_thread`), and the child is its PID 1 at once. With a
    ``start_thread``, the child is forked from a thread started that way, in the cgroups
    of ``group`` already. Else, with a ``group``, we move the child into it while it
    enters its namespaces: a move waits for an RCU grace period (milliseconds), which the
    two then spend side by side. The child waits for the word before it starts anything.
    """
    joined = os.pipe() if group is not None and start_thread is None else None
    # Root mapped to another id needs a writer outside: we are one, and a helper forked
    # from the child (a copy of the kernel) would cost milliseconds.
    mapping = ((os.pipe(), os.pipe()) if isolation.uses_user_namespace
               and isolation.map_root_to not in (None, os.geteuid()) else None)
    with contextlib.ExitStack() as stack:
        try:
            own_pid_namespace = isolation.pid and not isolation.uses_user_namespace
            if own_pid_namespace or start_thread is not None:
                child = stack.enter_context(sandbox.forked_in_thread(
                    lambda: _child_main(isolation, main, pipes, own_pid_namespace, exec_mode,
                                        joined, mapping, group is not None, pass_fds),
                    new_pid_namespace=own_pid_namespace, start=start_thread))
            else:
                child = sandbox.fork()
                if child == 0:
                    _child_main(isolation, main, pipes, False, exec_mode, joined, mapping,
                                group is not None, pass_fds)
            if mapping is not None:
                (request_r, request_w), (reply_r, reply_w) = mapping
                os.close(request_w)  # so that the read below ends if the child does
                os.close(reply_r)
                mapping = ((request_r, -1), (-1, reply_w))
                sandbox.write_maps_for(child, int(isolation.map_root_to or 0), request_r,
                                       reply_w)
            if group is not None and joined is not None:
                os.close(joined[0])
                joined = (-1, joined[1])
                try:
                    group.join(child)
                except OSError as exc:
                    _signal_tree(child, signal.SIGKILL)
                    os.waitpid(child, 0)
                    raise IsolatedRunError(f"cannot move the cell into its cgroup: "
                                           f"{exc.strerror}") from None
                os.write(joined[1], b"1")
        except BaseException:
            for fds in pipes.values():
                for fd in fds:
                    _close_quietly(fd)
            raise
        finally:
            for pair in ([joined] if joined else []) + (list(mapping) if mapping else []):
                for fd in pair:
                    if fd >= 0:
                        _close_quietly(fd)
        yield child


def check_timeout(timeout: float | None) -> None:
    """None, or a finite number of seconds above zero (inf and nan would never fire)."""
    if timeout is not None and not (isinstance(timeout, (int, float))
                                    and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout {timeout!r}: give a finite number of seconds above 0")


# ---------------------------------------------------------------------------- parent side
class _Channel:
    """Length-prefixed pickles arriving in arbitrary chunks; ``plain``: from a child that
    may be hostile (plain data only, of a bounded size, in the shapes the child sends)."""

    def __init__(self, plain: bool = False) -> None:
        self.buffer = bytearray()
        self.messages: list[tuple] = []
        self.plain = plain
        self.received = 0

    @property
    def has_result(self) -> bool:
        return any(message[0] != "display" for message in self.messages)

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.plain and self.received > jailed_output.OUTPUT_LIMIT:
            raise IsolatedRunError(f"the cell sent back more than "
                                   f"{jailed_output.OUTPUT_LIMIT >> 20} MiB of output: stopped it")
        self.buffer += data
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + size:
                return
            payload = bytes(self.buffer[_HEADER.size:_HEADER.size + size])
            del self.buffer[:_HEADER.size + size]
            self.messages.append(self._decode(payload) if self.plain else pickle.loads(payload))

    @staticmethod
    def _decode(payload: bytes) -> tuple:
        """A hostile child's message: plain data, in one of the shapes :func:`_send` sends."""
        try:
            message = jailed_output.loads(payload)
        except jailed_output.NotPlainData as exc:
            raise IsolatedRunError(f"the cell sent back something other than plain data "
                                   f"({exc}): stopped it") from None
        shapes = {"display": (dict, dict), "value": (object,), "error": (Exception, str)}
        if isinstance(message, tuple) and message and isinstance(message[0], str):
            shape = shapes.get(message[0])
            if shape is not None and len(message) == 1 + len(shape) and all(
                    isinstance(part, kind) for part, kind in zip(message[1:], shape,
                                                                 strict=True)):
                return message
        raise IsolatedRunError("the cell sent back a message that is none of display, value "
                               "or error: stopped it")


def _pump(child: int, fds: dict[int, str], channel: _Channel, on_stream: StreamCallback,
          timeout: float | None, until_exit: bool,
          over_limit: Callable[[], str | None] | None = None) -> None:
    """Forward the child's output until it is done; enforce timeout and interrupt.

    Done: the pipes are closed and the child has exited, or (for a callable, unless
    ``until_exit``) has sent its result: its exit, tearing down a kernel-sized process, need
    not be waited for. An exec'd command's result is its exit status, so the child must be
    left to exit by itself before anything is killed. When the child exits, whatever it left
    running in its process group is killed and the pipes are drained (for at most a second:
    a process that escaped the group may hold them). ``over_limit()``, checked every
    CPU_CHECK_INTERVAL, names a limit the cell went past: it is killed, and that is the error.
    """
    __tracebackhide__ = True
    decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in fds.values()}
    started = time.monotonic()
    child_fd = os.pidfd_open(child)
    open_fds = set(fds)
    interrupted = timed_out = False
    over = None
    kill_at = None if timeout is None else started + timeout
    drain_until = None
    try:
        while open_fds or (drain_until is None and (until_exit or not channel.has_result)):
            watch = list(open_fds) + ([child_fd] if drain_until is None else [])
            check_at = (time.monotonic() + CPU_CHECK_INTERVAL
                        if over_limit and drain_until is None and over is None else None)
            limits = [t for t in (kill_at, drain_until, check_at) if t is not None]
            # At most an hour per wait: select() refuses huge timeouts (OverflowError).
            wait = min(max(0.0, min(limits) - time.monotonic()), 3600.0) if limits else None
            try:
                ready = select.select(watch, [], [], wait)[0]
            except KeyboardInterrupt:
                if not interrupted:
                    interrupted = True
                    _signal_tree(child, signal.SIGINT)
                    kill_at = time.monotonic() + INTERRUPT_GRACE
                continue
            now = time.monotonic()
            if child_fd in ready:
                ready.remove(child_fd)
                _signal_tree(child, signal.SIGKILL)  # stragglers of the cell
                drain_until = now + 1.0
            if drain_until is not None and now >= drain_until:
                break
            if check_at is not None and over_limit is not None and drain_until is None:
                over = over_limit()
                if over is not None:
                    _signal_tree(child, signal.SIGKILL)
            if kill_at is not None and now >= kill_at and drain_until is None:
                timed_out = not interrupted
                _signal_tree(child, signal.SIGKILL)
                kill_at = None
            for fd in ready:
                data = os.read(fd, 65536)
                name = fds[fd]
                if not data:
                    open_fds.discard(fd)
                elif name == "messages":
                    channel.feed(data)
                else:
                    text = decoders[name].decode(data)
                    if text:
                        on_stream(name, text)
    finally:
        os.close(child_fd)
    if interrupted:
        raise tracebacks.mark(KeyboardInterrupt(
            "interrupted: stopped the cell and everything it started"))
    if over is not None:
        raise IsolatedRunError(over)
    if timed_out:
        raise IsolatedRunError(
            f"timed out after {timeout:g} s: killed the cell and everything it started")


def _signal_tree(child: int, signum: int) -> None:
    """Signal the child's process group; with SIGKILL also every descendant by pid.

    With a pid namespace, killing its PID 1 (in the group) takes everything inside along.
    """
    if signum == signal.SIGKILL:
        for _ in range(3):  # a process that forks while the tree is walked adds a child
            supervisor.kill_descendants(child)
    try:
        os.killpg(child, signum)
    except ProcessLookupError:
        pass


def _killed(status: int) -> bool:
    """Whether the child died of SIGKILL (itself, or as a shell reports it)."""
    code = os.waitstatus_to_exitcode(status)
    return code in (-signal.SIGKILL, 128 + signal.SIGKILL)


def _reap(child: int) -> int:
    _pid, status = os.waitpid(child, 0)
    return status


#: Children that sent their result and hung up, but may not have finished exiting:
#: {pid: (pidfd, the event loop watching it)}
_exiting: dict[int, tuple[int, asyncio.AbstractEventLoop]] = {}


def _reap_soon(child: int) -> bool:
    """Reap a child that is exiting without waiting for it here; True if it was reaped.

    The exit of a forked kernel-sized process (tearing down its copy of the address space)
    takes milliseconds that the cell need not wait for. In a kernel, the event loop reaps it
    as soon as it is gone (and then removes the cgroups of cells that ended); every run
    also reaps the ones already gone. Without a running event loop (a script, terminal
    IPython) it is reaped here and now.
    """
    _reap_exited(remove_cgroups=False)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _reap(child)
        return True
    pidfd = os.pidfd_open(child)
    _exiting[child] = (pidfd, loop)
    loop.add_reader(pidfd, _reap_exited)
    return False


def _reap_exited(remove_cgroups: bool = True) -> None:
    if remove_cgroups:
        cgroups.retry_pending()
    for child, (pidfd, loop) in list(_exiting.items()):
        if os.waitpid(child, os.WNOHANG)[0]:
            del _exiting[child]
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.remove_reader(pidfd)
            os.close(pidfd)


def _outcome(channel: _Channel, status: int | None, on_display: DisplayCallback | None,
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
        return supervisor.as_shell_status(code)
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


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------------------- child side
def _child_main(isolation: Isolation, target: Callable[[], Any],
                pipes: dict[str, tuple[int, int]], is_pid1: bool, exec_mode: bool,
                joined: tuple[int, int] | None,
                mapping: tuple[tuple[int, int], tuple[int, int]] | None,
                in_cgroup: bool = False, pass_fds: Sequence[int] = ()) -> None:
    """The child: own process group, pipes as stdio, enter, run the target; with a pid
    namespace it either is PID 1 already or forks it. Without one, it is the subreaper of
    everything the target starts, and ends all of it before it exits. ``in_cgroup``: it is
    (or is being moved) in the cell's cgroups, and takes a cgroup namespace rooted there.
    Never returns; never touches the kernel's zmq sockets or output streams."""
    code = 1
    try:
        os.setpgid(0, 0)
        _syscalls.set_parent_death_signal(signal.SIGKILL)
        for name, (read_end, write_end) in pipes.items():
            os.close(read_end)
            if name != "messages":
                os.dup2(write_end, 1 if name == "stdout" else 2)
                os.close(write_end)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        messages = pipes["messages"][1]
        global _child_messages
        _child_messages = messages
        if joined is not None:
            os.close(joined[1])
        if mapping is not None:  # our parent writes our id maps (see _forked_child)
            (request_r, request_w), (reply_r, reply_w) = mapping
            os.close(request_r)
            os.close(reply_w)
            sandbox.map_by_parent = (request_w, reply_r)
        _close_inherited(keep={0, 1, 2, messages, *(joined[:1] if joined else ()),
                               *(sandbox.map_by_parent if mapping is not None else ()),
                               *pass_fds})
        for fd in pass_fds:
            os.set_inheritable(fd, True)  # for a command, too (--sh)
        two_steps = sandbox.walls_and_rooms(isolation)
        # With a pid namespace still to enter, its PID 1 takes the second step (after /proc).
        rooms_later = two_steps and isolation.pid and not is_pid1
        try:
            if two_steps:
                sandbox.enter_walls(isolation, user_namespace=isolation.uses_user_namespace,
                                    run_dirs_owner=0, map_root_to=isolation.map_root_to,
                                    is_pid1=is_pid1)
                if is_pid1:
                    sandbox.mount_proc()
                if not rooms_later:
                    sandbox.enter_rooms(isolation)
            else:
                if isolation.cgroups_hidden and isolation.uses_user_namespace:
                    _hide_cgroups_from_the_user_namespace()
                sandbox.enter(isolation, is_pid1=is_pid1)
        except _syscalls.NamespaceError as exc:
            _send(messages, ("error", IsolatedRunError(str(exc)), ""))
            return
        if joined is not None and not os.read(joined[0], 1):
            return  # the kernel could not move us into the cell's cgroup, and says so
        if in_cgroup:
            try:
                cgroups.enter_namespace()
            except _syscalls.NamespaceError as exc:
                _send(messages, ("error", IsolatedRunError(str(exc)), ""))
                return
        if not isolation.pid:
            # Daemons (double forks, setsid) leave the group but not us: orphans come here.
            _syscalls.set_child_subreaper()
        if (isolation.pid and not is_pid1) or (exec_mode and not isolation.pid):
            # PID 1 runs in a new pid namespace; or a command runs below us, so that what it
            # leaves behind still comes to us when it exits.
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # it gets it from the group
            body = ((lambda: _enter_rooms_and_call(isolation, target, messages)) if rooms_later
                    else (lambda: _call(target, messages)))
            grandchild = sandbox.fork_child(body, new_proc=isolation.pid)
            _hang_up(messages)  # the pipes are the grandchild's alone now
            code = supervisor.supervise(grandchild, reap_orphans=not isolation.pid)
            code = supervisor.as_shell_status(code)
        else:
            code = _call(target, messages)
        if not isolation.pid:
            supervisor.end_descendants()
    except BaseException:  # noqa: BLE001 - report anything, and never return into the kernel
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        try:
            _flush_quietly()
        finally:
            os._exit(code)


def _close_inherited(keep: set[int]) -> None:
    """Close every descriptor the child inherited from the kernel but ``keep``.

    A forked child holds all of the kernel's: in a stock kernel they include the very TCP
    connections Jupyter opened, which belong to the host's network namespace and can be
    re-aimed (``connect(AF_UNSPEC)``, then ``connect`` anywhere) from any namespace; in
    either kernel, zmq's sockets and whatever files the notebook has open. The cell gets its
    own pipes and nothing else.
    """
    low = 0
    for fd in [*sorted(keep), _MAX_FD]:
        if fd > low:  # closerange(0, 0) would close every descriptor (close_range to ~0)
            os.closerange(low, fd)
        low = fd + 1


_MAX_FD = os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 1 << 20


def _hide_cgroups_from_the_user_namespace() -> None:
    """A cell that enters its namespaces in one step (one that joins a lab's network
    namespace) covers the cgroups in a mount namespace of the kernel's user namespace
    first: the cell's own user namespace, made next, then finds the cover locked in place.
    Where we may not (a rootless stock kernel), its cover is made inside, as ever."""
    try:
        _syscalls.unshare(_syscalls.CLONE_NEWNS)
    except _syscalls.NamespaceError:
        return
    _syscalls.mount("none", "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE)
    filesystem.hide_cgroups()


def _body(target: Callable[[], Any], isolation: Isolation, limits: Limits | None,
          python_body: bool, plain: bool = False) -> Callable[[], Any]:
    """``target``, run with no_new_privs (nothing it executes gains privileges: setuid
    bits, file capabilities), and the capabilities, seccomp filter and limits asked for.
    All of it comes last, in the process that runs the body: setting up its namespaces needs
    what they deny. A Python body may add the memory and file limits to what it inherited
    from the kernel. ``plain``: what the body sends back must be plain data (an untrusted run).
    """
    def body() -> Any:
        global _child_sends_plain
        _child_sends_plain = plain
        if limits and limits.memory:
            _first_for_the_oom_killer()
        _syscalls.set_no_new_privs()
        if isolation.drop_caps:
            _syscalls.drop_all_capabilities()
        if isolation.seccomp:
            from nskernel.locks.seccomp import deny_dangerous_syscalls

            deny_dangerous_syscalls()
        if limits and python_body:
            limits.apply(inherited=Limits.address_space(), inherited_fds=Limits.fds_in_use())
        elif limits:
            limits.apply()
        return target()
    return body


def _first_for_the_oom_killer() -> None:
    """The body and all it starts go first when their cgroup runs out of memory (raising
    one's own oom_score_adj needs no privilege): not the process that waits for the body
    (a fork of the kernel, whose shared pages count as its own), nor the kernel."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as handle:
        handle.write("1000")


def _enter_rooms_and_call(isolation: Isolation, target: Callable[[], Any], messages: int) -> int:
    """PID 1 of a cell's two-step namespaces: the second step, then the target."""
    try:
        sandbox.enter_rooms(isolation)
    except _syscalls.NamespaceError as exc:
        _send(messages, ("error", IsolatedRunError(str(exc)), ""))
        return 1
    return _call(target, messages)


def _call(target: Callable[[], Any], messages: int) -> int:
    """Run the target and send its value or error; the process exits with the result
    (RESULT_PIPE_GONE when the cell closed the pipe to send it on)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    body = os.getpid()
    try:
        try:
            value = target()
        except BaseException as exc:  # noqa: BLE001 - the notebook gets it, with our traceback
            if os.getpid() != body:
                _end_a_copy(1)
            sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))  # enough to report it
            text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc)))
            _send(messages, ("error", _picklable(exc), text))
            return 1
        if os.getpid() != body:
            _end_a_copy(0)
        try:
            _send(messages, ("value", value))
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - unpicklable value
            error = IsolatedRunError(
                f"the result, of type {type(value).__name__}, cannot be sent back: {exc}")
            _send(messages, ("error", error, ""))
            return 1
        return 0
    except OSError as exc:
        if exc.errno in (errno.EBADF, errno.EPIPE):
            return RESULT_PIPE_GONE
        raise
    finally:
        _hang_up(messages)


def _end_a_copy(code: int) -> None:
    """A process the body forked came back out of it (returned, or raised: a fork bomb's
    copies at the limit): only the body itself has a result to send. It ends here."""
    _flush_quietly()
    os._exit(code)


def _user_frames(exc: BaseException) -> Any:
    """The traceback without the leading frames of nskernel's own machinery."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return tb or exc.__traceback__


def _hang_up(messages: int) -> None:
    """Close our ends of the pipes now, so the parent sees the end before we finish exiting.
    Whatever the cell did to its streams and fds, this does not raise."""
    _flush_quietly()
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    with contextlib.suppress(OSError):
        os.close(messages)


def _flush_quietly() -> None:
    """Flush sys.stdout and sys.stderr, which the cell may have closed, replaced or broken."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


def _exec(argv: list[str]) -> int:
    _flush_quietly()
    os.execvp(argv[0], argv)
    return 127  # not reached: execvp raises on failure


def inside_isolated_cell() -> bool:
    """True in a child that :func:`run` forked (where the kernel's threads do not exist)."""
    return _child_messages is not None


def publish_display(data: dict, metadata: dict | None = None) -> None:
    """In an isolated child: send rich output (a mimebundle) to the notebook."""
    if _child_messages is None:
        raise RuntimeError("publish_display is only for code running under runner.run")
    _send(_child_messages, ("display", data, metadata or {}))


def _send(fd: int, message: tuple) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)  # 5: bytearray is plain
    if _child_sends_plain:
        jailed_output.loads(payload)  # the parent would refuse it: say why, here
    data = _HEADER.pack(len(payload)) + payload
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling (as plain data, in an untrusted run),
    else a RuntimeError with its text."""
    try:
        (jailed_output.loads if _child_sends_plain else pickle.loads)(pickle.dumps(exc))
        exc.__traceback__ = None
        exc.__context__ = exc.__cause__ = None
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")
