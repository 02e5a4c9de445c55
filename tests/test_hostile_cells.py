"""Cells that try to break the kernel through %%isolate and the lab magics.

Each runs in both kernels; after each, the kernel must answer `1 + 1` within 5 s, and the
per-test leak check (conftest) finds nothing new on the host.
"""

from __future__ import annotations

import os
import secrets
import shlex

import pytest
from conftest import wait_for
from kernels import execute
from test_magics import one_line_error, still_answers

#: (cell, what the notebook must show): a value (checked with ==), or text that the one-line
#: error (a UsageError) or the error's name and message contain.
HOSTILE_CELLS = [
    # the child's own streams and fds, broken every way
    ("%%isolate --net\nimport sys\nsys.stdout.close()\n'closed'", "'closed'"),
    ("%%isolate --net\nimport sys\nsys.stdout.close(); sys.stderr.close()\nprint('x')",
     "ValueError: I/O operation on closed file"),
    ("%%isolate --net\nimport os\nos.close(1); os.close(2)\n'fds'", "'fds'"),
    ("%%isolate --net\nimport sys\nsys.stdout = None; sys.stderr = 42\n'replaced'",
     "'replaced'"),
    ("%%isolate --net\nimport os\nos.closerange(3, 1000)\n'gone'",
     "the cell closed the pipe its result comes back through"),
    ("%%isolate --pid\nimport os\nos.closerange(0, 1000)\n'gone'",
     "the cell closed the pipe its result comes back through"),
    # signals, sessions and exits
    ("%%isolate --net\nimport os, signal\nos.kill(0, signal.SIGKILL)",
     "was killed by signal SIGKILL"),
    ("%%isolate --net\nimport os, signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
     "if os.fork() == 0:\n    os.setsid(); os._exit(0)\nos.wait()\n'own session'",
     "'own session'"),
    ("%%isolate --net\nimport sys\nsys.exit(3)", "SystemExit: 3"),
    ("%%isolate --net\nimport threading\n"
     "t = threading.Thread(target=lambda: exec('raise SystemExit(5)'))\nt.start(); t.join()\n"
     "'thread exited'", "'thread exited'"),
    ("%%isolate --net\nimport os\nos._exit(0)",
     "exited with status 0 before returning a result"),
    # the interpreter itself
    ("%%isolate --net\ndef f():\n    return f()\nf()", "RecursionError"),
    ("%%isolate --net\nimport sys\nsys.setrecursionlimit(50)\n"
     "def f(n):\n    return n and f(n - 1)\nf(100)", "RecursionError"),
    # bad values that used to hang or busy-loop the kernel, or to take a minute
    ("%%isolate --timeout inf\n1", "--timeout: give a finite number of seconds above 0"),
    ("%%isolate --timeout nan\n1", "--timeout: give a finite number of seconds above 0"),
    ("%%isolate --timeout -1\n1", "--timeout: give a finite number of seconds above 0"),
    ("%%isolate --timeout 1e300 --net\n'patient'", "'patient'"),
    (f"%%uts {'a' * 5000}\n1", "the line is 5000 characters; at most 4096"),
    (f"%%isolate --hostname {'b' * 1000}\n1", "bad hostname 'bbbb"),
    # refused before IPython's own expansion of the line, which takes minutes at this size
    (f"%%uts {'a' * 300_000}\n1", "the line is 300000 characters; at most 4096"),
    (f"%veth {'b' * 300_000}", "the line is 300000 characters; at most 4096"),
    ("%%isolate --hostname {'c' * 5000}\n1", "the line is 5011 characters; at most 4096"),
    ("%ip ../../proc/1/ns/net", "bad namespace name '../../proc/1/ns/net'"),
    ("%veth kernel /run/netns/../../proc/1/ns/net", "bad namespace name"),
]


@pytest.mark.parametrize(("code", "shown"), HOSTILE_CELLS,
                         ids=[f"cell{i}" for i in range(len(HOSTILE_CELLS))])
def test_a_hostile_cell_leaves_the_kernel_answering(kernel, code, shown):
    done = execute(kernel, code, timeout=60)
    if done.status == "ok":
        assert done.result == shown, done
    elif done.error is None:  # a UsageError: one line
        assert shown in one_line_error(done), done
    else:
        assert shown in f"{done.error[0]}: {done.error[1]}", done
    still_answers(kernel)


def _processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


DAEMON = ("import os, sys, time\n"
          "if os.fork() == 0:\n"
          "    os.setsid()\n"
          "    if os.fork() == 0:\n"
          "        os.execvp('sleep', ['sleep', '{seconds}'])\n"
          "    os._exit(0)\n"
          "os.wait()\n"
          "{ending}")


