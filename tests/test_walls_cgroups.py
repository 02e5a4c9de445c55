"""A cell against its own cgroups: every route found to loosen a cell's whole-tree limits,
tried for real (issue 23, items 4, 7 and 10).

A cell's cgroups are made by the kernel, so on the host they belong to the kernel's user,
which the cell is too (nobody, for a kernel Jupyter started as root). The walls are that the
cell cannot reach them: its processes live in a leaf below the limits, in a cgroup namespace
rooted there, and a user namespace of its own keeps it out of the kernel's mounts and
namespaces. Each route first plays its trick, then starts four processes of 30 MiB each
under ``--memory 64M``: where the cell has cgroups (as root here) the cell must end with
"memory limit 64 MiB exceeded" as it does without the trick. Rootless, this machine gives no
cgroup: there the trick must write no limit file at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import kernels
import pytest
from conftest import IS_ROOT, as_user, wait_for

from nskernel.locks import cgroups
from nskernel.owners import owner_id

PROBE = str(Path(__file__).with_name("kernel_probe.py"))
EXCEEDED = "memory limit 64 MiB exceeded"

#: Four processes of 30 MiB each, touched page by page: 120 MiB for the tree.
HOG = ("import subprocess, sys\n"
       "code = 'b = bytearray(30 << 20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\n"
       "import time; time.sleep(1)'\n"
       "procs = [subprocess.Popen([sys.executable, '-c', code]) for _ in range(4)]\n"
       "print('exits', [p.wait() for p in procs])\n")

PRELUDE = ("import ctypes, glob, os\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "wrote = []\n"
           "def write_all(paths, value):\n"
           "    for path in paths:\n"
           "        try:\n"
           "            with open(path, 'w') as handle:\n"
           "                handle.write(value)\n"
           "            wrote.append(path)\n"
           "        except OSError:\n"
           "            pass\n"
           "def limits_below(root):\n"
           "    return [p for name in ('memory.memsw.limit_in_bytes', 'memory.limit_in_bytes',"
           " 'memory.max', 'memory.swap.max') for p in glob.glob(f'{root}/**/{name}', "
           "recursive=True)]\n"
           "def procs_below(root):\n"
           "    return glob.glob(f'{root}/**/cgroup.procs', recursive=True)\n"
           "def loosen(root):\n"
           "    write_all(limits_below(root), str(1 << 40))\n"
           "    write_all([p for p in procs_below(root) if p.endswith('.kernel/cgroup.procs')]"
           " + [f'{root}/cgroup.procs'], '0')\n")

#: name -> (%%isolate flags, the trick). KERNEL_PID is the kernel's pid as a cell sees it.
ROUTES = {
    # Unmount the cover over /sys/fs/cgroup and take the kernel's view beneath.
    "umount /sys/fs/cgroup": ("--pid",
                              "libc.umount2(b'/sys/fs/cgroup', 2)\n"
                              "loosen('/sys/fs/cgroup')\n"),
    # A cgroup filesystem of its own, in a user and cgroup namespace of its own.
    **{f"mount cgroup {flags}": (flags,
                                 "uid, gid = os.getuid(), os.getgid()\n"
                                 "assert libc.unshare(0x10000000 | 0x00020000 | 0x02000000) == 0\n"
                                 "open('/proc/self/setgroups', 'w').write('deny')\n"
                                 "open('/proc/self/uid_map', 'w').write(f'0 {uid} 1')\n"
                                 "open('/proc/self/gid_map', 'w').write(f'0 {gid} 1')\n"
                                 "for kind, options in (('cgroup', b'memory'), "
                                 "('cgroup2', None)):\n"
                                 "    point = f'/tmp/escape-{kind}'\n"
                                 "    os.makedirs(point, exist_ok=True)\n"
                                 "    if libc.mount(b'none', point.encode(), kind.encode(), 0, "
                                 "options) == 0:\n"
                                 "        loosen(point)\n")
        for flags in ("--caps none --pid", "--user --uts", "--all")},
    # The kernel's own mount namespace, through its /proc entry.
    "/proc/KERNEL/root": ("--user --uts",
                          "loosen(f'/proc/{KERNEL_PID}/root/sys/fs/cgroup')\n"),
    # Uncover the kernel's /proc beneath the cell's, then enter the kernel's mounts.
    "umount /proc, setns to the kernel's mounts": (
        "--pid",
        "libc.umount2(b'/proc', 2)\n"
        "fd = os.open(f'/proc/{KERNEL_PID}/ns/mnt', os.O_RDONLY) if os.path.exists("
        "f'/proc/{KERNEL_PID}/ns/mnt') else -1\n"
        "if fd >= 0 and libc.setns(fd, 0) == 0:\n"
        "    loosen('/sys/fs/cgroup')\n"
        "loosen(f'/proc/{KERNEL_PID}/root/sys/fs/cgroup')\n"),
}

#: Routes that need a cell without a user namespace of its own to mean anything, which a
#: stock kernel run by root gives root's powers over the machine (as the README says).
ROOT_CELL_ROUTES = ("umount /sys/fs/cgroup", "umount /proc, setns to the kernel's mounts")


def route_cell(flags: str, trick: str, kernel_pid: int) -> str:
    return (f"%%isolate {flags} --memory 64M\nKERNEL_PID = {kernel_pid}\n{PRELUDE}{trick}"
            f"print('wrote', wrote)\n{HOG}")


def cells_have_cgroups() -> bool:
    """Whether this user's kernels may make cgroups here (as root on this machine)."""
    return bool(cgroups.plan().places)


