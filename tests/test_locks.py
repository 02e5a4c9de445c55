"""The locks of %%isolate: a read-only view (--readonly, --bind), privileges
(no_new_privs, --seccomp, --caps, --jail) and limits (--memory, --pids, --cpu-time, ...).

In both kernels; as root and (in CI's second run) as an ordinary user. Every hostile body
is bounded before it starts: small sizes, few processes, a timeout.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import RUN_PREFIX
from kernels import execute
from test_magics import cell, one_line_error, still_answers

WRITE = ("import errno, os\n"
         "def write(path):\n"
         "    try:\n"
         "        with open(path, 'w') as handle:\n"
         "            handle.write('x')\n"
         "        return 'ok'\n"
         "    except OSError as exc:\n"
         "        return errno.errorcode[exc.errno]\n")


@pytest.fixture
def shared_dirs(shared_dir: Path) -> list[Path]:
    """A read-only and a writable directory where any kernel (even a root one, which is an
    id of its own on the host) may reach them (see conftest's shared_dir)."""
    made = [shared_dir / name for name in ("ro", "rw")]
    for path in made:
        path.mkdir()
        path.chmod(0o777)
    (made[0] / "given").write_text("from the host")
    return made


@pytest.mark.parametrize("flags", ["--readonly --pid", "--readonly --user --pid --net",
                                   "--readonly --uts"])
def test_host_files_are_read_only_and_scratch_space_is_fresh(kernel, flags):
    marker = Path(f"/tmp/{RUN_PREFIX}-host-marker")
    marker.write_text("host")
    try:
        done = cell(kernel, f"%%isolate {flags}\n{WRITE}"
                            "home = os.path.expanduser('~/file')\n"
                            "([write(p) for p in ('/etc/nskernel-x', '/usr/nskernel-x', '/x')],"
                            " [write(p) for p in ('/tmp/x', '/var/tmp/x', '/dev/shm/x', home,"
                            " '/dev/null')], sorted(os.listdir('/tmp')))")
        refused, allowed, tmp = done.value
        assert refused == ["EROFS"] * 3, done
        assert allowed == ["ok"] * 5, done
        # A fresh /tmp: the host's marker is not in it (Python's own directories, where
        # they lie under /tmp, are bound back read-only).
        assert "x" in tmp and marker.name not in tmp
        assert not Path("/tmp/x").exists() and not Path("/etc/nskernel-x").exists()
    finally:
        marker.unlink()


def test_bind_shows_a_host_directory_read_only_or_writable(kernel, shared_dirs):
    ro, rw = shared_dirs
    done = cell(kernel, f"%%isolate --readonly --pid --bind {ro} --bind {rw}:rw\n{WRITE}"
                        f"(open('{ro}/given').read(), write('{ro}/new'), write('{rw}/new'))")
    assert done.value == ("from the host", "EROFS", "ok"), done
    assert (rw / "new").read_text() == "x" and not (ro / "new").exists()


def test_a_full_scratch_tmpfs_says_no_space(kernel):
    done = cell(kernel, "%%isolate --readonly --tmpfs-size 1m --mount\nimport errno\n"
                        "try:\n    open('/tmp/big', 'wb').write(b'x' * 2_000_000)\n"
                        "except OSError as exc:\n    result = errno.errorcode[exc.errno]\n"
                        "result")
    assert done.value == "ENOSPC"


def test_the_api_takes_the_same_settings(kernel):
    done = cell(kernel, "import nskernel, os\n"
                        "nskernel.isolate(lambda: os.statvfs('/usr').f_flag & os.ST_RDONLY,"
                        " mount=True, readonly=True)")
    assert done.value == os.ST_RDONLY


@pytest.mark.parametrize("flags", ["--readonly --mount", "--readonly --pid --net"])
def test_a_cell_cannot_make_the_host_writable_again(kernel, flags):
    """Remounting read-write or unmounting the scratch tmpfs would reach the host's files;
    the read-only view is made before the cell's own user namespace, so both are refused
    (even in a stock kernel run by root)."""
    marker = f"{RUN_PREFIX}-escaped"
    done = execute(kernel, f"%%isolate {flags} --sh\n"
                           "mount -o remount,rw,bind / 2>/dev/null && echo remounted\n"
                           "umount /tmp 2>/dev/null && echo unmounted\n"
                           f"touch /{marker} /tmp/{marker} 2>/dev/null; echo done")
    assert done.stdout.split() == ["done"], done
    assert not Path(f"/{marker}").exists() and not Path(f"/tmp/{marker}").exists()


def test_python_can_still_import_what_the_kernel_can(kernel):
    """A virtual environment in the home directory or /tmp would be hidden by the scratch
    tmpfs: Python's own directories are bound back, read-only."""
    done = cell(kernel, "%%isolate --readonly --pid\nimport sys, importlib\n"
                        "sys.modules.pop('nskernel.display', None)\n"
                        "importlib.import_module('nskernel.display').__name__")
    assert done.value == "nskernel.display"


# ---------------------------------------------------------------------------- privileges
STATUS = ("import ctypes, errno\n"
          "libc = ctypes.CDLL(None, use_errno=True)\n"
          "def refused(call, *args):\n"
          "    return call(*args) == -1 and errno.errorcode[ctypes.get_errno()]\n"
          "status = dict(line.split(':\\t') for line in open('/proc/self/status')"
          ".read().splitlines() if ':\\t' in line)\n")


@pytest.mark.parametrize("flags", ["--uts", "--pid --net", "--user --pid"])
def test_every_cell_runs_with_no_new_privs(kernel, flags):
    done = cell(kernel, f"%%isolate {flags}\n{STATUS}(status['NoNewPrivs'], status['Seccomp'])")
    assert done.value == ("1", "0")


@pytest.mark.parametrize("flags", ["--seccomp --uts", "--seccomp --pid --net",
                                   "--seccomp --user --pid --readonly"])
def test_the_seccomp_filter_refuses_the_calls_that_reach_past_the_sandbox(kernel, flags):
    """unshare(0) is a harmless no-op and setns(-1) an EBADF where they are allowed: under
    the filter both are EPERM. The cell goes on after each refusal."""
    done = cell(kernel, f"%%isolate {flags}\n{STATUS}"
                        "(status['Seccomp'], refused(libc.unshare, 0), refused(libc.setns, -1, 0),"
                        " refused(libc.delete_module, b'nskernel_none', 0), 'still running')")
    assert done.value == ("2", "EPERM", "EPERM", "EPERM", "still running")


def test_without_the_filter_the_same_calls_are_not_refused(kernel):
    done = cell(kernel, f"%%isolate --uts\n{STATUS}"
                        "(refused(libc.unshare, 0), refused(libc.setns, -1, 0))")
    assert done.value == (False, "EBADF")


def test_a_command_under_the_filter_is_refused_and_the_cell_goes_on(kernel):
    done = execute(kernel, "%%isolate --seccomp --sh\nunshare --net true 2>/dev/null || "
                           "echo refused\necho still here")
    assert done.stdout.split() == ["refused", "still", "here"], done


@pytest.mark.parametrize(("flags", "caps"), [("--uts --caps none", "0000000000000000"),
                                             ("--uts --seccomp", "0000000000000000"),
                                             ("--uts --seccomp --caps all", "keeps")])
def test_caps_none_leaves_the_body_no_capability(kernel, flags, caps):
    """Default with --seccomp; 'all' keeps what the cell's user has (root inside: all)."""
    done = cell(kernel, f"%%isolate {flags}\n{STATUS}"
                        "(status['CapEff'], status['CapBnd'], status['CapAmb'])")
    effective, bounding, ambient = done.value
    if caps == "keeps":
        assert effective != "0000000000000000" and bounding != "0000000000000000"
    else:
        assert (effective, bounding, ambient) == (caps, caps, caps)


def test_jail_is_every_lock_at_once_for_untrusted_code(kernel):
    done = cell(kernel, f"%%isolate --jail --timeout 30\n{STATUS}"
                        "import os, time\n"
                        "try:\n    open('/etc/nskernel-jail', 'w')\n    wrote = True\n"
                        "except OSError:\n    wrote = False\n"
                        "children = 0\n"
                        "try:\n    for _ in range(1000):\n        if os.fork() == 0:\n"
                        "            time.sleep(10)\n            os._exit(0)\n"
                        "        children += 1\n"
                        "except OSError as exc:\n    bomb = exc.strerror\n"
                        "(os.getpid(), sorted(os.listdir('/sys/class/net')), wrote,"
                        " status['NoNewPrivs'], status['Seccomp'], status['CapEff'],"
                        " refused(libc.unshare, 0), bomb, children < 64)")
    assert done.value == (1, ["lo"], False, "1", "2", "0000000000000000", "EPERM",
                          "Resource temporarily unavailable", True)
    still_answers(kernel)


# ---------------------------------------------------------------------------- limits
@pytest.mark.parametrize("flags", ["--pid", "--uts"])
def test_past_the_memory_limit_allocation_fails_and_below_it_works(kernel, flags):
    done = cell(kernel, f"%%isolate {flags} --memory 64M --timeout 30\n"
                        "small = bytearray(32 << 20)\n"
                        "try:\n    big = bytearray(256 << 20)\n    result = 'allocated'\n"
                        "except MemoryError:\n    result = 'MemoryError'\n(len(small), result)")
    assert done.value == (32 << 20, "MemoryError")
    still_answers(kernel)


def test_a_command_gets_the_memory_limit_in_all(kernel):
    done = execute(kernel, "%%isolate --pid --memory 64M --sh --timeout 30\n"
                           "python3 -c 'bytearray(128 << 20)' 2>&1 | tail -1")
    assert done.stdout.strip() == "MemoryError", done


@pytest.mark.parametrize("flags", ["--pid", "--uts"])
def test_a_fork_bomb_stops_at_the_pids_limit_with_eagain(kernel, flags):
    done = cell(kernel, f"%%isolate {flags} --pids 8 --timeout 30\n"
                        "import errno, os, time\nchildren = []\n"
                        "try:\n    for _ in range(100):\n        pid = os.fork()\n"
                        "        if pid == 0:\n            time.sleep(10)\n"
                        "            os._exit(0)\n"
                        "        children.append(pid)\n"
                        "except OSError as exc:\n    result = errno.errorcode[exc.errno]\n"
                        "(result, len(children) < 8)")
    assert done.value == ("EAGAIN", True)
    still_answers(kernel)


def test_past_the_cpu_time_the_cell_ends_with_one_line(kernel):
    done = execute(kernel, "%%isolate --uts --cpu-time 1 --timeout 30\nwhile True:\n    pass",
                   timeout=60)
    assert "CPU time limit of 1 s exceeded" in one_line_error(done), done
    still_answers(kernel)


def test_file_size_and_open_files_limits(kernel):
    done = cell(kernel, "%%isolate --readonly --mount --fsize 1M --nofile 32\n"
                        "import errno\n"
                        "try:\n    open('/tmp/big', 'wb').write(b'x' * (2 << 20))\n"
                        "except OSError as exc:\n    size = errno.errorcode[exc.errno]\n"
                        "files = []\n"
                        "try:\n    while True:\n        files.append(open('/dev/null'))\n"
                        "except OSError as exc:\n    count = errno.errorcode[exc.errno]\n"
                        "(size, count, len(files) >= 32)")
    assert done.value == ("EFBIG", "EMFILE", True)  # 32 beyond the kernel's own, then EMFILE


def test_the_api_takes_the_same_limits(kernel):
    done = cell(kernel, "import nskernel\n"
                        "def grab():\n    try:\n        bytearray(256 << 20)\n"
                        "    except MemoryError:\n        return 'MemoryError'\n"
                        "nskernel.isolate(grab, pid=True, memory='64M')")
    assert done.value == "MemoryError"


def test_a_home_directory_under_tmp_is_fresh_with_it(kernel):
    """A home inside another scratch directory (here /tmp) is not covered on its own: it is
    made again, empty and writable, in the fresh /tmp."""
    done = cell(kernel, "import nskernel, os, tempfile\n"
                        "home, before = tempfile.mkdtemp(), os.environ['HOME']\n"
                        "os.environ['HOME'] = home\n"
                        "try:\n"
                        "    wrote = nskernel.isolate(lambda: open(os.path.expanduser('~/f'), 'w')"
                        ".write('x'), mount=True, readonly=True)\n"
                        "finally:\n"
                        "    os.environ['HOME'] = before\n"
                        "    os.rmdir(home)\n"
                        "wrote")
    assert done.value == 1


# ---------------------------------------------------------------------------- the whole tree
def cgroups_here(kernel) -> set[str]:
    """What the kernel may put its cells' cgroups on (empty where it may make none: a
    rootless kernel here, which then keeps to rlimits)."""
    return set(cell(kernel, "from nskernel.locks import cgroups\n"
                            "sorted(cgroups.plan().places)").value)


STATS = r"stats: wall [0-9.]+ s, cpu [0-9.]+ s, memory peak [0-9.]+ MiB, processes "


def test_memory_limit_holds_for_all_the_processes_together(kernel):
    """Four processes, each well below the limit, together above it: only a cgroup sees
    that. The line says which limit the cell hit; the kernel lives on."""
    done = execute(kernel, "%%isolate --pid --memory 64M --timeout 30 --sh\n"
                           "for i in 1 2 3 4; do python3 -c 'import time; b = bytearray(30 << "
                           "20); b[::4096] = bytes(len(b[::4096])); time.sleep(2)' & done; "
                           "wait; echo done", timeout=60)
    if "memory" in cgroups_here(kernel):
        assert "memory limit 64 MiB exceeded: the kernel ended" in done.stderr, done
    else:
        assert done.stderr == "", done  # per process, each of them stays below
    assert done.stdout.strip() == "done"
    still_answers(kernel)


def test_cpus_gives_the_cell_a_share_or_says_why_it_cannot(kernel):
    code = ("%%isolate --pid --cpus 0.2 --stats --timeout 1 --sh\n"
            "while :; do :; done")
    done = execute(kernel, code, timeout=30)
    if "cpu" not in cgroups_here(kernel):
        assert "--cpus cannot be enforced here: cgroup" in one_line_error(done), done
        return
    assert "timed out after 1 s" in done.stderr
    used = float(done.stdout.split("cpu ")[1].split(" s")[0])
    assert used < 0.6, done.stdout  # a fifth of a CPU for a second, not all of it
    still_answers(kernel)


def test_cpu_time_is_counted_over_the_whole_cell(kernel):
    done = execute(kernel, "%%isolate --pid --cpu-time 1 --timeout 30 --sh\n"
                           "for i in 1 2 3; do (while :; do :; done) & done; wait; echo ended",
                   timeout=60)
    if "cpuacct" in cgroups_here(kernel):
        assert "CPU time limit of 1 s exceeded" in one_line_error(done), done
    else:  # each loop ends on its own RLIMIT_CPU, after a second of its own
        assert done.stdout.strip() == "ended", done
    still_answers(kernel)


def test_stats_say_what_the_cell_used(kernel):
    done = execute(kernel, "%%isolate --pid --stats\nimport subprocess\n"
                           "subprocess.run(['sh', '-c', 'sleep 0.1 & sleep 0.1 & wait'])\n"
                           "print('body done')")
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "body done" and re.fullmatch(STATS + r"([0-9]+|\?)", lines[1]), done
    if "pids" in cgroups_here(kernel):
        assert int(lines[1].rsplit(" ", 1)[1]) >= 4  # PID 1, the body, sh, two sleeps


def test_stats_come_with_an_error_too_and_from_the_api(kernel):
    done = execute(kernel, "%%isolate --uts --stats\nraise ValueError('no')")
    assert re.search(STATS, done.stdout) and done.error == ("ValueError", "no"), done
    ran = cell(kernel, "import nskernel\nran = nskernel.isolate(lambda: 6 * 7, pid=True, "
                       "stats=True)\n(ran.value, ran.usage.wall > 0, ran.usage.cpu is not None)")
    assert ran.value == (42, True, True)


def test_a_cell_cannot_loosen_or_leave_its_cgroups(kernel):
    """The cell's limits are files it may own (in a root kernel they belong to the kernel's
    id on the host, and so to the cell's root): inside, every cgroup filesystem is
    read-only, and stays so."""
    if not cgroups_here(kernel):  # then the cell is where the kernel is: nothing to leave
        assert cell(kernel, "%%isolate --pid --memory 64M\nopen('/proc/self/cgroup').read()"
                    ).value == cell(kernel, "open('/proc/self/cgroup').read()").value
        return
    for flags in ("--pid --caps none", "--user --uts", "--user --pid --net", "--jail"):
        done = cell(kernel, f"%%isolate {flags} --memory 64M --pids 16\n{WRITE}"
                            "import subprocess\n"
                            "lines = open('/proc/self/cgroup').read().splitlines()\n"
                            "v1 = [l for l in lines if ':pids:' in l]\n"
                            "line, fs = (v1[0], '/sys/fs/cgroup/pids') if v1 else "
                            "(next(l for l in lines if l.startswith('0::')), '/sys/fs/cgroup')\n"
                            "own = fs + line.split(':')[2].strip()\n"
                            "remount = subprocess.run(['mount', '-o', 'remount,rw', fs], "
                            "capture_output=True).returncode\n"
                            "(os.path.exists(own) and write(own + '/pids.max'), "
                            "write(fs + '/cgroup.procs'), remount != 0)")
        seen, leave, refused = done.value
        # v2: the cell's cgroup namespace begins at its leaf, so "own" is /sys/fs/cgroup/
        # itself, there as a mount point (ENOENT: no cgroup filesystem in it).
        assert seen in (False, "EROFS", "ENOENT") and leave in ("EROFS", "ENOENT") \
            and refused, (flags, done)
