"""A hostile kernel against its own cgroup: it tries to raise memory.max, pids.max and cpu.max
(v1: memory.limit_in_bytes, pids.max, cpu.cfs_quota_us) with values the files accept, to
unmount or remount the read-only binds over them, and to move itself out. Rootless in a
delegated cgroup (systemd's Delegate=yes), the kernel is the very user who made those files,
so only the mounts made before its own user namespace hold them; root, they are root's.

Without --seccomp, so that its mount calls reach the mount namespace's locks, not the filter.
Wherever this user's kernels get no cgroup (rootless on a v1 machine), the same attempts meet
cgroups it may not write, and the kernel stays where it was.
"""

from __future__ import annotations

import os

import pytest
from conftest import kernels_get_cgroups, write_kernel
from kernels import execute

from nskernel.isolation import Isolation
from nskernel.limits import Limits
from nskernel.locks import cgroups

HAS_CPU = "cpu" in cgroups.plan().places
LIMITS = Limits(memory=512 << 20, pids=64, cpus=1.0 if HAS_CPU else None)
SPEC = Isolation.kernel_default().__class__(pid=True, net=True, mount=True, uts=True, ipc=True,
                                            hostname="hostile", seccomp=False)
#: Values each file accepts, every one of them looser than the kernel's limits.
LOOSER = {"memory.max": "max", "memory.swap.max": "max", "memory.high": "max",
          "pids.max": "max", "cpu.max": "max 100000", "memory.limit_in_bytes": "-1",
          "memory.memsw.limit_in_bytes": "-1", "cpu.cfs_quota_us": "-1"}
HOSTILE = f"""
import ctypes, errno, os
from nskernel.locks import cgroups
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND, MNT_DETACH = 32, 4096, 2
def write(path, value):
    try:
        with open(path, 'w') as handle:
            handle.write(value)
        return 'ok'
    except OSError as exc:
        return errno.errorcode[exc.errno]
def call(function, *args):
    return 'ok' if function(*args) == 0 else errno.errorcode[ctypes.get_errno()]
own = sorted({{h.own for h in cgroups.hierarchies()}})
looser = {LOOSER!r}
tried = {{}}
for directory in own:
    for name, value in looser.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            continue
        first = write(path, value)
        unmounted = call(libc.umount2, path.encode(), MNT_DETACH)
        remounted = call(libc.mount, None, path.encode(), None, MS_REMOUNT | MS_BIND, None)
        tried[path] = (first, unmounted, remounted, write(path, value))
leave = {{}}
for directory in own:
    for target in (os.path.dirname(directory), os.path.join(os.path.dirname(directory),
                   cgroups.KERNEL_LEAF), '/sys/fs/cgroup'):
        leave[target] = write(os.path.join(target, 'cgroup.procs'), '0')
(own, tried, leave, open('/proc/self/cgroup').read())
"""


def read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


@pytest.fixture
def hostile():
    from kernels import start, stop

    manager, client = start(write_kernel("isolated-hostile-cgroup", SPEC, LIMITS))
    try:
        yield client
    finally:
        stop(manager, client)


def test_a_kernel_cannot_raise_its_cgroup_limits_or_move_out(hostile):
    before = execute(hostile, "open('/proc/self/cgroup').read()").value
    own, tried, leave, after = execute(hostile, HOSTILE, timeout=120).value
    assert after == before, (before, after)  # still in the cgroups it started in
    for path, results in tried.items():
        assert "ok" not in (results[0], results[3]), (path, results)
    for target, result in leave.items():
        assert result != "ok", (target, result)
    if not kernels_get_cgroups():
        return  # no cgroup of its own: it met only cgroups it may not write
    # Read on the host: every limit is still the launcher's.
    kernel_dirs = [d for d in own if os.path.basename(d).endswith(".kernel")]
    assert kernel_dirs, own
    seen = {}
    for directory in kernel_dirs:
        for name in ("memory.max", "memory.limit_in_bytes", "pids.max", "cpu.max",
                     "cpu.cfs_quota_us"):
            if os.path.exists(os.path.join(directory, name)):
                seen[name] = read(os.path.join(directory, name))
    assert seen.get("memory.max", seen.get("memory.limit_in_bytes")) == str(512 << 20), seen
    assert seen["pids.max"] == "64", seen
    if HAS_CPU:
        assert seen.get("cpu.max", "100000 100000") == "100000 100000", seen
        assert seen.get("cpu.cfs_quota_us", "100000") == "100000", seen
    assert any(path.endswith(("memory.max", "memory.limit_in_bytes")) for path in tried), tried
