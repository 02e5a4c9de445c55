"""Limits and accounting for a whole process tree: cgroups made as children of our own.

rlimits (see :mod:`nskernel.limits`) bind one process each; a cgroup binds a cell or a
kernel with everything it starts, daemons included, and tells afterwards what they used.

The rules we keep, wherever we run (a systemd service with ``Delegate=yes``, a container, a
root shell, a user's session):

- only ever create *children* of the calling process's own cgroup, in each hierarchy; never
  move another process, never write a parent's files;
- name them ``nskernel.OWNER.N`` (OWNER: pid and start time of the process that made them,
  see :func:`nskernel.owners.owner_id`), and remove them when done; ``nskernel clean``
  removes those whose owner died, nothing else;
- cgroup v2 first (most machines are pure v2 now); v1 controllers (memory, pids, cpu,
  cpuacct) where that is what the machine has; a v2 child without controllers (a v1 "hybrid"
  machine) still kills a whole tree at once (``cgroup.kill``) and counts its CPU time.

Where our own cgroup may not be written (a rootless user without delegation, the Isolated
Python kernel without a delegated cgroup) :func:`available` says why in one line, and the
caller falls back on rlimits.

cgroup v2 lets a cgroup pass controllers to its children only while it holds no process
itself ("no internal processes"). So a cgroup of ours that holds processes and has children
with limits keeps those processes in a leaf child, :data:`KERNEL_LEAF` (a kernel's cgroup keeps the
kernel there), and a cgroup delegated to us that holds processes (Jupyter started with
``systemd-run --scope -p Delegate=yes``) gets its processes moved into such a leaf when the
first cgroup is made in it: systemd's rules for a delegated subtree, and the only moves we
make. Where a process sits in a leaf, its "own" cgroup is the leaf's parent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass, field

from nskernel.locks.cgroupfs import (  # noqa: F401 - names callers take from here
    KERNEL_LEAF,
    CgroupError,
    _cpu_seconds,
    _enable,
    _oom_kill_count,
    _read,
    _remove_tree,
    _write,
    enter_namespace,
    make_room,
)

#: What a limit needs, and what we can read back (v1 keeps CPU time in cpuacct).
LIMIT_CONTROLLERS = ("memory", "pids", "cpu")
PREFIX = "nskernel."
#: The period of a CPU quota, in microseconds (the kernel's default).
CPU_PERIOD = 100_000
#: A cell's processes live in this child of its cgroup, and the cell's cgroup namespace is
#: rooted there: the limits are the parent's, which no cgroup mount the cell can make shows.
LEAF = "body"
_V2 = "v2"


@dataclass(frozen=True)
class Hierarchy:
    """One mounted hierarchy: v2 (``controllers`` those our cgroup offers its children), or
    v1 (``controllers`` those it is mounted with); ``own``: our cgroup's directory in it."""

    version: int
    controllers: frozenset[str]
    own: str


def _proc(pid: int | str) -> str:
    return f"/proc/{pid}"