@pytest.mark.parametrize("flags", ["--uts", "--uts --pid", "--net --sh"])
@pytest.mark.parametrize("ending", ["'done'", "time.sleep(30)", "sys.exit(1)"])
def test_a_daemon_does_not_outlive_its_cell(kernel, flags, ending):
    """Double-forked, setsid'd, exec'd: whether the cell returns, times out or exits, the
    daemon is gone afterwards, and the message says what happened."""
    seconds = f"{1000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"  # unique
    if "--sh" in flags:
        body = f"setsid sh -c 'sleep {seconds} &' &\nwait\n" + (
            "sleep 30" if "sleep" in ending else "echo done")
    else:
        body = DAEMON.format(seconds=seconds, ending=ending)
    done = execute(kernel, f"%%isolate {flags} --timeout 2\n{body}", timeout=60)
    if "sleep" in ending:
        assert "timed out after 2 s: killed the cell and everything it started" in (
            one_line_error(done)), done
    assert wait_for(lambda: not _processes_with(seconds), timeout=5), (
        f"the daemon survived: {_processes_with(seconds)}")
    still_answers(kernel)


#: PID 1 of the cell's pid namespace starts a process in a pid namespace below, in a process
#: group of its own, and tries to join that group: had it joined, its end would wait forever
#: for the group's pid to be freed (an unkillable process left behind; the kernel, waiting
#: for it to exit, hung), so PID 1 is a session leader, which may join no other group.
NESTED = ("import os, subprocess, sys, time\n"
          "below = subprocess.Popen(['unshare', '--pid', '--fork', 'sleep', '{seconds}'],\n"
          "                         preexec_fn=os.setpgrp)\n"
          "try:\n"
          "    os.setpgid(0, below.pid)\n"
          "    print('joined', flush=True)\n"
          "except PermissionError:\n"
          "    print('refused', flush=True)\n"
          "{ending}")


def _stuck_in_their_exit() -> set[int]:
    """Processes waiting in their exit for a pid namespace to empty."""
    stuck = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/wchan") as handle:
                if handle.read() == "zap_pid_ns_processes":
                    stuck.add(int(entry))
        except (OSError, ValueError):
            pass
    return stuck


@pytest.mark.parametrize("flags", ["--pid --net", "--pid --user", "--pid --net --sh"])
@pytest.mark.parametrize("ending", ["'done'", "time.sleep(30)", "sys.exit(1)"])
def test_pid_1_cannot_join_a_group_below_it_and_nothing_outlives_it(kernel, flags, ending):
    """As the cell's PID 1 (the kernel's child, or with a user namespace its grandchild, or
    a shell that execs it), whether it returns, times out or exits: the join is refused,
    nothing of the cell survives, and nothing is left waiting in its exit."""
    seconds = f"{1000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"  # unique
    code = NESTED.format(seconds=seconds, ending=ending)
    body = (f"exec python3 -c {shlex.quote(code)}" if "--sh" in flags else code)
    before = _stuck_in_their_exit()
    try:
        done = execute(kernel, f"%%isolate {flags} --timeout 2\n{body}", timeout=60)
        assert "refused" in done.stdout and "joined" not in done.stdout, done
        assert wait_for(lambda: not _processes_with(seconds), timeout=5), (
            f"survived: {_processes_with(seconds)}")
        assert wait_for(lambda: not _stuck_in_their_exit() - before, timeout=5), (
            f"left waiting in their exit: {_stuck_in_their_exit() - before}")
    finally:
        for pid in _processes_with(seconds):
            os.kill(pid, 9)
    still_answers(kernel)


@pytest.mark.parametrize("ending", ["os._exit(0)",
                                    "import signal\nos.kill(os.getpid(), signal.SIGKILL)"])
def test_a_cell_that_ends_its_own_keeper_says_what_may_be_left(kernel, ending):
    """Outside a pid namespace a body can end the process that would stop its daemons; then
    the message says so (and the pid namespace is the way to contain everything)."""
    seconds = f"{1000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    body = DAEMON.format(seconds=seconds, ending=ending)
    try:
        done = execute(kernel, f"%%isolate --uts\n{body}", timeout=60)
        assert "anything it started may still run" in one_line_error(done), done
    finally:
        for pid in _processes_with(seconds):
            os.kill(pid, 9)
    still_answers(kernel)


@pytest.mark.parametrize("flags", ["--pid", "--uts"])
def test_copies_the_body_forks_come_back_with_no_result_of_their_own(kernel, flags):
    """A forked copy of the body that returns (or raises: a fork bomb's copies at the
    limit) runs on through the same code as the body: only the body's result counts."""
    done = execute(kernel, f"%%isolate {flags}\nimport os, time\n"
                           "copies = [os.fork() for _ in range(3)]  # 8 processes\n"
                           "if 0 in copies:  # all at once, each more than a pipe writes whole\n"
                           "    raise RuntimeError('a copy ' * 5000)\n"
                           "time.sleep(0.5)\n'the body'")
    assert done.value == "the body" and done.error is None, done
    still_answers(kernel)
