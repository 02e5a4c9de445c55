"""Memory past --memory through tmpfs (issue 24, item 2): files in a tmpfs are memory that no
rlimit counts, so every tmpfs nskernel mounts is sized from the limits. Rootless, where no
cgroup can be made here, the size is the only bound: a locked kernel's /dev/shm holds at
most its --memory, and a ``%%isolate --ipc --memory 64M`` cell's /dev/shm at most 64 MiB.
Each write goes until the filesystem refuses (ENOSPC), then the files are removed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kernels
import pytest
from conftest import IS_ROOT, as_user, write_kernel

from nskernel.isolation import Isolation
from nskernel.kernel import doctor
from nskernel.limits import Limits

PROBE = str(Path(__file__).with_name("kernel_probe.py"))
LOCKED = Isolation(pid=True, net=True, mount=True, uts=True, ipc=True, hostname="locked",
                   readonly=True, seccomp=True, tmpfs_size="1g")


def fill(path: str, mib: int) -> str:
    """A cell that writes up to ``mib`` MiB into a file at ``path`` and says how many went
    in, and the error that stopped it (the file is removed after)."""
    return ("import errno, os\n"
            f"path, written, stop = {path!r}, 0, None\n"
            "chunk = b'x' * (1 << 20)\n"
            "try:\n"
            "    with open(path, 'wb') as handle:\n"
            f"        for _ in range({mib}):\n"
            "            handle.write(chunk)\n"
            "            handle.flush()\n"
            "            written += 1\n"
            "except OSError as exc:\n"
            "    stop = errno.errorcode[exc.errno]\n"
            "finally:\n"
            "    os.path.exists(path) and os.remove(path)\n"
            "print('written', written, stop)\n")


def written(done: kernels.Execution) -> tuple[int, str]:
    line = next(line for line in done.stdout.splitlines() if line.startswith("written"))
    _word, count, stop = line.split()
    return int(count), stop


def test_a_cells_dev_shm_holds_no_more_than_its_memory(kernel):
    done = kernels.execute(kernel, "%%isolate --ipc --memory 64M\n"
                                   + fill("/dev/shm/nskernel-fill", 128), timeout=60)
    if "memory limit 64 MiB exceeded" in done.stderr:
        return  # as root the cell's cgroup ended the writer first: the kernel lives on
    count, stop = written(done)
    assert count <= 64 and stop == "ENOSPC", done
    assert kernels.execute(kernel, "1 + 1", timeout=10).value == 2


@pytest.mark.skipif(not IS_ROOT, reason="the rootless half of a root run (as a user the "
                                        "cell test above runs rootless)")
def test_rootless_a_locked_kernels_dev_shm_holds_no_more_than_its_memory(unprivileged_user):
    """The hub's kind of kernel, rootless: 256 MiB, read-only host, seccomp. Its /dev/shm
    and its cells' hold no more than their limits; the kernel lives on."""
    name = write_kernel("isolated-locked-256m", LOCKED, Limits(memory=256 << 20))
    cells = [fill("/dev/shm/nskernel-fill", 320), fill("/tmp/nskernel-fill", 320),
             "%%isolate --ipc --memory 64M\n" + fill("/dev/shm/nskernel-fill", 128), "1 + 1"]
    done = as_user(unprivileged_user, [sys.executable, PROBE, name, *cells], timeout=300)
    assert done.returncode == 0, done.stderr
    results = [kernels.Execution(**r) for r in json.loads(done.stdout.splitlines()[-1])
               ["results"]]
    for result, most in zip(results[:3], (256, 256, 64), strict=True):
        count, stop = written(result)
        assert count <= most and stop == "ENOSPC", result
    assert results[3].result == "2"


def test_doctor_says_in_one_line_what_bounds_memory_without_a_cgroup():
    line = doctor.MEMORY_WITHOUT_CGROUP
    assert "\n" not in line and "Delegate=yes" in line and "tmpfs" in line
    checks = {check.namespace: check for check in doctor.limit_checks()}
    if not checks["memory"].ok:
        assert line in checks["memory"].detail
