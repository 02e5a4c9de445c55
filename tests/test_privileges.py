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


@pytest.mark.parametrize(("flags", "caps"), [("--uts --caps none", "0000000000000000"),
                                             ("--uts --seccomp", "0000000000000000"),
                                             ("--uts --seccomp --caps all", "keeps")])
def test_caps_none_leaves_the_body_no_capability(kernel, flags, caps):
    """Default with --seccomp; 'all' keeps what the cell's user has (root inside: all)."""
    done = cell(kernel, f"%%isolate {flags}\n{STATUS}"
                        "(status['CapEff'], status['CapBnd'], status['CapAmb'])")
    effective, bounding, ambient = done.value
    if caps == "keeps":
        assert effective != "0000000000000000" and bounding != "0000000000000000"
    else:
        assert (effective, bounding, ambient) == (caps, caps, caps)


def test_jail_is_every_lock_at_once_for_untrusted_code(kernel):
    done = cell(kernel, f"%%isolate --jail --timeout 30\n{STATUS}"
                        "import os, time\n"
                        "try:\n    open('/etc/nskernel-jail', 'w')\n    wrote = True\n"
                        "except OSError:\n    wrote = False\n"
                        "children = 0\n"
                        "try:\n    for _ in range(1000):\n        if os.fork() == 0:\n"
                        "            time.sleep(10)\n            os._exit(0)\n"
                        "        children += 1\n"
                        "except OSError as exc:\n    bomb = exc.strerror\n"
                        "(os.getpid(), sorted(os.listdir('/sys/class/net')), wrote,"
                        " status['NoNewPrivs'], status['Seccomp'], status['CapEff'],"
                        " refused(libc.unshare, 0), bomb, children < 64)")
    assert done.value == (1, ["lo"], False, "1", "2", "0000000000000000", "EPERM",
                          "Resource temporarily unavailable", True)
    assert execute(kernel, "1 + 1", timeout=5).value == 2