def judge(done: kernels.Execution, has_cgroups: bool) -> None:
    if has_cgroups:
        assert EXCEEDED in done.stderr, done  # the trick changed nothing
        assert "exits [0, 0, 0, 0]" not in done.stdout, done
    else:  # rlimits only: nothing of the machine's cgroups was written
        assert "wrote []" in done.stdout, done


@pytest.fixture(scope="module")
def kernel_pid(kernel) -> int:
    return kernels.execute(kernel, "import os\nos.getpid()").value


def test_the_control_four_processes_pass_the_limit_together(kernel):
    done = kernels.execute(kernel, f"%%isolate --pid --memory 64M\n{HOG}", timeout=60)
    if cells_have_cgroups():
        assert EXCEEDED in done.stderr, done
    else:
        assert "exits [0, 0, 0, 0]" in done.stdout, done  # each alone is below its rlimit


@pytest.mark.parametrize("route", ROUTES)
def test_a_cell_cannot_loosen_its_limits(kernel, kernel_pid, route):
    if kernel.kernel_name == "python3" and IS_ROOT and route in ROOT_CELL_ROUTES:
        flags, trick = ROUTES[route]
        flags += " --user"  # as root a stock kernel's cell is root without it
    else:
        flags, trick = ROUTES[route]
    done = kernels.execute(kernel, route_cell(flags, trick, kernel_pid), timeout=60)
    judge(done, cells_have_cgroups())
    assert kernels.execute(kernel, "1 + 1", timeout=10).value == 2


@pytest.mark.skipif(not IS_ROOT, reason="the rootless half of a root run (as a user it "
                                        "is the test above)")
def test_rootless_a_cell_cannot_loosen_its_limits(unprivileged_user):
    """The same routes in an Isolated Python kernel of an unprivileged user."""
    cells = ["import os\nos.getpid()"]
    cells += [route_cell(flags, trick, 2) for flags, trick in ROUTES.values()]
    done = as_user(unprivileged_user, [sys.executable, PROBE, "isolated-python", *cells],
                   timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])["results"]
    assert results[0]["result"] == "2"
    check = as_user(unprivileged_user, [sys.executable, "-c", "from nskernel.locks import cgroups\n"
                                        "print(bool(cgroups.plan().places))"])
    has_cgroups = check.stdout.strip() == "True"
    for route, result in zip(ROUTES, results[1:], strict=True):
        judge(kernels.Execution(**result), has_cgroups), route


