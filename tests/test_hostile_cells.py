"""Cells that try to break the kernel through %%isolate and the lab magics.

Each runs in both kernels; after each, the kernel must answer `1 + 1` within 5 s, and the
per-test leak check (conftest) finds nothing new on the host.
"""

from __future__ import annotations

import pytest
from kernels import execute
from test_magics import one_line_error


def still_answers(kernel) -> None:
    assert execute(kernel, "1 + 1", timeout=5).value == 2


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
