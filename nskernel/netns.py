"""Named network namespaces, as `ip netns` keeps them: bind mounts under /run/netns.

A name is never a path (it is checked before it is joined to /run/netns); a namespace is
made by a thread that enters a new one and binds it to its name, so no process is forked.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
from dataclasses import dataclass

from nskernel import _syscalls, sandbox
from nskernel.isolation import short_repr
from nskernel.sandbox import NETNS_DIR

#: In the lab, stands for the network namespace the kernel itself runs in.
KERNEL_NS = "kernel"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class LabError(ValueError):
    """A lab step cannot be done; the message is one line saying what and how to fix it."""


@dataclass(frozen=True)
class Endpoint:
    """``NS[:ADDRESS/PREFIX]``: a namespace and the address its end of a link gets."""

    ns: str
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        ns, _, address = text.partition(":")
        if not address:
            return cls(ns)
        if "/" not in address:
            raise LabError(f"bad address {address!r} for {ns}: give a prefix, as {address}/24")
        try:
            return cls(ns, ipaddress.ip_interface(address))
        except ValueError:
            raise LabError(f"bad address {address!r} for {ns}: expected e.g. 10.0.0.1/24")\
                from None

    def __str__(self) -> str:
        return self.ns + (f":{self.address}" if self.address else "")


def check_ns_name(name: str) -> str:
    """A namespace name as `ip netns` takes it; anything else would be a path."""
    if len(name) > 64 or not _NAME.match(name):
        raise LabError(f"bad namespace name {short_repr(name)}: use letters, digits, '.', '_', '-' "
                       "(not first), at most 64")
    return name


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except FileNotFoundError:
        return None


def named_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def open_netns(name: str) -> int:
    """An fd on the named namespace; a missing one is a LabError that lists those there are."""
    check_ns_name(name)  # a name, never a path: '../../proc/1/ns/net' is not one
    try:
        return os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        existing = ", ".join(named_namespaces()) or "none"
        raise LabError(f"no network namespace named {name!r} (existing: {existing}; "
                       f"make it with %netns add {name})") from None


def ensure_netns_dir() -> None:
    """/run/netns as iproute2 keeps it: a directory that is a shared mount point, so that
    namespaces named later show up in mount namespaces copied from this one."""
    try:
        os.makedirs(NETNS_DIR, exist_ok=True)
    except OSError as exc:
        raise LabError(f"cannot create {NETNS_DIR}: {exc.strerror} (named network namespaces "
                       "on the host need root: run as root, or use the Isolated Python "
                       "kernel, where you are root of your own namespaces)") from None
    try:
        try:
            _syscalls.mount("", NETNS_DIR, None, _syscalls.MS_SHARED | _syscalls.MS_REC)
        except _syscalls.NamespaceError:
            _syscalls.mount(NETNS_DIR, NETNS_DIR, None, _syscalls.MS_BIND | _syscalls.MS_REC)
            _syscalls.mount("", NETNS_DIR, None, _syscalls.MS_SHARED | _syscalls.MS_REC)
    except _syscalls.NamespaceError as exc:
        if exc.errno != errno.EPERM:
            raise
        raise LabError(f"{exc.step}: {exc.reason} (named network namespaces need root: run as "
                       "root, or use the Isolated Python kernel, where you are root of your own "
                       "namespaces)") from None


def create_netns(name: str, ipv6: bool = False) -> int:
    """Make a new network namespace named ``name`` with lo up; return its inode. Call from a
    thread that may switch namespaces (the lab's worker).

    IPv6 is off unless asked for, as in Mininet: every new interface's IPv6 start-up
    (DAD, MLD, router solicitations) floods every port of a bridge, so a star of N costs
    N**2 packets; measured here, a thousand-member star took three times as long per member.
    """
    path = os.path.join(NETNS_DIR, name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise LabError(f"network namespace {name!r} exists already") from None
    try:
        with sandbox.thread_in_new_netns():
            _syscalls.mount("/proc/thread-self/ns/net", path, None, _syscalls.MS_BIND)
            if not ipv6:
                set_ipv6("all", False)  # the kernel sets "default" too, for what comes later
            _syscalls.set_link_up("lo")
    except BaseException:
        os.unlink(path)
        raise
    return os.stat(path).st_ino


def set_ipv6(interface: str, enabled: bool) -> None:
    """IPv6 on or off for an interface (or 'all'/'default') of the calling thread's netns."""
    with open(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6", "w") as handle:
        handle.write("0" if enabled else "1")


def remove_netns(name: str) -> None:
    path = os.path.join(NETNS_DIR, name)
    _syscalls.umount(path)
    os.unlink(path)
