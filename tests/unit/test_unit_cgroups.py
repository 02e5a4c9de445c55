"""Where cell and kernel cgroups go, read from /proc files written here (no root needed)."""

from __future__ import annotations

import os
import re

from nskernel.locks import cgroups, usage


def fake_proc(tmp_path, cgroup: str, mountinfo: str) -> str:
    proc = tmp_path / "proc" / "77"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return str(proc)


HYBRID_CGROUP = ("8:pids:/\n4:memory:/machine/abc\n2:cpuacct:/\n1:cpu:/\n"
                 "9:name=systemd:/\n0::/\n")


def test_a_hybrid_machine_gives_v1_controllers_and_a_v2_tracker(tmp_path, monkeypatch):
    root = tmp_path / "cg"
    for sub in ("cpu", "cpuacct", "memory/machine/abc", "pids", "unified", "systemd"):
        (root / sub).mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    mountinfo = "".join(
        f"{n} 31 0:{n} / {root}/{name} rw,relatime - {kind} cgroup rw,{opts}\n"
        for n, name, kind, opts in ((32, "cpu", "cgroup", "cpu"),
                                    (33, "cpuacct", "cgroup", "cpuacct"),
                                    (35, "memory", "cgroup", "memory"),
                                    (39, "pids", "cgroup", "pids"),
                                    (40, "systemd", "cgroup", "name=systemd"),
                                    (41, "unified", "cgroup2", "nsdelegate")))
    monkeypatch.setattr(cgroups, "_proc", lambda pid: fake_proc(tmp_path, HYBRID_CGROUP,
                                                                  mountinfo))
    found = {(h.version, h.own) for h in cgroups.hierarchies()}
    assert found == {(1, f"{root}/cpu"), (1, f"{root}/cpuacct"),
                     (1, f"{root}/memory/machine/abc"), (1, f"{root}/pids"),
                     (2, f"{root}/unified")}
    the_plan = cgroups.plan(cgroups.hierarchies())
    places = {job: h.own.rsplit("/", 1)[1] for job, h in the_plan.places.items()}
    if os.access(root, os.W_OK):
        assert places == {"kill": "unified", "cpuacct": "cpuacct", "cpu": "cpu",
                          "memory": "abc", "pids": "pids"}


def test_a_usage_line_says_what_it_does_not_know():
    line = str(usage.Usage(1.5, None, 3 << 20, None))
    assert line == "stats: wall 1.500 s, cpu ?, memory peak 3.0 MiB, processes ?"
    assert re.fullmatch(r"stats: wall [0-9.]+ s, cpu [0-9.]+ s, memory peak [0-9.]+ MiB, "
                        r"processes [0-9]+", str(usage.Usage(0.1, 0.05, 1 << 20, 4)))


def test_on_pure_v2_limits_go_to_a_child_that_gets_the_controllers(tmp_path, monkeypatch):
    """A delegated v2 cgroup (systemd's Delegate=yes): controllers are offered to its
    children, the limits are written in v2's files. Here on plain files."""
    own = tmp_path / "cg" / "user.slice" / "jupyter.service"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    (own / "cgroup.procs").write_text("")  # processes live in a leaf of their own
    mountinfo = f"41 31 0:41 / {tmp_path}/cg rw,relatime - cgroup2 cgroup2 rw\n"
    monkeypatch.setattr(cgroups, "_proc", lambda pid: fake_proc(
        tmp_path, "0::/user.slice/jupyter.service\n", mountinfo))
    the_plan = cgroups.plan()
    assert {job: h.version for job, h in the_plan.places.items()} == {
        "kill": 2, "cpuacct": 2, "memory": 2, "pids": 2, "cpu": 2}
    group = cgroups.Group.create("nskernel.1-2.3", memory=64 << 20, pids=16, cpus=0.5,
                                 the_plan=the_plan, jobs=set())
    cell = own / "nskernel.1-2.3"
    assert (cell / "memory.max").read_text() == str(64 << 20)
    assert (cell / "pids.max").read_text() == "16"
    assert (cell / "cpu.max").read_text() == "50000 100000"
    assert (own / "cgroup.subtree_control").read_text() in ("+cpu", "+memory", "+pids")
    assert group.directories == {"memory": str(cell), "pids": str(cell), "cpu": str(cell)}


def test_a_v2_cgroup_that_holds_processes_says_why_it_cannot_limit(tmp_path, monkeypatch):
    own = tmp_path / "cg" / "session.scope"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    (own / "cgroup.procs").write_text("1234\n")
    mountinfo = f"41 31 0:41 / {tmp_path}/cg rw,relatime - cgroup2 cgroup2 rw\n"
    monkeypatch.setattr(cgroups, "_proc", lambda pid: fake_proc(
        tmp_path, "0::/session.scope\n", mountinfo))
    monkeypatch.setattr(cgroups, "delegated", lambda directory: False)  # a login session's
    the_plan = cgroups.plan()
    assert "cpu" not in the_plan.places
    assert "holds processes, so its children cannot get the cpu controller" in \
        the_plan.missing["cpu"]
