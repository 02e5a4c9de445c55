"""Which namespaces a process is in, compared with the host's (``%nsinfo``).

The Isolated Python kernel's launcher records the host's namespaces in ``NSKERNEL_HOST_NS``
before it isolates, since from inside the kernel's pid namespace no host process is visible.
In any other kernel the reference is the kernel's parent process (the Jupyter server).
"""

from __future__ import annotations

import os

from nskernel.display import Table

HOST_NS_ENV = "NSKERNEL_HOST_NS"
#: The Isolated Python kernel's limits, as its flags (set by its launcher).
LIMITS_ENV = "NSKERNEL_LIMITS"
TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def namespaces_of(pid: int | str = "self") -> dict[str, int]:
    """{type: inode} from /proc/PID/ns (types the kernel does not have are left out)."""
    found = {}
    for name in TYPES:
        try:
            link = os.readlink(f"/proc/{pid}/ns/{name}")
        except FileNotFoundError:
            continue
        except PermissionError:
            raise PermissionError(f"cannot read the namespaces of process {pid}: "
                                  "it belongs to another user") from None
        found[name] = int(link.split("[")[1].rstrip("]"))
    return found


def encode_host_namespaces() -> str:
    """"net:4026531840,..." of the calling process, for HOST_NS_ENV."""
    return ",".join(f"{name}:{inode}" for name, inode in namespaces_of().items())


def reference_namespaces() -> tuple[str, str, dict[str, int]]:
    """(column label, longer description, {type: inode}) of what the kernel is compared with."""
    recorded = os.environ.get(HOST_NS_ENV)
    if recorded:
        pairs = (item.split(":") for item in recorded.split(","))
        return "host", "the host", {name: int(inode) for name, inode in pairs}
    parent = os.getppid()
    return "parent", f"its parent (pid {parent})", namespaces_of(parent)


def nsinfo(pid: int | None = None) -> Table:
    """A table: namespace type, inode here, inode of the reference, shared or private."""
    if pid is not None and not os.path.exists(f"/proc/{pid}"):
        raise ProcessLookupError(f"no process {pid} in this pid namespace")
    mine = namespaces_of(pid if pid is not None else "self")
    label, description, reference = reference_namespaces()
    rows = []
    for name, inode in mine.items():
        other = reference.get(name)
        state = "?" if other is None else "shared" if other == inode else "private"
        rows.append([name, inode, "" if other is None else other, state])
    who = f"process {pid}" if pid is not None else f"this kernel (pid {os.getpid()})"
    # PIDs only in the title: column widths stay the same from run to run (diffable output)
    return Table(["namespace", "process" if pid is not None else "kernel", label, ""], rows,
                 title=f"Namespaces of {who} compared with {description}")


def limits_table() -> Table | None:
    """The kernel's limits (from its launcher) beside what it uses now; None without any."""
    recorded = os.environ.get(LIMITS_ENV)
    if not recorded:
        return None
    import argparse

    from nskernel import limits
    from nskernel.locks import cgroup_cleanup

    parser = argparse.ArgumentParser()
    limits.add_arguments(parser, for_kernel=True)
    kernel_limits = limits.from_args(parser.parse_args(recorded.split()))
    use = cgroup_cleanup.own_use()
    enforced = "the kernel's cgroup and rlimits" if use else "rlimits (no cgroup here)"
    rows = [[name, value, use.get(name, "")] for name, value in kernel_limits.describe()]
    return Table(["limit", "value", "use"], rows,
                 title=f"Limits of this kernel and all it starts, held by {enforced}")
