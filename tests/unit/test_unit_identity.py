"""Kernel ids: the reserved range, and each id taken by one kernel at a time."""

from __future__ import annotations

import os

import pytest

from nskernel.kernel import identity


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "LOCK_DIR", str(tmp_path / "ids"))
    return tmp_path / "ids"


def test_the_range_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(identity.RANGE_ENV, raising=False)
    assert identity.id_range() == identity.DEFAULT_RANGE
    monkeypatch.setenv(identity.RANGE_ENV, "70000-70009")
    assert identity.id_range() == (70000, 70009)


@pytest.mark.parametrize("text", ["lots", "5", "9-1", "0-10", "60000-70000", "1-4294967295"])
def test_a_bad_range_says_how_to_give_it(monkeypatch, text):
    monkeypatch.setenv(identity.RANGE_ENV, text)
    with pytest.raises(identity.IdentityError, match=identity.RANGE_ENV):
        identity.id_range()


def test_an_id_is_held_while_its_descriptor_is_open(lock_dir, monkeypatch):
    monkeypatch.setenv(identity.RANGE_ENV, "70000-70001")
    monkeypatch.setattr(identity, "_subordinate_ids", lambda: [])
    first, first_lock = identity.allocate()
    second, second_lock = identity.allocate()
    try:
        assert {first, second} == {70000, 70001}
        assert identity.in_use() == {70000, 70001}
        with pytest.raises(identity.IdentityError, match="no free kernel id in 70000-70001"):
            identity.allocate()
    finally:
        os.close(second_lock)
    assert identity.in_use() == {first}
    os.close(first_lock)
    assert identity.in_use() == set()


def test_ids_the_machine_knows_are_never_taken(lock_dir, monkeypatch):
    """nobody's id (in the user database) and the users' subordinate ranges are skipped."""
    monkeypatch.setenv(identity.RANGE_ENV, "65533-65534")
    monkeypatch.setattr(identity, "_subordinate_ids", lambda: [(65533, 65534)])
    with pytest.raises(identity.IdentityError):
        identity.id_range()  # a range may not hold nobody
    monkeypatch.setenv(identity.RANGE_ENV, "100000-100001")
    monkeypatch.setattr(identity, "_subordinate_ids", lambda: [(100000, 100001)])
    taken, lock = identity.allocate()
    os.close(lock)
    assert taken == 100001
