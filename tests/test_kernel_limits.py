"""A kernel installed with locks (`nskernel install --memory ... --pids ... --readonly
--seccomp`): what a cell meets at each limit, that the kernel lives on, and that it cannot
loosen or leave them. As root the kernel gets a cgroup of its own (handed to it, every other
one hidden); rootless here it keeps to rlimits, and --cpus is refused in one line.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import IS_ROOT, kernels_get_cgroups, one_run_at_a_time, wait_for, write_kernel
from kernels import execute
from test_locks import WRITE
from test_magics import still_answers
from test_walls_memory import share, shared

from nskernel.isolation import Isolation
from nskernel.limits import Limits
from nskernel.locks import cgroups

LIMITS = Limits(memory=512 << 20, pids=64, cpus=1.0 if IS_ROOT else None)
LOCKED = Isolation.kernel_default().__class__(
    pid=True, net=True, mount=True, uts=True, ipc=True, hostname="locked", readonly=True,
    seccomp=True, tmpfs_size="1g")


@pytest.fixture(scope="module")
def locked():
    from kernels import start, stop

    manager, client = start(write_kernel("isolated-locked", LOCKED, LIMITS))
    try:
        yield manager, client
    finally:
        stop(manager, client)


def test_past_the_memory_limit_a_cell_gets_memory_error_and_the_kernel_lives(locked):
    _manager, client = locked
    done = execute(client, "try:\n    big = bytearray(1 << 30)\n    got = 'allocated'\n"
                           "except MemoryError:\n    got = 'MemoryError'\ngot")
    assert done.value == "MemoryError", done
    assert execute(client, "len(bytearray(64 << 20))").value == 64 << 20  # below it: fine
    still_answers(client)


def test_shared_memory_counts_too_and_the_kernel_lives(locked):
    """A 700 MiB shared mapping touched page by page passed RLIMIT_DATA; as root the kernel's
    cgroup then killed the kernel. Now mapping stops with ENOMEM below the limit, memfd and
    SysV segments are refused, and the kernel answers (as root: with its cgroup)."""
    _manager, client = locked
    done = execute(client, share(704), timeout=120)
    held, stop, memfd, shmget = shared(done)
    assert 0 < held < 512 and stop == "ENOMEM", done
    assert (memfd, shmget) == ("EPERM", "EPERM"), done
    still_answers(client)
    assert execute(client, "len(bytearray(64 << 20))").value == 64 << 20  # room again


def test_a_fork_bomb_gets_eagain_and_the_kernel_lives(locked):
    _manager, client = locked
    done = execute(client, "import errno, os, time\nchildren = []\n"
                           "try:\n    for _ in range(200):\n        pid = os.fork()\n"
                           "        if pid == 0:\n            try:\n"
                           "                time.sleep(30)\n"
                           "            finally:\n                os._exit(0)\n"
                           "        children.append(pid)\n"
                           "except OSError as exc:\n    result = errno.errorcode[exc.errno]\n"
                           "for pid in children:\n    os.kill(pid, 9)\n    os.waitpid(pid, 0)\n"
                           "(result, 0 < len(children) < 64)", timeout=60)
    assert done.value == ("EAGAIN", True), done
    still_answers(client)
    assert execute(client, "%%isolate --pid\n1 + 1").value == 2  # room again


def test_nsinfo_shows_the_limits_and_what_is_used(locked):
    _manager, client = locked
    shown = execute(client, "%nsinfo").result
    assert "Limits of this kernel and all it starts" in shown
    assert "memory  512 MiB" in shown and "pids    64" in shown
    if kernels_get_cgroups():  # root here; a user where a cgroup is delegated to them
        assert "held by the kernel's cgroup and rlimits" in shown and "MiB in use" in shown
    else:
        assert "held by rlimits (no cgroup here)" in shown


def test_the_kernel_runs_read_only_under_seccomp_and_its_lab_still_works(locked):
    _manager, client = locked
    done = execute(client, f"{WRITE}import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                           "status = open('/proc/self/status').read()\n"
                           "keyctl = libc.syscall(250, 0, 0, 0, 0, 0) == -1 and ctypes.get_errno()"
                           "\n([l.split()[1] for l in status.splitlines() if l.startswith(("
                           "'NoNewPrivs', 'Seccomp:'))], write('/usr/x'), write('/etc/x'), "
                           "write('/tmp/x'), keyctl)")
    assert done.value == (["1", "2"], "EROFS", "EROFS", "ok", 1), done  # 1: EPERM
    # Namespaces are still the kernel's to make: the magics work under its filter.
    assert execute(client, "%%isolate --pid --net\nimport os\nos.getpid()").value == 1
    execute(client, "%load_ext nskernel")
    assert execute(client, "%netns add lockedlab\n%netns list").status == "ok"
    execute(client, "%netns del lockedlab")


def test_the_kernel_cannot_loosen_or_leave_its_limits(locked):
    _manager, client = locked
    done = execute(client, WRITE + "import resource\n"
                   "def raise_limit():\n    try:\n        resource.setrlimit("
                   "resource.RLIMIT_NPROC, (10000, 10000))\n        return 'raised'\n"
                   "    except (ValueError, OSError):\n        return 'refused'\n"
                   "from nskernel.locks import cgroups\nown = cgroups.hierarchies()\n"
                   "limit_files = [os.path.join(h.own, name) for h in own for name in "
                   "('pids.max', 'memory.limit_in_bytes', 'memory.max', 'cpu.cfs_quota_us', "
                   "'cpu.max') if os.path.exists(os.path.join(h.own, name))]\n"
                   "parents = [os.path.dirname(h.own) + '/cgroup.procs' for h in own]\n"
                   "(raise_limit(), sorted({write(f) for f in limit_files}), "
                   "sorted({write(p) for p in parents}), "
                   "sorted(os.listdir('/sys/fs/cgroup')) if os.path.isdir('/sys/fs/cgroup') "
                   "else [])")
    raised, limits, leave, seen = done.value
    assert raised == "refused"
    assert set(limits) <= {"EACCES", "EROFS"}
    assert set(leave) <= {"ENOENT", "EACCES", "EROFS"}
    if IS_ROOT and kernels_get_cgroups():
        assert limits, done  # there are limit files, and none can be written
        mine = {path.split("/")[4] for path in (h.own for h in cgroups.hierarchies())}
        assert set(seen) <= mine | {"cpu", "memory", "pids", "unified", "cpuacct"}
        # Beside its own cgroup (v1's pids hierarchy, or v2's one tree), nothing is seen.
        others = execute(client, "sorted(os.listdir(os.path.dirname(next(h.own for h in "
                                 "cgroups.hierarchies() if 'pids' in h.controllers))))").value
        assert len(others) == 1 and others[0].endswith(".kernel"), others  # only its own


def test_a_killed_launcher_leaves_no_cgroup(start_kernel):
    manager, client = start_kernel(write_kernel("isolated-locked", LOCKED, LIMITS))
    own = execute(client, "open('/proc/self/cgroup').read()").value
    # On v2 the kernel sits in its cgroup's leaf: the line ends in /nskernel-leaf.
    paths = [line.removesuffix("/" + cgroups.KERNEL_LEAF) for line in own.splitlines()]
    names = [path.rsplit("/", 1)[1] for path in paths if path.endswith(".kernel")]
    if not any(os.access(h.own, os.W_OK) for h in cgroups.hierarchies()):
        assert names == [], own  # rootless here: no cgroup was made, none can be left
        return
    name = names[0]
    places = [os.path.join(h.own, name) for h in cgroups.hierarchies()]
    assert any(os.path.isdir(p) for p in places)
    os.kill(manager.provisioner.pid, signal.SIGKILL)
    assert wait_for(lambda: not any(os.path.exists(p) for p in places), timeout=10), places


def test_without_a_cgroup_cpus_is_refused_in_one_line(tmp_path):
    """A CPU share has no rlimit to fall back on: the kernel does not start without it."""
    connection = tmp_path / "kernel.json"
    ports = {}
    for channel in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        with socket.socket() as probe_socket:  # a free port on loopback, for the launcher
            probe_socket.bind(("127.0.0.1", 0))
            ports[channel] = probe_socket.getsockname()[1]
    connection.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1", **ports,
                                      "key": "", "signature_scheme": "hmac-sha256"}))
    probe = ("from nskernel.locks import cgroups\n"
             "print('cpu' in cgroups.plan().places)")
    has_cpu = ast.literal_eval(subprocess.run([sys.executable, "-c", probe], text=True,
                                              capture_output=True).stdout.strip())
    if has_cpu:
        return  # here the share holds (see test_nsinfo_shows_the_limits_and_what_is_used)
    done = subprocess.run([sys.executable, "-m", "nskernel.launch", "--pid", "--net", "--cpus",
                           "1", "-f", str(connection)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "nskernel: cannot start the kernel: --cpus cannot be enforced here: cgroup"), lines


def test_clean_removes_dead_kernels_cgroups_and_nothing_else():
    """Owner-marked: a cgroup named ours whose owner is gone goes (with the cells' below it);
    ours of a live process and anybody else's stay."""

    places = [h.own for h in cgroups.hierarchies() if os.access(h.own, os.W_OK)]
    made = []
    with one_run_at_a_time():  # another run's leak check must not see these dead "kernels"
        clean_only_the_dead(places, made)
    if not places:  # rootless here: nothing of ours to look at, and nothing touched
        assert "nskernel clean: 0 " in subprocess.run(
            [sys.executable, "-m", "nskernel", "clean"], capture_output=True, text=True,
            timeout=60).stdout


def clean_only_the_dead(places: list[str], made: list[str]) -> None:
    from nskernel.owners import owner_id

    try:
        for own in places[:2]:
            dead = os.path.join(own, f"{cgroups.PREFIX}1-1.kernel")  # pid 1 never started at 1
            for path in (dead, os.path.join(dead, f"{cgroups.PREFIX}2-5.1"),
                         os.path.join(own, f"{cgroups.PREFIX}{owner_id()}.7"),
                         os.path.join(own, "not-ours.1")):
                os.mkdir(path)
                made.append(path)
        done = subprocess.run([sys.executable, "-m", "nskernel", "clean"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        gone = {path for path in made if not os.path.exists(path)}
        assert gone == {path for path in made if "1-1.kernel" in path}, done.stdout
        assert all(f"removed cgroup {path}" in done.stdout for path in gone
                   if path.endswith(".kernel"))
    finally:
        for path in sorted(made, key=len, reverse=True):
            if os.path.exists(path):
                os.rmdir(path)
