"""Numbers out of range and arguments given twice, typed into real kernels: one UsageError
line each (they were raw tracebacks: OverflowError from an rlimit or select, KeyError from
the lab), and the kernel answers after. Isolated Python and stock python3 with the
extension; Isolated Python as another user too."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import IS_ROOT, RUN_PREFIX, as_user
from test_magics import cell, one_line_error, still_answers

PROBE = str(Path(__file__).with_name("kernel_probe.py"))
NS = f"{RUN_PREFIX}-range"

#: (cell, the one line it must give)
CASES = [
    ("%%isolate --memory 999999999999999G\n1",
     "UsageError: %%isolate: --memory '999999999999999G': give a size up to 1048576G, "
     "as 64M or 2G"),
    ("%%isolate --fsize 999999999999999G\n1",
     "UsageError: %%isolate: --fsize '999999999999999G': give a size up to 1048576G, "
     "as 64M or 2G"),
    ("%%isolate --cpu-time 99999999999999999999\n1",
     "UsageError: %%isolate: --cpu-time 99999999999999999999: give a whole number up to "
     "1073741824"),
    ("%%isolate --pids 99999999999999999999\n1",
     "UsageError: %%isolate: --pids 99999999999999999999: give a whole number up to "
     "1073741824"),
    ("%%isolate --readonly --tmpfs-size 0\n1",
     "UsageError: %%isolate: bad size '0': give a size above 0, up to 1048576g, as 64m"),
    ("%%isolate --readonly --bind /etc --bind /etc:rw\n1",
     "UsageError: %%isolate: bind '/etc' is given twice: give it once, with :rw if it is "
     "to be writable"),
    (f"%ping {NS} 10.0.0.1 -W 1e308", "UsageError: %ping: timeout 1e+308: give seconds above "
                                      "0, up to 3600"),
    (f"%ping {NS} 10.0.0.1 -W inf", "UsageError: %ping: timeout inf: give seconds above 0, "
                                    "up to 3600"),
    (f"%ping {NS} 10.0.0.1 -W nan", "UsageError: %ping: timeout nan: give seconds above 0, "
                                    "up to 3600"),
    ("%netns del X X", "UsageError: %netns: a namespace name is given twice"),
]


@pytest.mark.parametrize(("code", "line"), CASES)
def test_out_of_range_is_one_line_and_the_kernel_lives(kernel, code, line):
    assert one_line_error(cell(kernel, code)) == line
    still_answers(kernel)


def test_a_namespace_deleted_twice_in_one_line_stays_until_deleted_once(kernel):
    if kernel.kernel_name == "python3" and not IS_ROOT:
        pytest.skip("the stock kernel makes no namespaces as a user; Isolated Python does")
    assert cell(kernel, f"%netns add {NS}").status == "ok"
    try:
        assert one_line_error(cell(kernel, f"%netns del {NS} {NS}")) == (
            "UsageError: %netns: a namespace name is given twice")
        assert cell(kernel, f"%ping {NS} 127.0.0.1 -c 1 -W 0.5").result == (
            "1/1 replies from 127.0.0.1")  # still there, lo up
    finally:
        assert cell(kernel, f"%netns del {NS}").status == "ok"


def test_out_of_range_is_one_line_for_another_user_too(unprivileged_user):
    done = as_user(unprivileged_user, [sys.executable, PROBE, "isolated-python",
                                       *(code for code, _line in CASES), "1 + 1"])
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])["results"]
    assert [r["stderr"].strip() for r in results[:-1]] == [line for _code, line in CASES]
    assert all(r["status"] == "error" and r["error"] is None for r in results[:-1])
    assert results[-1]["result"] == "2"
