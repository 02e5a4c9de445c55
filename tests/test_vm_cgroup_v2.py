"""On a machine with systemd as PID 1 and only cgroup v2 (the guest of `make vm-test`).

``NSKERNEL_VM_EXPECT`` says what the run was given, and each test holds the machine to it
(so a run that silently fell back fails here, it does not skip):

- ``delegated``: a scope with ``Delegate=yes`` (root's, or the user's own session's): the
  kernel's and each cell's cgroups are real v2 children with ``memory.max``, ``pids.max``
  and ``cpu.max``, removed at the end;
- ``rlimits``: a cgroup this user may not write: no cgroup is made, the limits are rlimits,
  and ``nskernel doctor`` and ``%nsinfo`` say so.

Elsewhere (this machine kind is a v1 hybrid with no systemd) they do not run.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import wait_for, write_kernel
from kernels import execute, start, stop

from nskernel.isolation import Isolation
from nskernel.limits import Limits

EXPECT = os.environ.get("NSKERNEL_VM_EXPECT")
pytestmark = pytest.mark.skipif(EXPECT is None, reason="runs in the systemd + cgroup v2 "
                                "guest of `make vm-test` (NSKERNEL_VM_EXPECT unset)")
DELEGATED = EXPECT == "delegated"
ROOT = "/sys/fs/cgroup"
KERNEL_LIMITS = Limits(memory=512 << 20, pids=64, cpus=1.0 if DELEGATED else None)
STATS = r"stats: wall [0-9.]+ s, cpu [0-9.]+ s, memory peak [0-9.]+ MiB, processes [0-9]+"


def own_cgroup(text: str) -> str:
    """The v2 directory of a /proc/PID/cgroup text (its only line on a pure v2 machine)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("0::"), text  # pure v2: one line
    return ROOT + lines[0][3:]


def read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as handle:
        return handle.read().strip()


@pytest.fixture(scope="module")
def limited():
    name = write_kernel("isolated-vm-limited", Isolation.kernel_default(), KERNEL_LIMITS)
    manager, client = start(name)
    try:
        yield manager, client
    finally:
        stop(manager, client)


def test_the_machine_is_pure_cgroup_v2_under_systemd():
    assert subprocess.run(["stat", "-fc", "%T", ROOT], capture_output=True,
                          text=True).stdout.strip() == "cgroup2fs"
    assert open("/proc/1/comm").read().strip() == "systemd"
    mine = own_cgroup(open("/proc/self/cgroup").read())
    if DELEGATED:
        assert mine.endswith(".scope/nskernel-leaf") or mine.endswith(".scope"), mine


def test_doctor_tells_the_truth_about_each_limit():
    shown = subprocess.run([sys.executable, "-m", "nskernel", "doctor"], capture_output=True,
                           text=True, timeout=600).stdout
    limits = {line.split()[1]: line for line in shown.split("Limits", 1)[1].splitlines()[1:]
              if line.startswith("  ") and len(line.split()) > 1}
    if DELEGATED:
        for name in ("memory", "cpus"):
            assert re.search(r"ok +\S+ +whole cell: cgroup v2 /sys/fs/cgroup/\S+\.scope$",
                             limits[name]), shown
        assert limits["stats"].lstrip().startswith("ok"), shown
    else:
        assert limits["memory"].lstrip().startswith("NO") and "per process only (rlimit" in \
            limits["memory"] and ": cgroup /sys/fs/cgroup/" in limits["memory"], shown
        assert f"is not writable by uid {os.geteuid()} (no delegated cgroup)" in shown, shown
        assert limits["cpus"].lstrip().startswith("NO") and "cannot be enforced" in \
            limits["cpus"], shown
        assert limits["stats"].lstrip().startswith("NO"), shown


def test_the_kernels_cgroup_is_a_real_v2_child_with_its_limits(limited):
    _manager, client = limited
    inside = own_cgroup(execute(client, "open('/proc/self/cgroup').read()", timeout=120).value)
    shown = execute(client, "%nsinfo", timeout=120).result or ""
    if not DELEGATED:
        assert "nskernel." not in inside, inside  # it stays where it was started
        assert "held by rlimits (no cgroup here)" in shown, shown
        return
    assert os.path.basename(inside) == "nskernel-leaf", inside  # v2: processes in a leaf
    kernel = os.path.dirname(inside)
    assert re.fullmatch(r"nskernel\.[0-9]+-[0-9]+\.kernel", os.path.basename(kernel)), kernel
    assert read(kernel, "memory.max") == str(512 << 20)
    assert read(kernel, "pids.max") == "64"
    assert read(kernel, "cpu.max") == "100000 100000"
    assert set(read(kernel, "cgroup.subtree_control").split()) >= {"memory", "pids", "cpu"}
    assert "held by the kernel's cgroup and rlimits" in shown and "MiB in use" in shown, shown


