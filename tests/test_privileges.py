"""Privileges of isolated cells: no_new_privs always, and the --seccomp filter.

In both kernels; as root and (in CI's second run) as an ordinary user.
"""

from __future__ import annotations

import pytest
from kernels import execute
from test_magics import cell

STATUS = ("import ctypes, errno\n"
          "libc = ctypes.CDLL(None, use_errno=True)\n"
          "def refused(call, *args):\n"
          "    return call(*args) == -1 and errno.errorcode[ctypes.get_errno()]\n"
          "status = dict(line.split(':\\t') for line in open('/proc/self/status')"
          ".read().splitlines() if ':\\t' in line)\n")


@pytest.mark.parametrize("flags", ["--uts", "--pid --net", "--user --pid"])
def test_every_cell_runs_with_no_new_privs(kernel, flags):
    done = cell(kernel, f"%%isolate {flags}\n{STATUS}(status['NoNewPrivs'], status['Seccomp'])")
    assert done.value == ("1", "0")


@pytest.mark.parametrize("flags", ["--seccomp --uts", "--seccomp --pid --net",
                                   "--seccomp --user --pid --readonly"])
def test_the_seccomp_filter_refuses_the_calls_that_reach_past_the_sandbox(kernel, flags):
    """unshare(0) is a harmless no-op and setns(-1) an EBADF where they are allowed: under
    the filter both are EPERM. The cell goes on after each refusal."""
    done = cell(kernel, f"%%isolate {flags}\n{STATUS}"
                        "(status['Seccomp'], refused(libc.unshare, 0), refused(libc.setns, -1, 0),"
                        " refused(libc.delete_module, b'nskernel_none', 0), 'still running')")
    assert done.value == ("2", "EPERM", "EPERM", "EPERM", "still running")


def test_without_the_filter_the_same_calls_are_not_refused(kernel):
    done = cell(kernel, f"%%isolate --uts\n{STATUS}"
                        "(refused(libc.unshare, 0), refused(libc.setns, -1, 0))")
    assert done.value == (False, "EBADF")


def test_a_command_under_the_filter_is_refused_and_the_cell_goes_on(kernel):
    done = execute(kernel, "%%isolate --seccomp --sh\nunshare --net true 2>/dev/null || "
                           "echo refused\necho still here")
    assert done.stdout.split() == ["refused", "still", "here"], done