def test_a_cells_cgroups_are_gone_when_its_result_is_back(kernel):
    """Item 10: no cgroup of the cell's is left once its value has come back (the kernel
    names them in its own hierarchies; they must be gone at once, not later)."""
    code = ("from nskernel.cell import cgroup_plan\nfrom nskernel.locks import cgroups\n"
            "from nskernel.owners import owner_id\n"
            "import os\n"
            "mine = cgroups.PREFIX + owner_id() + '.'\n"
            "def ours():\n"
            "    return {os.path.join(h.own, d) for h in cgroups.hierarchies() "
            "if os.path.isdir(h.own) for d in os.listdir(h.own) if d.startswith(mine)}\n"
            "import time\n"
            "def parked():\n"
            "    # The set parked for the next cell, once its parking thread has made it\n"
            "    # (the thread makes it in the background after each cell).\n"
            "    deadline = time.monotonic() + 5\n"
            "    threads = cgroup_plan._parking.values()\n"
            "    while time.monotonic() < deadline and any(\n"
            "            t._ready.qsize() == 0 and not t.failed for t in threads):\n"
            "        time.sleep(0.01)\n"
            "    return {d for t in cgroup_plan._parking.values() for p in [t._waiting] "
            "if p is not None for d in p.group.made}\n"
            "left = []\n"
            "for flags in ('--pid --memory 64M', '--pid --cpu-time 5', '--user --memory 64M', "
            "'--net --memory 64M', '--pid --stats'):\n"
            "    get_ipython().run_cell_magic('isolate', flags, '1')\n"
            "    waiting = parked()\n"
            "    left += sorted(ours() - waiting)\n"
            "left")
    done = kernels.execute(kernel, code, timeout=60)
    assert done.value == [], done


@pytest.mark.skipif(not IS_ROOT, reason="needs root: only a root kernel gets cgroups here")
def test_a_stock_kernel_killed_leaves_no_parked_cgroups(start_kernel):
    """Item 7: a stock root kernel SIGKILLed with a set of cell cgroups parked for its next
    cell leaves none behind (its keeper removes them)."""
    manager, client = start_kernel("python3")
    assert kernels.execute(client, "%load_ext nskernel").status == "ok"
    done = kernels.execute(client, "%%isolate --pid --memory 64M\n1")
    assert done.status == "ok", done
    names = kernels.execute(client, "from nskernel.owners import owner_id\n"
                                    "from nskernel.locks import cgroups\n"
                                    "[h.own + '/' + cgroups.PREFIX + owner_id() "
                                    "for h in cgroups.hierarchies()]").value
    assert wait_for(lambda: any(Path(n).parent.glob(Path(n).name + ".*") for n in names),
                    timeout=10)  # the parked set for the next cell
    os.kill(manager.provisioner.pid, signal.SIGKILL)
    assert wait_for(lambda: not any(list(Path(n).parent.glob(Path(n).name + ".*"))
                                    for n in names), timeout=20), names


@pytest.mark.skipif(not IS_ROOT, reason="needs root: only a root kernel gets cgroups here")
def test_a_killed_keeper_still_leaves_no_kernel_cgroup(start_kernel):
    """Item 7: SIGKILL of the launcher's cgroup keeper, then shutdown: the kernel's cgroups
    go all the same."""
    manager, client = start_kernel()
    # Named by the launcher (the provisioner's process): inside, v2 shows only the leaf.
    name = f"{cgroups.PREFIX}{owner_id(manager.provisioner.pid)}.kernel"
    places = [os.path.join(h.own, name) for h in cgroups.hierarchies()]
    assert any(os.path.isdir(p) for p in places)
    keepers = [int(pid) for pid in subprocess.run(["pgrep", "-f", f"nskernel-cgroup .*{name}"],
                                                  capture_output=True, text=True).stdout.split()]
    assert keepers
    os.kill(keepers[0], signal.SIGKILL)
    kernels.stop(manager, client)
    assert wait_for(lambda: not any(os.path.exists(p) for p in places), timeout=20), places
