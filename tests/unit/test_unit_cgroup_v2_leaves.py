"""cgroup v2's "no internal processes" rule, on plain files: a delegated cgroup that holds
processes is planned for (they move into a leaf first), a kernel's cgroup keeps the kernel in
a leaf and passes its controllers on, and a process in a leaf counts the leaf's parent as its
own cgroup."""

from __future__ import annotations

from test_unit_cgroups import fake_proc

from nskernel.locks import cgroups


def v2_machine(tmp_path, monkeypatch, own_path: str, procs: str):
    own = tmp_path / "cg" / own_path
    own.mkdir(parents=True, exist_ok=True)
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    (own / "cgroup.procs").write_text(procs)
    mountinfo = f"41 31 0:41 / {tmp_path}/cg rw,relatime - cgroup2 cgroup2 rw\n"
    monkeypatch.setattr(cgroups, "_proc", lambda pid: fake_proc(
        tmp_path, f"0::/{own_path}\n", mountinfo))
    return own


def test_a_delegated_cgroup_that_holds_processes_is_planned_for_its_leaf(tmp_path,
                                                                       monkeypatch):
    own = v2_machine(tmp_path, monkeypatch, "app.slice/run-r1.scope", "1234\n")
    monkeypatch.setattr(cgroups, "delegated", lambda directory: True)
    the_plan = cgroups.plan()
    assert {job: h.version for job, h in the_plan.places.items()} == {
        "kill": 2, "cpuacct": 2, "memory": 2, "pids": 2, "cpu": 2}
    assert the_plan.crowded is not None and the_plan.crowded.own == str(own)
    assert not the_plan.missing


def test_not_delegated_it_says_so_and_nothing_moves(tmp_path, monkeypatch):
    v2_machine(tmp_path, monkeypatch, "system.slice/jupyter.service", "1234\n")
    monkeypatch.setattr(cgroups, "delegated", lambda directory: False)
    the_plan = cgroups.plan()
    assert the_plan.crowded is None and "memory" not in the_plan.places
    assert "Delegate=yes" in the_plan.missing["memory"]


def test_a_process_in_a_leaf_counts_the_leafs_parent_as_its_own(tmp_path, monkeypatch):
    own = v2_machine(tmp_path, monkeypatch, f"run-r1.scope/{cgroups.KERNEL_LEAF}", "1234\n")
    (own.parent / "cgroup.controllers").write_text("cpu memory pids\n")
    assert [h.own for h in cgroups.hierarchies()] == [str(own.parent)]


def test_a_kernels_cgroup_keeps_the_kernel_in_a_leaf_and_passes_its_controllers_on(
        tmp_path, monkeypatch):
    own = v2_machine(tmp_path, monkeypatch, "run-r1.scope", "")
    real_mkdir = cgroups.os.mkdir

    def mkdir(path, *args):  # what cgroupfs does: a new cgroup offers its parent's controllers
        real_mkdir(path, *args)
        with open(f"{path}/cgroup.controllers", "w") as handle:
            handle.write("cpu memory pids\n")
        for name in ("cgroup.subtree_control", "cgroup.procs"):
            open(f"{path}/{name}", "w").close()
    monkeypatch.setattr(cgroups.os, "mkdir", mkdir)
    group = cgroups.Group.create("nskernel.1-2.kernel", memory=256 << 20, pids=32,
                                 holds_cells=True)
    kernel = own / "nskernel.1-2.kernel"
    leaf = kernel / cgroups.KERNEL_LEAF
    assert group.kernel_leaves == {str(kernel): str(leaf)}
    assert (kernel / "memory.max").read_text() == str(256 << 20)
    assert (kernel / "pids.max").read_text() == "32"
    assert (kernel / "cgroup.subtree_control").read_text() in ("+cpu", "+memory", "+pids")
    group.join(4321)
    assert (leaf / "cgroup.procs").read_text() == "4321"
    assert (kernel / "cgroup.procs").read_text() == ""
    assert group.made == [str(kernel), str(leaf)]  # removed leaf first
