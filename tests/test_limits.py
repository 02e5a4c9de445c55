"""Per-cell limits (rlimits): what the body sees past each, and the kernel lives on.

In both kernels; as root and (in CI's second run) as an ordinary user. Every hostile body
is bounded before it starts: small sizes, few processes, a timeout.
"""

from __future__ import annotations

import pytest
from kernels import execute
from test_magics import cell, one_line_error


def still_answers(kernel) -> None:
    assert execute(kernel, "1 + 1", timeout=5).value == 2


@pytest.mark.parametrize("flags", ["--pid", "--uts"])
def test_past_the_memory_limit_allocation_fails_and_below_it_works(kernel, flags):
    done = cell(kernel, f"%%isolate {flags} --memory 64M --timeout 30\n"
                        "small = bytearray(32 << 20)\n"
                        "try:\n    big = bytearray(256 << 20)\n    result = 'allocated'\n"
                        "except MemoryError:\n    result = 'MemoryError'\n(len(small), result)")
    assert done.value == (32 << 20, "MemoryError")
    still_answers(kernel)


def test_a_command_gets_the_memory_limit_in_all(kernel):
    done = execute(kernel, "%%isolate --pid --memory 64M --sh --timeout 30\n"
                           "python3 -c 'bytearray(128 << 20)' 2>&1 | tail -1")
    assert done.stdout.strip() == "MemoryError", done


@pytest.mark.parametrize("flags", ["--pid", "--uts"])
def test_a_fork_bomb_stops_at_the_pids_limit_with_eagain(kernel, flags):
    done = cell(kernel, f"%%isolate {flags} --pids 8 --timeout 30\n"
                        "import errno, os, time\nchildren = []\n"
                        "try:\n    for _ in range(100):\n        pid = os.fork()\n"
                        "        if pid == 0:\n            time.sleep(10)\n"
                        "            os._exit(0)\n"
                        "        children.append(pid)\n"
                        "except OSError as exc:\n    result = errno.errorcode[exc.errno]\n"
                        "(result, len(children) < 8)")
    assert done.value == ("EAGAIN", True)
    still_answers(kernel)


def test_past_the_cpu_time_the_cell_ends_with_one_line(kernel):
    done = execute(kernel, "%%isolate --uts --cpu-time 1 --timeout 30\nwhile True:\n    pass",
                   timeout=60)
    assert "CPU time limit of 1 s exceeded" in one_line_error(done), done
    still_answers(kernel)


def test_file_size_and_open_files_limits(kernel):
    done = cell(kernel, "%%isolate --readonly --mount --fsize 1M --nofile 32\n"
                        "import errno\n"
                        "try:\n    open('/tmp/big', 'wb').write(b'x' * (2 << 20))\n"
                        "except OSError as exc:\n    size = errno.errorcode[exc.errno]\n"
                        "files = []\n"
                        "try:\n    while True:\n        files.append(open('/dev/null'))\n"
                        "except OSError as exc:\n    count = errno.errorcode[exc.errno]\n"
                        "(size, count, len(files) >= 32)")
    assert done.value == ("EFBIG", "EMFILE", True)  # 32 beyond the kernel's own, then EMFILE


@pytest.mark.parametrize(("line", "message"), [
    ("--memory lots", "--memory 'lots': give a size above 0, as 64M or 2G"),
    ("--fsize 0", "--fsize '0': give a size above 0"),
    ("--pids 0", "--pids 0: give a whole number above 0"),
    ("--cpu-time -3", "--cpu-time -3: give a whole number above 0"),
    ("--nofile many", "argument --nofile: invalid int value: 'many'"),
])
def test_bad_limits_are_one_line(kernel, line, message):
    done = execute(kernel, f"%%isolate {line}\n1")
    assert message in one_line_error(done), done


def test_the_api_takes_the_same_limits(kernel):
    done = cell(kernel, "import nskernel\n"
                        "def grab():\n    try:\n        bytearray(256 << 20)\n"
                        "    except MemoryError:\n        return 'MemoryError'\n"
                        "nskernel.isolate(grab, pid=True, memory='64M')")
    assert done.value == "MemoryError"
