"""Numbers too large, infinite or not a number, and arguments given twice: each is one line
that says what to give, before anything reaches an rlimit, a tmpfs, select or netlink
(where they were an OverflowError, a tmpfs without a limit, or a KeyError)."""

from __future__ import annotations

import math

import pytest

from nskernel import limits, probe
from nskernel.isolation import Isolation, IsolationError
from nskernel.limits import MAX_COUNT, MAX_SIZE, LimitError, Limits
from nskernel.magics import magicargs
from nskernel.magics import namespaces as magics
from nskernel.netlab.net import Lab
from nskernel.netlab.netns import LabError


def isolate_limits(line: str) -> Limits:
    """%%isolate's line, parsed and turned into limits as the magic does."""
    return limits.from_args(magicargs.parse_line(magics.ISOLATE, line))


@pytest.mark.parametrize(("line", "message"), [
    ("--memory 999999999999999G", "--memory '999999999999999G': give a size up to 1048576G"),
    ("--fsize 999999999999999G", "--fsize '999999999999999G': give a size up to 1048576G"),
    ("--memory 1048577G", "--memory '1048577G': give a size up to 1048576G"),
    ("--cpu-time 99999999999999999999",
     "--cpu-time 99999999999999999999: give a whole number up to 1073741824"),
    ("--pids 99999999999999999999", "--pids 99999999999999999999: give a whole number up to"),
    ("--nofile 1073741825", "--nofile 1073741825: give a whole number up to 1073741824"),
    ("--cpus nan", "--cpus nan: give a share of CPUs from 0.01 up"),
    ("--cpus inf", "--cpus inf: give a share of CPUs from 0.01 up"),
])
def test_a_limit_out_of_range_is_one_line(line, message):
    with pytest.raises(LimitError) as raised:
        isolate_limits(line)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_the_largest_limits_are_taken_and_fit_an_rlimit():
    largest = isolate_limits(f"--memory {MAX_SIZE >> 30}G --fsize {MAX_SIZE >> 30}G "
                             f"--cpu-time {MAX_COUNT} --pids {MAX_COUNT} --nofile {MAX_COUNT}")
    assert largest == Limits(memory=MAX_SIZE, fsize=MAX_SIZE, cpu_time=MAX_COUNT,
                             pids=MAX_COUNT, nofile=MAX_COUNT)
    assert MAX_SIZE * 2 < 1 << 63  # room for the kernel's own address space on top


@pytest.mark.parametrize("settings", [{"memory": math.inf}, {"cpu_time": math.nan},
                                      {"pids": 2.5}, {"fsize": 1 << 70}, {"nofile": True},
                                      {"memory": 0}])
def test_the_api_refuses_what_the_flags_refuse(settings):
    with pytest.raises(LimitError, match="give a whole number"):
        Limits(**settings)


@pytest.mark.parametrize(("size", "message"), [
    ("0", "bad size '0': give a size above 0, up to 1048576g"),  # tmpfs: 0 means no limit
    ("999999999999g", "bad size '999999999999g': give a size above 0, up to 1048576g"),
    ("1048577g", "bad size '1048577g'"),
])
def test_a_scratch_size_out_of_range_is_one_line(size, message):
    with pytest.raises(IsolationError, match="^" + message):
        Isolation(mount=True, readonly=True, tmpfs_size=size)
    assert Isolation(mount=True, readonly=True, tmpfs_size="1048576g")
    assert Isolation(mount=True, readonly=True, tmpfs_size="1000")


@pytest.mark.parametrize("binds", [(("/srv", False), ("/srv", True)),
                                   (("/srv", False), ("/srv/", False))])
def test_a_directory_bound_twice_is_one_line(binds):
    with pytest.raises(IsolationError, match="^bind '/srv/?' is given twice: give it once"):
        Isolation(mount=True, readonly=True, binds=binds)


@pytest.mark.parametrize("timeout", [math.inf, 1e308, math.nan, 0, -1, 3601])
def test_a_probe_timeout_out_of_range_is_one_line(timeout):
    lab = Lab(records_dir="/nonexistent")  # refused before the lab is used
    for check in (lambda: probe.ping(lab, "a", "10.0.0.1", 1, timeout),
                  lambda: probe.tcp_check(lab, "a", "b", "10.0.0.1", timeout),
                  lambda: probe.udp_check(lab, "a", "b", "10.0.0.1", timeout)):
        with pytest.raises(LabError, match=r"^timeout \S+: give seconds above 0, up to 3600$"):
            check()


def test_a_namespace_deleted_twice_in_one_line_is_refused():
    lab = Lab(records_dir="/nonexistent")
    lab.netns["x"] = 1  # as if it made x: refused before anything is looked at
    with pytest.raises(LabError, match="^a namespace name is given twice$"):
        lab.delete("x", "x")
