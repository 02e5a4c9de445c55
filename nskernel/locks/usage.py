"""What a cell used (wall and CPU time, peak memory, most processes at once), as
``--stats`` and ``nskernel.isolate(..., stats=True)`` report it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """What a cell used: as ioi/isolate's meta file says it, on one line."""

    wall: float
    cpu: float | None
    memory_peak: int | None
    pids_peak: int | None

    def __str__(self) -> str:
        parts = [f"wall {self.wall:.3f} s"]
        parts.append("cpu ?" if self.cpu is None else f"cpu {self.cpu:.3f} s")
        parts.append("memory peak ?" if self.memory_peak is None
                     else f"memory peak {self.memory_peak / (1 << 20):.1f} MiB")
        parts.append("processes ?" if self.pids_peak is None
                     else f"processes {self.pids_peak}")
        return "stats: " + ", ".join(parts)


@dataclass(frozen=True)
class Ran:
    """What ``nskernel.isolate(..., stats=True)`` returns: the value and the usage."""

    value: object
    usage: Usage
