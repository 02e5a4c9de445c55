"""Limit values: sizes, refusals, and what a death by signal means."""

from __future__ import annotations

import signal

import pytest

from nskernel.limits import LimitError, Limits, parse_size, size_text


@pytest.mark.parametrize(("text", "size"), [("64M", 64 << 20), ("2g", 2 << 30), ("512k", 512 << 10),
                                            ("1000", 1000)])
def test_sizes_are_powers_of_1024(text, size):
    assert parse_size(text, "--memory") == size


@pytest.mark.parametrize("text", ["0", "lots", "-5M", "1.5G", "64 M", ""])
def test_a_bad_size_says_what_to_give(text):
    with pytest.raises(LimitError, match="give a size above 0, as 64M or 2G"):
        parse_size(text, "--memory")


def test_sizes_read_back_in_the_largest_unit():
    assert [size_text(s) for s in (64 << 20, 2 << 30, 3 << 10, 1000)] == [
        "64 MiB", "2 GiB", "3 KiB", "1000 bytes"]


@pytest.mark.parametrize("field", ["cpu_time", "nofile", "pids"])
def test_counts_must_be_above_zero(field):
    with pytest.raises(LimitError, match="give a whole number above 0"):
        Limits(**{field: 0})


def test_a_death_by_signal_is_named_after_the_limit_it_crossed():
    limits = Limits(cpu_time=2, fsize=1 << 20)
    assert limits.explain_death(signal.SIGXCPU) == "CPU time limit of 2 s exceeded"
    assert limits.explain_death(signal.SIGXFSZ) == "file size limit of 1 MiB exceeded"
    assert limits.explain_death(signal.SIGKILL) is None
    assert Limits().explain_death(signal.SIGXCPU) is None
    assert not Limits() and Limits(pids=3)


@pytest.mark.parametrize("limits", [Limits(memory=2 << 30, pids=512, cpus=2.0),
                                    Limits(cpus=0.5, fsize=1 << 20, nofile=64),
                                    Limits(cpu_time=3, memory=64 << 20)])
def test_limits_turn_into_flags_and_back(limits):
    import argparse

    from nskernel import limits as module

    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    assert module.from_args(parser.parse_args(limits.to_argv())) == limits


@pytest.mark.parametrize(("flags", "message"), [
    (["--memory", "64M"], "--memory: a kernel needs at least 256 MiB"),
    (["--pids", "8"], "--pids: a kernel needs at least 32"),
    (["--cpus", "0"], "--cpus 0.0: give a share of CPUs from 0.01 up"),
])
def test_a_kernel_refuses_limits_it_could_not_start_under(flags, message):
    import argparse

    from nskernel import limits as module

    parser = argparse.ArgumentParser()
    module.add_arguments(parser, for_kernel=True)
    with pytest.raises(LimitError, match=message):
        module.from_args(parser.parse_args(flags), for_kernel=True)


def test_limits_read_as_a_person_reads_them():
    assert Limits(memory=2 << 30, pids=512, cpus=1.5, cpu_time=2).describe() == [
        ("cpu time", "2 s"), ("memory", "2 GiB"), ("pids", "512"), ("cpus", "1.5")]