def hierarchies(pid: int | str = "self") -> list[Hierarchy]:
    """The hierarchies the process is in, as this mount namespace shows them."""
    paths: dict[str, str] = {}
    with open(f"{_proc(pid)}/cgroup") as handle:
        for line in handle:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            paths[controllers or _V2] = path
    found = []
    with open(f"{_proc(pid)}/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            dash = fields.index("-")
            fstype, options = fields[dash + 1], fields[dash + 3].split(",")
            root, point = fields[3], fields[4]
            if fstype == "cgroup2":
                key, version = _V2, 2
            elif fstype == "cgroup":
                named = [opt for opt in options if opt in LIMIT_CONTROLLERS + ("cpuacct",)]
                key = next((k for k in paths if k != _V2 and set(k.split(",")) == set(named)
                            and named), None)
                version = 1
            else:
                continue
            path = paths.get(key) if key else None
            if path is None or not (path + "/").startswith(root.rstrip("/") + "/"):
                continue
            own = os.path.join(point, path[len(root.rstrip("/")):].lstrip("/")).rstrip("/")
            if version == 2 and os.path.basename(own) == KERNEL_LEAF:
                own = os.path.dirname(own)  # the leaf only holds our processes
            if version == 2:
                controllers = frozenset(_read(own, "cgroup.controllers").split())
            else:
                controllers = frozenset(named)
            if any(h.own == own for h in found):
                continue
            found.append(Hierarchy(version, controllers, own))
            paths.pop(key)
    return found


@dataclass(frozen=True)
class Plan:
    """Where each job goes: {"memory": dir, "pids": dir, "cpu": dir, "cpuacct": dir,
    "kill": dir} (base directories: our own cgroups), and why a missing one is missing."""

    places: dict[str, Hierarchy]
    missing: dict[str, str]
    #: A v2 cgroup delegated to us that still holds processes: moved into its KERNEL_LEAF (see
    #: :func:`make_room`) before the first cgroup is made in it.
    crowded: Hierarchy | None = None


def plan(hierarchy_list: list[Hierarchy] | None = None) -> Plan:
    """Which of our cgroups serves what. A v2 controller counts if our cgroup passes it to
    its children already, or could (it holds no process itself); v1 if we may write there."""
    found = hierarchies() if hierarchy_list is None else hierarchy_list
    places: dict[str, Hierarchy] = {}
    missing: dict[str, str] = {}
    crowded = None
    v2 = next((h for h in found if h.version == 2), None)
    if v2 is not None and os.access(v2.own, os.W_OK):
        places["kill"] = places["cpuacct"] = v2
        enabled = set(_read(v2.own, "cgroup.subtree_control").split())
        empty = not _read(v2.own, "cgroup.procs").strip()
        if not empty and v2.controllers & set(LIMIT_CONTROLLERS) and delegated(v2.own):
            empty, crowded = True, v2  # its processes will move into its leaf
        for name in LIMIT_CONTROLLERS:
            if name in enabled or (name in v2.controllers and empty):
                places[name] = v2
    for hierarchy in found:
        if hierarchy.version != 1:
            continue
        for name in hierarchy.controllers:
            # v1 wins only for CPU time on a hybrid machine: a thread may part there (see
            # nskernel.locks.parking), and v2 counts CPU time without any controller anyway.
            if name in places and not (name == "cpuacct" and places[name].version == 2):
                continue
            if os.access(hierarchy.own, os.W_OK):
                places[name] = hierarchy
            else:
                missing.setdefault(name, f"cgroup {hierarchy.own} is not writable by uid "
                                         f"{os.geteuid()}")
    for name in LIMIT_CONTROLLERS:
        if name not in places and name not in missing:
            if v2 is not None and not os.access(v2.own, os.W_OK):
                missing[name] = (f"cgroup {v2.own} is not writable by uid {os.geteuid()} "
                                 "(no delegated cgroup)")
            elif v2 is not None and name in v2.controllers:
                missing[name] = (f"cgroup {v2.own} holds processes, so its children cannot "
                                 f"get the {name} controller (start Jupyter in a cgroup of "
                                 "its own with Delegate=yes)")
            else:
                missing[name] = f"no {name} controller is mounted"
    return Plan(places, missing, crowded)


def delegated(directory: str) -> bool:
    """Whether a v2 cgroup is ours to arrange: delegated by systemd (``Delegate=yes`` marks it
    with a ``trusted.delegate`` xattr) or, for a user other than root, writable at all (only
    a delegation makes a cgroup a user's)."""
    if os.geteuid() != 0:
        return all(os.access(os.path.join(directory, name), os.W_OK)
                   for name in ("cgroup.procs", "cgroup.subtree_control"))
    try:
        return os.getxattr(directory, "trusted.delegate") == b"1"
    except OSError:
        return False


@dataclass
class Group:
    """Our child cgroups for one cell (or one kernel), one per hierarchy used.

    A cell's group has a leaf (:data:`LEAF`) in each: its processes are moved there, and the
    limits stay on the group's own directory, above. The cell's processes are the kernel's
    user on the host, and so own every cgroup the kernel makes; but a cgroup namespace
    rooted at the leaf (see :meth:`join`) shows them nothing above it, the leaf's own limits
    only add to the parent's (limits are hierarchical, in v1 and v2), and the kernel's view
    of its cgroups is hidden from the cell (see :func:`nskernel.locks.filesystem.hide_cgroups`).
    """

    name: str
    directories: dict[str, str] = field(default_factory=dict)  # job -> directory
    made: list[str] = field(default_factory=list)
    v2_jobs: set[str] = field(default_factory=set)  # jobs whose directory is cgroup v2
    leaves: dict[str, str] = field(default_factory=dict)  # job -> where a cell's processes go
    #: v2 directory -> its KERNEL_LEAF, where a kernel's processes go (with room for its
    #: cells' cgroups beside it).
    kernel_leaves: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, *, memory: int | None = None, pids: int | None = None,
               cpus: float | None = None, the_plan: Plan | None = None,
               jobs: set[str] | None = None, leaf: bool = False,
               holds_cells: bool = False) -> Group:
        """Make the cgroups and set their limits; raise :class:`CgroupError` where a limit
        asked for has no controller here. ``jobs``: only the hierarchies these need (each
        one made, joined and removed costs time), beside the limits' own; None: all of
        them (a kernel: its cells may want any). ``leaf``: a cell's group, whose processes
        live in a child of it (see the class's docstring). ``holds_cells``: a kernel's, in
        which cgroups of ours will be made: in v2 with controllers its processes go into a
        :data:`KERNEL_LEAF`, and its controllers are passed on to its children."""
        the_plan = the_plan or plan()
        wanted = {"memory": memory, "pids": pids, "cpu": cpus}
        for job, value in wanted.items():
            if value is not None and job not in the_plan.places:
                raise CgroupError(f"cannot limit {job} here: {the_plan.missing[job]}")
        if jobs is not None:
            jobs = jobs | {job for job, value in wanted.items() if value is not None}
        group = cls(name)
        try:
            if the_plan.crowded is not None:
                make_room(the_plan.crowded.own)
            for job, hierarchy in the_plan.places.items():
                if jobs is not None and job not in jobs:
                    continue
                directory = os.path.join(hierarchy.own, name)
                if directory not in group.made:
                    os.mkdir(directory)
                    group.made.append(directory)
                if hierarchy.version == 2 and job in LIMIT_CONTROLLERS:
                    _enable(hierarchy.own, job)
                group.directories[job] = directory
                if hierarchy.version == 2:
                    group.v2_jobs.add(job)
                if leaf:
                    below = os.path.join(directory, LEAF)
                    if below not in group.made:
                        os.mkdir(below)
                        group.made.append(below)
                    group.leaves[job] = below
            if holds_cells:
                group._make_kernel_leaves()
            group.set_limits(memory=memory, pids=pids, cpus=cpus)
        except OSError as exc:
            group.remove()
            raise CgroupError(f"cannot make cgroup {name}: {exc.strerror} "
                              f"({exc.filename or ''})") from None
        return group

    def _make_kernel_leaves(self) -> None:
        """In each v2 directory that has limit controllers: a KERNEL_LEAF for our processes,
        and those controllers passed on (the directory is empty yet, so v2 allows it)."""
        for directory in dict.fromkeys(self.directories[job] for job in self.v2_jobs):
            offered = set(_read(directory, "cgroup.controllers").split())
            passed = [name for name in LIMIT_CONTROLLERS if name in offered]
            if not passed:
                continue  # a v2 tree without controllers (a hybrid machine): no rule to keep
            leaf = os.path.join(directory, KERNEL_LEAF)
            os.mkdir(leaf)
            self.made.append(leaf)
            self.kernel_leaves[directory] = leaf
            for name in passed:
                _enable(directory, name)

    def set_limits(self, *, memory: int | None = None, pids: int | None = None,
                   cpus: float | None = None) -> None:
        """Write the limits into our cgroups (v2's files or v1's, as each directory has)."""
        if memory is not None:
            directory = self.directories["memory"]
            if "memory" in self.v2_jobs:
                _write(directory, "memory.max", str(memory))
                with contextlib.suppress(FileNotFoundError):
                    _write(directory, "memory.swap.max", "0")
            else:
                _write(directory, "memory.limit_in_bytes", str(memory))
                with contextlib.suppress(FileNotFoundError):  # no swap accounting
                    _write(directory, "memory.memsw.limit_in_bytes", str(memory))
        if pids is not None:
            _write(self.directories["pids"], "pids.max", str(pids))
        if cpus is not None:
            quota = max(1000, int(cpus * CPU_PERIOD))
            if "cpu" in self.v2_jobs:
                _write(self.directories["cpu"], "cpu.max", f"{quota} {CPU_PERIOD}")
            else:
                _write(self.directories["cpu"], "cpu.cfs_period_us", str(CPU_PERIOD))
                _write(self.directories["cpu"], "cpu.cfs_quota_us", str(quota))

    def _homes(self) -> list[str]:
        """Where processes go: a cell's leaves, or a kernel's directories (their leaves)."""
        if self.leaves:
            return list(dict.fromkeys(self.leaves.values()))
        return [self.kernel_leaves.get(directory, directory)
                for directory in dict.fromkeys(self.directories.values())]

    def join(self, pid: int = 0) -> None:
        """Move process ``pid`` (0: the calling one) into every one of our cgroups (their
        leaves), before it starts anything: all it starts stays inside. A cell's process
        then enters a cgroup namespace of its own (:func:`enter_namespace`), rooted there."""
        for directory in self._homes():
            _write(directory, "cgroup.procs", str(pid))

    def join_thread(self, tid: int) -> None:
        """Move one thread (v1 only: its ``tasks`` files) into every one of our cgroups."""
        for directory in self._homes():
            _write(directory, "tasks", str(tid))

    def hand_to(self, uid: int, gid: int) -> None:
        """Let ``uid`` make cgroups below ours and move its processes among them (what
        systemd's Delegate=yes does); our own limit files stay root's."""
        for directory in dict.fromkeys([*self.directories.values(),
                                        *self.kernel_leaves.values()]):
            os.chown(directory, uid, gid)
            for name in ("cgroup.procs", "tasks", "cgroup.subtree_control", "cgroup.threads"):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(os.path.join(directory, name), uid, gid)

    def pids(self) -> list[int]:
        """Every process in the group, its leaf and below (as this pid namespace numbers
        them), but ours: a thread of ours may sit in it (see nskernel.locks.parking), and v1 then
        lists us."""
        directory = (self.directories.get("kill") or self.directories.get("pids")
                     or next(iter(self.directories.values()), None))
        if directory is None:
            return []
        found = []
        for below, _dirs, _files in os.walk(directory):
            found += [int(word) for word in _read(below, "cgroup.procs").split()]
        return [pid for pid in dict.fromkeys(found) if pid != os.getpid()]

    def kill(self, wait: bool = True) -> None:
        """SIGKILL everything in the group, daemons and all, at once where v2 can. In v1,
        process by process, until none is left (``wait``), or one pass (a cell that is
        ending anyway: its pid namespace or its keeper takes the rest along)."""
        directory = self.directories.get("kill")
        if directory is not None:
            with contextlib.suppress(OSError):
                _write(directory, "cgroup.kill", "1")
                return
        for _ in range(100 if wait else 1):  # whatever forks while we walk: the next pass
            found = self.pids()
            if not found:
                return
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if wait:
                time.sleep(0.001)

    def cpu_seconds(self) -> float | None:
        directory = self.directories.get("cpuacct")
        return None if directory is None else _cpu_seconds(directory)

    def memory_peak(self) -> int | None:
        directory = self.directories.get("memory")
        if directory is None:
            return None
        text = (_read(directory, "memory.peak") or _read(directory, "memory.max_usage_in_bytes"))
        return int(text) if text.strip() else None

    def pids_peak(self) -> int | None:
        directory = self.directories.get("pids")
        text = _read(directory, "pids.peak").strip() if directory else ""
        return int(text) if text else None

    def oom_kills(self) -> int:
        """Processes the OOM killer ended in the group: v2's memory.events counts the whole
        subtree; v1 counts each cgroup's own (the leaf's, and what the cell made below)."""
        directory = self.directories.get("memory")
        if directory is None:
            return 0
        if "memory" in self.v2_jobs:
            return _oom_kill_count(_read(directory, "memory.events"))
        return sum(_oom_kill_count(_read(below, "memory.oom_control"))
                   for below, _dirs, _files in os.walk(directory))

    def remove(self) -> bool:
        """Remove our cgroups, with whatever the cell made below its leaf; False if some
        still hold exiting processes (try later)."""
        left = []
        for directory in reversed(self.made):
            try:
                _remove_tree(directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                left.append(directory)
        self.made = list(reversed(left))
        return not left
