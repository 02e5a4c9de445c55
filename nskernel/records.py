"""What a lab made, written down, so that only that is ever removed.

Each lab keeps a record under /run/nskernel/labs: its owner (a process, by pid and start
time), the namespaces it made (with their inodes) and the interfaces it made in the kernel's
own namespace (with their indexes, and marked with an alias naming the owner). `nskernel
clean` removes, for owners that died, only what a record names and that still is what was
recorded: the opposite of cleaning by name pattern.
"""

from __future__ import annotations

import asyncio
import json
import os

from pyroute2 import IPRoute

from nskernel import _rtnl
from nskernel.netns import netns_inode, remove_netns
from nskernel.owners import owner_alive
from nskernel.sandbox import RUN_DIR

RECORDS_DIR = f"{RUN_DIR}/labs"


def owner_alias(owner: str) -> str:
    """The alias that marks an interface in the kernel's namespace as the owner's."""
    return f"nskernel:{owner}"


def save(path: str, owner: str, netns: dict[str, int], links: dict[str, int]) -> None:
    """Write (or, when nothing is left, remove) a lab's record, atomically."""
    if not netns and not links:
        if os.path.exists(path):
            os.unlink(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"owner": owner, "netns": netns, "links": links,
              "kernel_netns": os.stat("/proc/self/ns/net").st_ino}
    temporary = path + ".new"
    with open(temporary, "w") as handle:
        json.dump(record, handle)
    os.replace(temporary, path)


def remove_recorded(netns: dict[str, int], links: dict[str, int], owner: str) -> list[str]:
    """Remove recorded namespaces and kernel-namespace links that are still what was recorded.

    Usable from any thread and at interpreter exit: namespaces need only umount/unlink, and
    links a netlink socket in the calling thread's (the kernel's) namespace.
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
    for name, inode in netns.items():
        if netns_inode(name) == inode:
            remove_netns(name)
            removed.append(f"netns {name}")
    return removed


def clean(records_dir: str = RECORDS_DIR) -> list[str]:
    """``nskernel clean``: remove what labs of kernels that died left behind, nothing else."""
    removed: list[str] = []
    try:
        records = sorted(os.listdir(records_dir))
    except FileNotFoundError:
        return removed
    for entry in records:
        path = os.path.join(records_dir, entry)
        try:
            with open(path) as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            continue
        if owner_alive(record["owner"]):
            continue
        same_netns = record.get("kernel_netns") == os.stat("/proc/self/ns/net").st_ino
        links = record.get("links", {}) if same_netns else {}
        removed += remove_recorded(record.get("netns", {}), links, record["owner"])
        os.unlink(path)
    return removed
