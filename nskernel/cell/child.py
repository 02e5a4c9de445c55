"""The child of one cell, its whole life top to bottom (:func:`child_main`): its pipes as
stdio and nothing else of the kernel's; the walls (:mod:`nskernel.cell.walls`), the id maps
(:mod:`nskernel.cell.maps`), the rooms; the cgroup namespace; PID 1 or the subreaper; the
locks (:func:`with_locks`: no_new_privs, capabilities, seccomp, rlimits); the call; the report
over the wire (:mod:`nskernel.cell.wire`). It calls down into those helpers, never back up,
and never returns: every path ends in ``os._exit``."""

from __future__ import annotations

import _signal  # see _call
import contextlib
import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from nskernel import _syscalls, children
from nskernel.cell import forks, maps, sandbox, spare, wire
from nskernel.cell.errors import IsolatedRunError
from nskernel.cell.wire import picklable, send
from nskernel.isolation import Isolation
from nskernel.limits import Limits
from nskernel.locks import cgroups, filesystem

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


#: The child's exit status when it cannot send its result: the cell closed the pipe.
RESULT_PIPE_GONE = 125


# ---------------------------------------------------------------------------- child side
def child_main(isolation: Isolation, target: Callable[[], Any],
                pipes: dict[str, tuple[int, int]], is_pid1: bool, exec_mode: bool,
                joined: tuple[int, int] | None,
                mapping: tuple[tuple[int, int], tuple[int, int]] | None,
                in_cgroup: bool = False, pass_fds: Sequence[int] = (),
                ahead: spare.Spare | None = None) -> None:
    """The child: own process group, pipes as stdio, enter, run the target; with a pid
    namespace it either is PID 1 already or forks it. Without one, it is the subreaper of
    everything the target starts, and ends all of it before it exits. ``in_cgroup``: it is
    (or is being moved) in the cell's cgroups, and takes a cgroup namespace rooted there.
    ``ahead``: the spare thread that forked it, in its namespaces already (see
    :mod:`nskernel.cell.spare`): it is PID 1 and takes only the last steps. Never returns;
    never touches the kernel's zmq sockets or output streams."""
    code = 1
    try:
        _own_group(as_pid1=is_pid1)
        _syscalls.set_parent_death_signal(signal.SIGKILL)
        for name, (read_end, write_end) in pipes.items():
            os.close(read_end)
            if name != "messages":
                os.dup2(write_end, 1 if name == "stdout" else 2)
                os.close(write_end)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        made = ahead.streams if ahead is not None else {}
        sys.stdin, sys.stdout, sys.stderr = (made.get(fd) or forks.standard_stream(fd)
                                             for fd in (0, 1, 2))
        messages = pipes["messages"][1]
        wire.child_messages = messages
        if joined is not None:
            os.close(joined[1])
        if mapping is not None:  # our parent writes our id maps (see _forked_child)
            (request_r, request_w), (reply_r, reply_w) = mapping
            os.close(request_r)
            os.close(reply_w)
            maps.map_by_parent = (request_w, reply_r)
        _close_inherited(keep={0, 1, 2, messages, *(joined[:1] if joined else ()),
                               *(maps.map_by_parent if mapping is not None else ()),
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
                    forks.mount_proc()
                if not rooms_later:
                    sandbox.enter_rooms(isolation, own_keyring=False)  # the walls' is fresh
            elif ahead is not None:
                spare.finish_ahead(isolation, ahead)
            else:
                if isolation.cgroups_hidden and isolation.uses_user_namespace:
                    _hide_cgroups_from_the_user_namespace()
                sandbox.enter(isolation, is_pid1=is_pid1)
        except _syscalls.NamespaceError as exc:
            send(messages, ("error", IsolatedRunError(str(exc)), ""))
            return
        if joined is not None and not os.read(joined[0], 1):
            return  # the kernel could not move us into the cell's cgroup, and says so
        if in_cgroup:
            try:
                cgroups.enter_namespace()
            except _syscalls.NamespaceError as exc:
                send(messages, ("error", IsolatedRunError(str(exc)), ""))
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
            if isolation.pid:  # PID 1: a session and group of its own; we pass SIGINT on
                body = _in_a_session_of_its_own(body)
            grandchild = forks.fork_child(body, new_proc=isolation.pid)
            if isolation.pid:
                signal.signal(signal.SIGINT, lambda _signum, _frame: _interrupt(grandchild))
            _hang_up(messages)  # the pipes are the grandchild's alone now
            code = children.supervise(grandchild, reap_orphans=not isolation.pid)
            code = children.as_shell_status(code)
        else:
            code = _call(target, messages)
        if not isolation.pid:
            children.end_descendants()
    except BaseException:  # noqa: BLE001 - report anything, and never return into the kernel
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        try:
            _flush_quietly()
        finally:
            os._exit(code)


def _own_group(*, as_pid1: bool) -> None:
    """A process group of our own, which the kernel signals. PID 1 of the cell's pid
    namespace takes a session of its own, too: a session leader may join no other group.
    Had it joined the group of a process below it, its exit would wait forever (Linux waits
    until every pid of the namespace is freed, its group's among them): a cell could leave
    an unkillable process behind, and hang the kernel waiting for it."""
    if as_pid1:
        os.setsid()
    else:
        os.setpgid(0, 0)


def _in_a_session_of_its_own(body: Callable[[], int]) -> Callable[[], int]:
    def pid1() -> int:
        _own_group(as_pid1=True)
        return body()
    return pid1


def _interrupt(pid1: int) -> None:
    """Pass an interrupt on to PID 1's group (in a session of its own, out of ours)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid1, signal.SIGINT)


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


def with_locks(target: Callable[[], Any], isolation: Isolation, limits: Limits | None,
          python_body: bool, plain: bool = False) -> Callable[[], Any]:
    """``target``, run with no_new_privs (nothing it executes gains privileges: setuid
    bits, file capabilities), and the capabilities, seccomp filter and limits asked for.
    All of it comes last, in the process that runs the body: setting up its namespaces needs
    what they deny. A Python body may add the memory and file limits to what it inherited
    from the kernel. ``plain``: what the body sends back must be plain data (an untrusted run).
    """
    def body() -> Any:
        wire.child_sends_plain = plain
        if limits and limits.memory:
            _first_for_the_oom_killer()
        _syscalls.set_no_new_privs()
        if isolation.drop_caps:
            _syscalls.drop_all_capabilities()
        if isolation.seccomp:
            from nskernel.locks.seccomp import deny_dangerous_syscalls

            deny_dangerous_syscalls()
        if limits and limits.memory:
            from nskernel.locks.seccomp import deny_unaccounted_memory

            deny_unaccounted_memory()
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
        sandbox.enter_rooms(isolation, own_keyring=False)  # the walls' is fresh
    except _syscalls.NamespaceError as exc:
        send(messages, ("error", IsolatedRunError(str(exc)), ""))
        return 1
    return _call(target, messages)


def _call(target: Callable[[], Any], messages: int) -> int:
    """Run the target and send its value or error; the process exits with the result
    (RESULT_PIPE_GONE when the cell closed the pipe to send it on). The streams are hung
    up first: the kernel, woken by the result, finds their end there already."""
    # _signal's, not signal's: its enum conversions write to pages the child shares with
    # the kernel, and each first write copies one (40 of them: 0.1 ms of every cell).
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    body = os.getpid()
    streams_open = True
    try:
        try:
            value = target()
        except BaseException as exc:  # noqa: BLE001 - the notebook gets it, with our traceback
            if os.getpid() != body:
                _end_a_copy(1)
            sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))  # enough to report it
            text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc)))
            streams_open = _hang_up_streams()
            send(messages, ("error", picklable(exc), text))
            return 1
        if os.getpid() != body:
            _end_a_copy(0)
        streams_open = _hang_up_streams()
        try:
            send(messages, ("value", value))
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - unpicklable value
            error = IsolatedRunError(
                f"the result, of type {type(value).__name__}, cannot be sent back: {exc}")
            send(messages, ("error", error, ""))
            return 1
        return 0
    except OSError as exc:
        if exc.errno in (errno.EBADF, errno.EPIPE):
            return RESULT_PIPE_GONE
        raise
    finally:
        _hang_up(messages, streams=streams_open)


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


def _hang_up(messages: int, streams: bool = True) -> None:
    """Close our ends of the pipes now (``streams``: stdout's and stderr's too), so the
    parent sees the end before we finish exiting. Whatever the cell did to its streams and
    fds, this does not raise."""
    if streams:
        _hang_up_streams()
    with contextlib.suppress(OSError):
        os.close(messages)


def _hang_up_streams() -> bool:
    """Flush stdout and stderr, and point fds 1 and 2 at /dev/null: their pipes end here.
    False (they are not open any more), for ``_hang_up``'s ``streams``."""
    _flush_quietly()
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    return False


def _flush_quietly() -> None:
    """Flush sys.stdout and sys.stderr, which the cell may have closed, replaced or broken."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


def exec_argv(argv: list[str]) -> int:
    _flush_quietly()
    os.execvp(argv[0], argv)
    return 127  # not reached: execvp raises on failure
