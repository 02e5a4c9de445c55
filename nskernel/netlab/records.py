"""What a lab made, written down, so that only that is ever removed.

Each lab keeps a record under /run/nskernel/labs: its owner (a process, by pid and start
time), the namespaces it made (with their cookies, which no later namespace has, and their
inodes) and the interfaces it made in the kernel's own namespace (with their indexes, and
marked with an alias naming the owner). `nskernel clean` removes, for owners that died (or
are zombies), only what a record names and that still is what was recorded: the opposite of
cleaning by name pattern. A record it cannot read as one (a name that is not a namespace
name, say ``../x``) is refused whole, and kept for a person to look at.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
from typing import Any

from pyroute2 import IPRoute

from nskernel.cell.sandbox import RUN_DIR
from nskernel.netlab import _rtnl
from nskernel.netlab.netns import KERNEL_NS, LabError, NetnsId, check_ns_name, remove_if_same
from nskernel.owners import owner_alive

RECORDS_DIR = f"{RUN_DIR}/labs"


def owner_alias(owner: str) -> str:
    """The alias that marks an interface in the kernel's namespace as the owner's."""
    return f"nskernel:{owner}"


class RecordError(ValueError):
    """A record that is not one a lab wrote; the message says what is wrong in it."""


_OWNER = re.compile(r"^[0-9]{1,10}-[0-9]{1,20}$")


def save(path: str, owner: str, netns: dict[str, NetnsId], links: dict[str, int]) -> None:
    """Write (or, when nothing is left, remove) a lab's record, atomically."""
    if not netns and not links:
        if os.path.exists(path):
            os.unlink(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"owner": owner, "links": links,
              "netns": {name: {"cookie": made.cookie, "inode": made.inode}
                        for name, made in netns.items()},
              "kernel_netns": os.stat("/proc/self/ns/net").st_ino}
    temporary = path + ".new"
    with open(temporary, "w") as handle:
        json.dump(record, handle)
    os.replace(temporary, path)


def read(path: str) -> dict[str, Any]:
    """A record as :func:`save` wrote it, every name in it checked: RecordError if it is not
    one (OSError and ValueError where it cannot be read as JSON at all)."""
    with open(path) as handle:
        record = json.load(handle)
    if not isinstance(record, dict) or not _OWNER.match(str(record.get("owner"))):
        raise RecordError("no owner PID-STARTTIME")
    netns, links = record.get("netns", {}), record.get("links", {})
    if not isinstance(netns, dict) or not isinstance(links, dict):
        raise RecordError("netns and links are not tables")
    made = {}
    for name, entry in netns.items():
        try:
            if check_ns_name(name) == KERNEL_NS:
                raise LabError(f"{KERNEL_NS!r} is the kernel's own namespace")
        except LabError as exc:
            raise RecordError(str(exc)) from None
        made[name] = _netns_id(name, entry)
    for ifname, index in links.items():
        if not 0 < len(ifname.encode()) <= 15 or not isinstance(index, int):
            raise RecordError(f"bad link {ifname[:20]!r}: {index!r}")
    return {**record, "netns": made}


def _netns_id(name: str, entry: Any) -> NetnsId:
    """A recorded namespace; a bare inode (what records held before cookies) has none."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        return NetnsId(entry, None)
    if (isinstance(entry, dict) and isinstance(entry.get("inode"), int)
            and (entry.get("cookie") is None or isinstance(entry["cookie"], int))):
        return NetnsId(entry["inode"], entry.get("cookie"))
    raise RecordError(f"netns {name}: bad identity {str(entry)[:40]!r}")


def remove_recorded(netns: dict[str, NetnsId], links: dict[str, int], owner: str,
                    inode_will_do: bool = True) -> list[str]:
    """Remove recorded namespaces and kernel-namespace links that are still what was recorded.

    Usable from any thread and at interpreter exit: namespaces need only umount/unlink (and
    the thread enters each a moment to read its cookie), and links a netlink socket in the
    calling thread's (the kernel's) namespace. ``inode_will_do``: see
    :func:`nskernel.netlab.netns.remove_if_same` (a live lab removing its own).
    """
    removed = []
    if links:  # first: while their peers' namespaces still hold them, they are listed here
        with IPRoute(use_event_loop=asyncio.new_event_loop(), groups=0) as ipr:
            for ifname, index in links.items():
                found = (ipr.get_links(index)[0] if _rtnl.interface_index(ipr, ifname) == index
                         else None)
                if found is not None and found.get("ifalias") == owner_alias(owner):
                    ipr.link("del", index=index)
                    removed.append(f"link {ifname}")
    # Each umount waits out an RCU grace period, and a namespace whose name goes is destroyed
    # by the kernel meanwhile: a destruction in progress (the namespace of a bridge with a
    # thousand ports) stretched every grace period after it, so removing N cost more per
    # namespace the larger N (0.1 ms each at 100, 0.4 at 1000). Held open until the end, the
    # namespaces removed are destroyed afterwards, together, in one batch of the kernel's.
    held: list[int] = []
    at_most = _held_at_most()
    try:
        for name, made in netns.items():
            if remove_if_same(name, made, inode_will_do=inode_will_do, keep=held):
                removed.append(f"netns {name}")
            if len(held) >= at_most:
                _close_all(held)
    finally:
        _close_all(held)
    return removed


def _held_at_most() -> int:
    """How many removed namespaces :func:`remove_recorded` holds open at once: a quarter of
    the process's file limit, so that the kernel's other threads never run out."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 4096 if soft == resource.RLIM_INFINITY else max(16, min(4096, soft // 4))


def _close_all(fds: list[int]) -> None:
    while fds:
        os.close(fds.pop())


def clean(records_dir: str = RECORDS_DIR) -> tuple[list[str], list[str]]:
    """``nskernel clean``: remove what labs of kernels that died left behind, nothing else.
    Returns what was removed, and the records refused (with why): those stay."""
    removed: list[str] = []
    refused: list[str] = []
    try:
        entries = sorted(os.listdir(records_dir))
    except FileNotFoundError:
        return removed, refused
    for entry in entries:
        path = os.path.join(records_dir, entry)
        try:
            record = read(path)
        except RecordError as exc:
            refused.append(f"record {path} (left as it is): {exc}")
            continue
        except (OSError, ValueError):
            continue
        if owner_alive(record["owner"]):
            continue
        same_netns = record.get("kernel_netns") == os.stat("/proc/self/ns/net").st_ino
        links = record.get("links", {}) if same_netns else {}
        # Never by inode: the next namespace of a removed name gets the same one at once.
        removed += remove_recorded(record["netns"], links, record["owner"], inode_will_do=False)
        os.unlink(path)
    return removed, refused
