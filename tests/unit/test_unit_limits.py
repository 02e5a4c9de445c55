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
