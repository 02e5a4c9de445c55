"""Memory past --memory through tmpfs and shared memory.

Files in a tmpfs are memory that no rlimit counts, so every tmpfs nskernel mounts is sized
from the limits. Rootless, where no cgroup can be made here, the size is the only bound: a
locked kernel's /dev/shm holds at most its --memory, and a ``%%isolate --ipc --memory 64M``
cell's /dev/shm at most 64 MiB. Each write goes until the filesystem refuses (ENOSPC), then
the files are removed.

Shared memory: a kernel's RLIMIT_DATA did not count it (a 700 MiB shared mapping touched page
by page passed a 256 MiB kernel; as root its cgroup then killed the kernel). Mappings, shared
ones too, now count against the address-space limit, and the calls that make memory no
rlimit counts (memfd_create, shmget) are refused under --memory: the cell gets an error,
the kernel lives on.
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


def share(mib: int) -> str:
    """A cell that maps shared memory 16 MiB at a time, touching every page, up to ``mib``
    MiB or until a mapping is refused, then tries a memfd and a SysV segment (removed at once
    if made). It prints the MiB it held at most, the error that stopped it, and what the
    two calls met."""
    return (f"import ctypes, errno, mmap, os\nmaps, stop = [], None\nlimit = {mib}\n"
            + SHARE_REST)


#: The rest of :func:`share`'s cell.
SHARE_REST = """\
try:
    for _ in range(limit // 16):
        block = mmap.mmap(-1, 16 << 20)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        maps.append(block)
except OSError as exc:
    stop = errno.errorcode[exc.errno]
held = 16 * len(maps)
for block in maps:
    block.close()
del maps
libc = ctypes.CDLL(None, use_errno=True)
def memfd():
    os.close(os.memfd_create('nskernel-test'))
def shmget():
    segment = libc.shmget(0, 1 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
    if segment < 0:
        raise OSError(ctypes.get_errno(), 'shmget')
    libc.shmctl(segment, 0, None)  # IPC_RMID
def met(call):
    try:
        call()
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return 'made'
print('shared', held, stop, met(memfd), met(shmget))
"""


def shared(done: kernels.Execution) -> tuple[int, str, str, str]:
    line = next(line for line in done.stdout.splitlines() if line.startswith("shared"))
    _word, held, stop, memfd, shmget = line.split()
    return int(held), stop, memfd, shmget


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


def test_a_cells_shared_memory_counts_and_memfd_and_shmget_are_refused(kernel):
    done = kernels.execute(kernel, "%%isolate --pid --memory 64M\n" + share(256), timeout=60)
    if "memory limit 64 MiB exceeded" in done.stderr:
        return  # as root the cell's cgroup ended it first: the kernel lives on
    held, stop, memfd, shmget = shared(done)
    assert held <= 64 and stop == "ENOMEM", done
    assert (memfd, shmget) == ("EPERM", "EPERM"), done
    assert kernels.execute(kernel, "1 + 1", timeout=10).value == 2
    # Without --memory both calls work (the filter belongs to the limit).
    free = kernels.execute(kernel, "%%isolate --pid\n" + share(32), timeout=60)
    assert shared(free) == (32, "None", "made", "made"), free


@pytest.mark.skipif(not IS_ROOT, reason="the rootless half of a root run (as a user the "
                                        "cell test above runs rootless)")
def test_rootless_a_locked_kernels_dev_shm_holds_no_more_than_its_memory(unprivileged_user):
    """The hub's kind of kernel, rootless: 256 MiB, read-only host, seccomp. Its /dev/shm
    and its cells' hold no more than their limits; the kernel lives on."""
    name = write_kernel("isolated-locked-256m", LOCKED, Limits(memory=256 << 20))
    cells = [fill("/dev/shm/nskernel-fill", 320), fill("/tmp/nskernel-fill", 320),
             "%%isolate --ipc --memory 64M\n" + fill("/dev/shm/nskernel-fill", 128), "1 + 1",
             share(704), "1 + 1"]
    done = as_user(unprivileged_user, [sys.executable, PROBE, name, *cells], timeout=300)
    assert done.returncode == 0, done.stderr
    results = [kernels.Execution(**r) for r in json.loads(done.stdout.splitlines()[-1])
               ["results"]]
    for result, most in zip(results[:3], (256, 256, 64), strict=True):
        count, stop = written(result)
        assert count <= most and stop == "ENOSPC", result
    assert results[3].result == "2"
    held, stop, memfd, shmget = shared(results[4])
    assert held < 256 and stop == "ENOMEM" and (memfd, shmget) == ("EPERM", "EPERM"), results[4]
    assert results[5].result == "2"


def test_doctor_says_in_one_line_what_bounds_memory_without_a_cgroup():
    line = doctor.MEMORY_WITHOUT_CGROUP
    assert "\n" not in line and "Delegate=yes" in line and "tmpfs" in line
    checks = {check.namespace: check for check in doctor.limit_checks()}
    if not checks["memory"].ok:
        assert line in checks["memory"].detail
