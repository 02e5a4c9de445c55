"""Resource limits for the body of an isolated cell, as rlimits.

Set in the process that runs the body, after its namespaces are made, so they bind the body
and everything it starts (children inherit rlimits):

- ``cpu_time``: CPU seconds per process (RLIMIT_CPU); past it the process gets SIGXCPU and
  the cell ends with one line naming the limit.
- ``memory``: address space per process (RLIMIT_AS); past it allocations fail, which Python
  raises as ``MemoryError``. A Python body is a fork of the kernel and starts with the
  kernel's address space (hundreds of MB, most of it never touched): it may add ``memory``
  to that. A command it executes starts afresh and gets ``memory`` in all.
- ``fsize``: the largest file a process may write (RLIMIT_FSIZE); past it writes fail with
  EFBIG (Python ignores SIGXFSZ).
- ``nofile``: open files per process (RLIMIT_NOFILE); past it EMFILE. A Python body
  inherits the kernel's open files (sockets, pipes: dozens) and may open ``nofile`` more.
- ``pids``: processes at once (RLIMIT_NPROC); past it ``fork`` fails with EAGAIN. Linux
  counts a user's processes per user namespace, and the cell gets one of its own, so the
  count is the cell's alone.

These bind each process (``pids`` the whole tree already); where this process may make
cgroups (see :mod:`nskernel.locks.cgroups`), ``memory`` and ``cpu_time`` bind the whole tree as
well, and ``cpus`` (a share of the CPUs, which no rlimit can say) becomes possible. A whole
kernel (``nskernel install --memory``) uses RLIMIT_DATA from its start and RLIMIT_AS once
it is up: see :meth:`Limits.apply` and :meth:`Limits.bound_new_mappings`. Under ``memory``
the calls that make memory no rlimit counts (a memfd's pages, SysV segments) are refused:
see :data:`nskernel.locks.seccomp.UNACCOUNTED_MEMORY`.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
from dataclasses import dataclass

_SIZE = re.compile(r"^([0-9]{1,15})([kKmMgG]?)$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class LimitError(ValueError):
    """A bad limit; the message is one line saying what to give instead."""


#: The largest size a limit takes (1 PiB): more than any machine has, and far below what an
#: rlimit holds (Python passes it as a signed 64-bit number: OverflowError past that).
MAX_SIZE = 1 << 50
#: The largest count (CPU seconds: 34 years; open files; processes at once).
MAX_COUNT = 1 << 30


#: The least a whole kernel may be given: ipykernel itself needs about this much.
KERNEL_MINIMUM = {"memory": 256 << 20, "pids": 32}


def add_arguments(parser: argparse.ArgumentParser, *, for_kernel: bool = False) -> None:
    """The limit flags, shared by %%isolate and (without --cpu-time, which would end it)
    by the kernel's launcher and ``nskernel install``."""
    whom = "the kernel and all it starts" if for_kernel else "the whole cell"
    group = parser.add_argument_group(
        f"limits (per process, and for {whom} where cgroups may be made)")
    group.add_argument("--memory", metavar="SIZE", help="memory, e.g. 64M, 2G: past it "
                       "allocations fail (MemoryError)")
    group.add_argument("--pids", type=int, metavar="N", help="processes at once: past it fork "
                       "fails with EAGAIN")
    if not for_kernel:
        group.add_argument("--cpu-time", type=int, metavar="S", help="CPU seconds: past them "
                           "the cell ends")
    group.add_argument("--cpus", type=float, metavar="F", help="share of the CPUs, e.g. 0.5 "
                       "(needs a cgroup we may make)")
    group.add_argument("--fsize", metavar="SIZE", help="largest file written (EFBIG past it)")
    group.add_argument("--nofile", type=int, metavar="N", help="files it may open beyond those "
                       "inherited (EMFILE past it)")


def from_args(args: argparse.Namespace, *, for_kernel: bool = False) -> Limits:
    """The :class:`Limits` that :func:`add_arguments` flags ask for (LimitError if bad)."""
    limits = Limits(cpu_time=getattr(args, "cpu_time", None), nofile=args.nofile,
                    pids=args.pids, cpus=args.cpus,
                    memory=None if args.memory is None else parse_size(args.memory, "--memory"),
                    fsize=None if args.fsize is None else parse_size(args.fsize, "--fsize"))
    if for_kernel:
        for name, least in KERNEL_MINIMUM.items():
            value = getattr(limits, name)
            if value is not None and value < least:
                shown = size_text(least) if name == "memory" else least
                raise LimitError(f"--{name}: a kernel needs at least {shown}")
    return limits


def parse_size(text: str, what: str) -> int:
    """'64M' -> bytes (k, m, g: powers of 1024)."""
    match = _SIZE.match(text)
    if not match or int(match.group(1)) == 0:
        raise LimitError(f"{what} {text!r}: give a size above 0, as 64M or 2G")
    size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if size > MAX_SIZE:
        raise LimitError(f"{what} {text!r}: give a size up to {size_flag(MAX_SIZE)}, as 64M "
                         "or 2G")
    return size


