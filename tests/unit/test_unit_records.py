"""Lab records as `nskernel clean` reads them: names that are names, identities that are
cookies; and owners that are zombies are dead."""

from __future__ import annotations

import json
import os
import time

import pytest

from nskernel.netlab import netns, records
from nskernel.netlab.netns import NetnsId
from nskernel.owners import owner_alive, owner_id


def write(tmp_path, record) -> str:
    path = tmp_path / "owner.json"
    path.write_text(json.dumps(record))
    return str(path)


GOOD = {"owner": "123-456", "links": {"k-eth0": 7}, "kernel_netns": 4026531840,
        "netns": {"a": {"cookie": 9, "inode": 4026532000}}}


def test_a_record_reads_back_as_what_the_lab_saved(tmp_path):
    path = str(tmp_path / "lab.json")
    records.save(path, "123-456", {"a": NetnsId(4026532000, 9)}, {"k-eth0": 7})
    record = records.read(path)
    assert record["owner"] == "123-456" and record["links"] == {"k-eth0": 7}
    assert record["netns"] == {"a": NetnsId(4026532000, 9)}


def test_a_record_of_before_cookies_has_none_and_clean_goes_by_no_inode(tmp_path):
    record = records.read(write(tmp_path, {**GOOD, "netns": {"a": 4026532000}}))
    assert record["netns"] == {"a": NetnsId(4026532000, None)}


@pytest.mark.parametrize(("change", "message"), [
    ({"netns": {"../x": {"cookie": 1, "inode": 2}}}, "bad namespace name '../x'"),
    ({"netns": {"/run/x": 2}}, "bad namespace name '/run/x'"),
    ({"netns": {"": 2}}, "bad namespace name ''"),
    ({"netns": {"kernel": 2}}, "'kernel' is the kernel's own namespace"),
    ({"netns": {"a": {"cookie": "1", "inode": 2}}}, "netns a: bad identity"),
    ({"netns": {"a": True}}, "netns a: bad identity"),
    ({"netns": ["a"]}, "netns and links are not tables"),
    ({"owner": "../1-2"}, "no owner PID-STARTTIME"),
    ({"owner": None}, "no owner PID-STARTTIME"),
    ({"links": {"x" * 16: 3}}, "bad link 'xxxxxxxxxxxxxxxx'"),
    ({"links": {"eth0": "3"}}, "bad link 'eth0'"),
])
def test_a_record_that_no_lab_wrote_is_refused_in_one_line(tmp_path, change, message):
    with pytest.raises(records.RecordError) as raised:
        records.read(write(tmp_path, {**GOOD, **change}))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_clean_refuses_and_keeps_such_a_record_and_reads_the_others(tmp_path):
    bad = tmp_path / "1-1.json"
    bad.write_text(json.dumps({**GOOD, "owner": "1-1", "netns": {"../x": 2}}))
    removed, refused = records.clean(str(tmp_path))
    assert removed == [] and bad.exists()
    assert refused == [f"record {bad} (left as it is): bad namespace name '../x': use letters, "
                       "digits, '.', '_', '-' (not first), at most 64"]


def test_a_namespace_is_never_removed_by_its_inode_alone_when_it_has_a_cookie():
    """Nothing is at /run/netns/<this name>: nothing to remove, and no error."""
    assert not netns.remove_if_same("nskernel-unit-none", NetnsId(1, 2), inode_will_do=True)


def test_the_cookie_of_this_namespace_is_read_from_a_socket():
    first, again = netns.current_netns_cookie(), netns.current_netns_cookie()
    assert first == again and isinstance(first, int) and first > 0


def test_a_zombie_owner_is_dead():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        owner = owner_id(pid)  # taken while it may still run: its start time is the same
        deadline = time.monotonic() + 10
        while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.001)
        assert not owner_alive(owner)
    finally:
        os.waitpid(pid, 0)
    assert owner_alive(owner_id())
    assert not owner_alive("garbage") and not owner_alive("1-x")