def test_a_cells_cgroup_is_a_v2_child_of_the_kernels_and_goes_with_the_cell(limited):
    manager, client = limited
    code = ("%%isolate --pid --memory 64M --cpus 0.5 --stats\nimport time\n"
            "print(open('/proc/self/cgroup').read().strip(), flush=True)\ntime.sleep(600)"
            if DELEGATED else
            "%%isolate --pid --memory 64M --stats\nimport time\n"
            "print(open('/proc/self/cgroup').read().strip(), flush=True)\ntime.sleep(600)")
    msg_id = client.execute(code)
    text = ""
    deadline = time.monotonic() + 300
    while "0::" not in text and time.monotonic() < deadline:
        message = client.get_iopub_msg(timeout=300)
        if message["parent_header"].get("msg_id") == msg_id and \
                message["msg_type"] == "stream":
            text += message["content"]["text"]
    cell = own_cgroup(text.splitlines()[0])
    try:
        if DELEGATED:
            # The cell's cgroup namespace begins at its leaf ('body'): it names no place of the
            # host's. Its cgroup is the one below a kernel of ours whose leaf holds processes.
            assert cell == ROOT + "/", text
            mine = own_cgroup(open("/proc/self/cgroup").read()).removesuffix("/nskernel-leaf")
            busy = [os.path.dirname(leaf) for leaf in
                    glob.glob(os.path.join(mine, "nskernel.*.kernel", "nskernel.*", "body"))
                    if read(leaf, "cgroup.procs")]
            assert len(busy) == 1, busy
            cell = busy[0]
            kernel = os.path.dirname(cell)
            assert kernel.endswith(".kernel") and os.path.basename(cell).startswith(
                "nskernel."), cell
            assert read(cell, "memory.max") == str(64 << 20)
            assert read(cell, "cpu.max") == "50000 100000"
            assert read(cell, "pids.max") == "max"  # a cell's processes: its own rlimit
            assert int(read(cell, "pids.current")) >= 1  # the body, its PID 1
        else:
            assert "nskernel." not in cell, cell
    finally:
        manager.interrupt_kernel()
        client.get_shell_msg(timeout=300)
    if DELEGATED:
        assert wait_for(lambda: not os.path.exists(cell), timeout=60), cell


def test_a_memory_hog_a_fork_bomb_and_a_cpu_loop_get_the_verdicts_of_v1(limited):
    _manager, client = limited
    hog = execute(client, "%%isolate --pid --memory 64M --timeout 300 --sh\n"
                          "for i in 1 2 3 4; do python3 -c 'import time; b = bytearray(30 << "
                          "20); b[::4096] = bytes(len(b[::4096])); time.sleep(5)' & done; "
                          "wait; echo done", timeout=600)
    if DELEGATED:
        assert "memory limit 64 MiB exceeded: the kernel ended" in hog.stderr, hog
    else:
        assert hog.stderr == "", hog  # per process, each stays below
    bomb = execute(client, "%%isolate --pid --pids 8 --timeout 300\n"
                           "import errno, os, time\nchildren = []\n"
                           "try:\n    for _ in range(100):\n        pid = os.fork()\n"
                           "        if pid == 0:\n            time.sleep(30)\n"
                           "            os._exit(0)\n        children.append(pid)\n"
                           "except OSError as exc:\n    result = errno.errorcode[exc.errno]\n"
                           "(result, len(children) < 8)", timeout=600)
    assert bomb.value == ("EAGAIN", True), bomb
    loop = execute(client, "%%isolate --pid --cpu-time 2 --timeout 600 --sh\n"
                           "for i in 1 2 3; do (while :; do :; done) & done; wait; echo ended",
                   timeout=900)
    if DELEGATED:
        assert loop.stderr.strip().splitlines()[-1] == \
            "UsageError: isolated cell: CPU time limit of 2 s exceeded", loop
    else:
        assert loop.stdout.strip() == "ended", loop  # each loop on its own RLIMIT_CPU
    assert execute(client, "1 + 1", timeout=120).value == 2


def test_stats_report_real_figures(limited):
    _manager, client = limited
    done = execute(client, "%%isolate --pid --stats\nimport subprocess\n"
                           "b = bytearray(40 << 20); b[::4096] = bytes(len(b[::4096]))\n"
                           "subprocess.run(['sh', '-c', 'sleep 0.5 & sleep 0.5 & wait'])\n"
                           "print('body done')", timeout=600)
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "body done", done
    if DELEGATED:
        assert re.fullmatch(STATS, lines[1]), done
        peak = float(lines[1].split("memory peak ")[1].split(" MiB")[0])
        processes = int(lines[1].rsplit(" ", 1)[1])
        assert peak >= 40 and processes >= 4, lines[1]  # the 40 MiB; PID 1, body, sh, sleeps
    else:
        assert lines[1].endswith("processes ?"), done  # no cgroup: no count of processes
