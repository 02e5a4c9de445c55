"""`nskernel doctor` on a machine with systemd as PID 1 (seen in the `make vm-test` guest)."""

from __future__ import annotations

from test_unit_doctor import fake_root

from nskernel.kernel.doctor import container_checks

#: What systemd mounts on /proc on every such machine: binfmt_misc's automount, then the
#: filesystem itself once something looks.
SYSTEMD_MOUNTINFO = (
    "25 30 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
    "26 25 0:24 / /proc/sys/fs/binfmt_misc rw,relatime shared:13 - autofs systemd-1 rw\n"
    "60 26 0:45 / /proc/sys/fs/binfmt_misc rw,nosuid,nodev,noexec,relatime shared:31 - "
    "binfmt_misc binfmt_misc rw\n")


def test_systemds_binfmt_misc_on_proc_is_not_a_covered_proc(tmp_path):
    """Linux lets that directory (kept empty by procfs for it) be covered, and still mounts
    a fresh /proc for a pid namespace: the guest's kernels start, rootless too."""
    root = fake_root(tmp_path, {"/proc/1/status": "Name:\tsystemd\nSeccomp:\t0\n",
                                "/proc/self/cgroup": "0::/system.slice/jupyter.service\n",
                                "/proc/self/mountinfo": SYSTEMD_MOUNTINFO})
    assert container_checks(root, environ={}) == []


def test_anything_else_covered_on_proc_is_still_said(tmp_path):
    mountinfo = SYSTEMD_MOUNTINFO + "70 25 0:5 / /proc/kcore ro - tmpfs tmpfs ro\n"
    root = fake_root(tmp_path, {"/proc/self/mountinfo": mountinfo})
    found = {check.namespace: check for check in container_checks(root, environ={})}
    assert "(/proc/kcore)" in found["proc"].detail
