"""The files of cgroupfs, read and written as cgroups do (below :mod:`nskernel.locks.cgroups`).

Reading a cgroup file that is not there (a controller this hierarchy lacks, a cgroup gone)
gives ""; writing one raises. Also the few steps that are about directories rather than our
groups: removing a tree deepest first, passing a controller down, and emptying a delegated
v2 cgroup into its leaf.
"""

from __future__ import annotations

import contextlib
import os

#: The leaf child of a v2 cgroup of ours that holds its processes (see the module's doc);
#: not named with PREFIX: no owner, never taken for one of ours by ``nskernel clean``.
KERNEL_LEAF = "nskernel-leaf"


class CgroupError(RuntimeError):
    """A cgroup could not be made or joined; the message is one line."""


def _read(directory: str, name: str) -> str:
    try:
        with open(os.path.join(directory, name)) as handle:
            return handle.read()
    except OSError:
        return ""


def _cpu_seconds(directory: str) -> float | None:
    """CPU time of a cgroup's processes: v1's cpuacct.usage (ns), or v2's cpu.stat."""
    text = _read(directory, "cpuacct.usage").strip()
    if text:
        return int(text) / 1e9
    for line in _read(directory, "cpu.stat").splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    return None


def _write(directory: str, name: str, value: str) -> None:
    with open(os.path.join(directory, name), "w") as handle:
        handle.write(value)


def _oom_kill_count(text: str) -> int:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def _remove_tree(directory: str) -> None:
    """rmdir a cgroup and the cgroups below it, deepest first (a cell may make its own below
    its leaf, in its cgroup namespace)."""
    for below, dirs, _files in os.walk(directory, topdown=False):
        for name in dirs:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(os.path.join(below, name))
    os.rmdir(directory)


def _enable(own: str, controller: str) -> None:
    """Pass ``controller`` to our v2 cgroup's children, if it does not already."""
    if controller not in _read(own, "cgroup.subtree_control").split():
        _write(own, "cgroup.subtree_control", f"+{controller}")


def make_room(own: str) -> None:
    """Move every process of a delegated v2 cgroup into its :data:`KERNEL_LEAF` (made if need be),
    so that it may pass controllers to children of ours: what systemd asks of whoever gets
    a delegated cgroup. Nothing to do once it holds none."""
    leaf = os.path.join(own, KERNEL_LEAF)
    for _ in range(100):  # a process forked while we move: the next pass takes it
        found = _read(own, "cgroup.procs").split()
        if not found:
            return
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):  # gone meanwhile
                _write(leaf, "cgroup.procs", pid)
    raise CgroupError(f"cannot empty cgroup {own} into {KERNEL_LEAF}: it keeps forking")


def enter_namespace() -> None:
    """A cgroup namespace of the calling process's own, rooted where it is now (a cell, in
    its leaf): a cgroup filesystem it mounts shows nothing above, and /proc/self/cgroup
    names no place of the host's."""
    from nskernel import _syscalls

    _syscalls.unshare(_syscalls.CLONE_NEWCGROUP)