def _in_largest_unit(size: int) -> tuple[int, str]:
    """(count, "G", "M", "K" or "") for the largest binary unit that divides ``size``."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size % factor == 0:
            return size // factor, unit
    return size, ""


def size_flag(size: int) -> str:
    """Bytes as :func:`parse_size` reads them: 67108864 -> '64M'."""
    count, unit = _in_largest_unit(size)
    return f"{count}{unit}"


def size_text(size: int) -> str:
    """Bytes as a person reads them: 67108864 -> '64 MiB'."""
    count, unit = _in_largest_unit(size)
    return f"{count} {unit}iB" if unit else f"{count} bytes"


@dataclass(frozen=True)
class Limits:
    cpu_time: int | None = None
    memory: int | None = None
    fsize: int | None = None
    nofile: int | None = None
    pids: int | None = None
    cpus: float | None = None

    def __post_init__(self) -> None:
        if self.cpus is not None and not 0.01 <= self.cpus <= 1024:
            raise LimitError(f"--cpus {self.cpus}: give a share of CPUs from 0.01 up, as 0.5 "
                             "or 2")
        for name, most, unit in (("cpu_time", MAX_COUNT, ""), ("nofile", MAX_COUNT, ""),
                                 ("pids", MAX_COUNT, ""), ("memory", MAX_SIZE, " bytes"),
                                 ("fsize", MAX_SIZE, " bytes")):
            value = getattr(self, name)
            if value is None:
                continue
            flag = f"--{name.replace('_', '-')} {value!r}"
            if not isinstance(value, int) or isinstance(value, bool):
                raise LimitError(f"{flag}: give a whole number{unit}")
            if value < 1:
                raise LimitError(f"{flag}: give a whole number above 0")
            if value > most:  # an rlimit or a cgroup file would overflow, or it means nothing
                raise LimitError(f"{flag}: give a whole number{unit} up to {most}")

    def __bool__(self) -> bool:
        return any(value is not None for value in vars(self).values())

    def to_argv(self) -> list[str]:
        """The flags :func:`from_args` turns back into these limits."""
        argv = []
        for name, value in vars(self).items():
            if value is not None:
                argv += [f"--{name.replace('_', '-')}", f"{value:g}" if name == "cpus"
                         else str(value)]
        return argv

    def describe(self) -> list[tuple[str, str]]:
        """(limit, value) pairs as a person reads them."""
        shown = []
        for name, value in vars(self).items():
            if value is not None:
                text = (size_text(value) if name in ("memory", "fsize") else
                        f"{value:g}" if name == "cpus" else
                        f"{value} s" if name == "cpu_time" else str(value))
                shown.append((name.replace("_", " "), text))
        return shown

    @property
    def for_the_tree(self) -> bool:
        """Whether a cgroup would add to these: memory or CPU time for the whole tree, or a
        CPU share. Not ``pids``: the cell has a user namespace of its own, where the rlimit
        already counts every process of the tree (and a cgroup per cell costs an RCU grace
        period to move into)."""
        return any(value is not None for value in (self.memory, self.cpu_time, self.cpus))

    def apply(self, inherited: int = 0, inherited_fds: int = 0,
              memory_rlimit: int = resource.RLIMIT_AS) -> None:
        """Set the rlimits in the calling process, hard limits too: no way back up. CPU time
        gets one second more as its hard limit: at the soft one the kernel sends SIGXCPU,
        which says what happened (at the hard one, SIGKILL). ``inherited``: address space
        the process has already, added to ``memory``; ``inherited_fds``: the file
        descriptor numbers in use already (the limit is on numbers), added to ``nofile``.
        ``memory_rlimit``: RLIMIT_AS, or RLIMIT_DATA for a whole kernel (writable memory
        only: its threads reserve hundreds of MB of address space they never use). A limit
        above one set before (by a limited kernel, for its cells) stays at that one."""
        for kind, value, hard in ((resource.RLIMIT_CPU, self.cpu_time, 1),
                                  (memory_rlimit, self.memory and self.memory + inherited, 0),
                                  (resource.RLIMIT_FSIZE, self.fsize, 0),
                                  (resource.RLIMIT_NOFILE,
                                   self.nofile and self.nofile + inherited_fds, 0),
                                  (resource.RLIMIT_NPROC, self.pids, 0)):
            if value is not None:
                _soft, ceiling = resource.getrlimit(kind)
                if ceiling != resource.RLIM_INFINITY:
                    value, hard = min(value, ceiling), min(hard, ceiling - min(value, ceiling))
                resource.setrlimit(kind, (value, value + hard))

    def bound_new_mappings(self) -> None:
        """A whole kernel's ``memory``, for shared memory too (call it once the kernel is up).

        RLIMIT_DATA (see :meth:`apply`) counts private writable memory only: a shared mapping
        passed it. RLIMIT_AS counts every mapping, and also what the kernel reserved and
        never touches (thread stacks): so it is set here, at the address space now plus what
        ``memory`` leaves over the memory in use now, less an eighth of it for what no
        mapping shows (page tables, buffers), so that a cgroup of the same size (root) is not
        reached first: past it the cell gets an error instead of the kernel being killed."""
        if self.memory is None:
            return
        budget = max(self.memory - self.resident() - self.memory // 8, 0)
        value = self.address_space() + budget
        _soft, ceiling = resource.getrlimit(resource.RLIMIT_AS)
        if ceiling != resource.RLIM_INFINITY:
            value = min(value, ceiling)
        resource.setrlimit(resource.RLIMIT_AS, (value, value))

    @staticmethod
    def fds_in_use() -> int:
        """One more than the highest file descriptor the calling process has open."""
        return max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1

    @staticmethod
    def address_space() -> int:
        """The calling process's address space now, in bytes."""
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * resource.getpagesize()

    @staticmethod
    def resident() -> int:
        """The calling process's resident memory now, in bytes."""
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()

    def explain_death(self, signum: int) -> str | None:
        """What a death by ``signum`` means under these limits, if anything."""
        if signum == signal.SIGXCPU and self.cpu_time is not None:
            return self.cpu_time_exceeded()
        if signum == signal.SIGXFSZ and self.fsize is not None:
            return f"file size limit of {size_text(self.fsize)} exceeded"
        return None

    def memory_exceeded(self) -> str:
        return f"memory limit {size_text(self.memory or 0)} exceeded"

    def cpu_time_exceeded(self) -> str:
        return f"CPU time limit of {self.cpu_time} s exceeded"
