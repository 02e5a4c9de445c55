"""Named network namespaces, as `ip netns` keeps them: bind mounts under /run/netns.

A name is never a path (it is checked before it is joined to /run/netns); a namespace is
made by a thread that enters a new one and binds it to its name, so no process is forked.

A namespace is told from a later one of the same name by its cookie, not its inode: inodes
of namespaces are reused (lowest free first), so the next `ip netns add` of a removed name
gets the same inode at once; a cookie is never reused within a boot.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from nskernel import _syscalls
from nskernel.cell import sandbox
from nskernel.cell.sandbox import NETNS_DIR
from nskernel.isolation import short_repr

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


#: getsockopt(SOL_SOCKET, ...) on a socket: the cookie of the network namespace it was
#: made in, a 64-bit id never reused within a boot (Linux 5.14).
SO_NETNS_COOKIE = 71


@dataclass(frozen=True)
class NetnsId:
    """Which namespace a name stood for when the lab made it: its ``cookie`` (None where
    Linux gives none, before 5.14) and its ``inode`` (reused: a fallback, see
    :func:`remove_if_same`)."""

    inode: int
    cookie: int | None


def current_netns_cookie() -> int | None:
    """The cookie of the calling thread's network namespace (None before Linux 5.14), read
    from a socket made here: a Unix socket, which any user may make in any namespace."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError as exc:
            if exc.errno == errno.ENOPROTOOPT:
                return None
            raise
    return int(struct.unpack("=Q", raw)[0])


@contextmanager
def _thread_in(fd: int, name: str) -> Iterator[None]:
    """The calling thread in the network namespace ``fd`` names for the block, then back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _syscalls.setns(fd, _syscalls.CLONE_NEWNET, f"netns {name}")
        try:
            yield
        finally:
            _syscalls.setns(home, _syscalls.CLONE_NEWNET, "back to the original netns")
    finally:
        os.close(home)


def _identity(fd: int, name: str) -> NetnsId:
    """What the open namespace file ``fd`` is; no cookie if it is not a namespace (yet)."""
    inode = os.fstat(fd).st_ino
    try:
        with _thread_in(fd, name):
            return NetnsId(inode, current_netns_cookie())
    except _syscalls.NamespaceError:  # a name being made: a plain file, not bound yet
        return NetnsId(inode, None)


def remove_if_same(name: str, made: NetnsId, *, inode_will_do: bool,
                   keep: list[int] | None = None) -> bool:
    """Remove the namespace named ``name`` if it still is the one ``made`` describes: the
    same cookie; where none was recorded (Linux before 5.14), the same inode, only if
    ``inode_will_do`` (a live lab deleting its own; never ``nskernel clean``, for whom a
    later namespace of the name may well have the same inode). Returns whether removed.

    The file is held open from the check to the removal: while it is, the namespace lives
    and its inode is no other's, so the name still on that inode is the one checked. Given
    ``keep``, the file of a namespace removed is appended to it, not closed: the namespace,
    nameless, lives on until the caller closes it (see ``records.remove_recorded``).
    """
    path = os.path.join(NETNS_DIR, check_ns_name(name))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        found = _identity(fd, name)
        if made.cookie is not None:
            same = found.cookie == made.cookie
        else:
            same = inode_will_do and found.inode == made.inode
        if not same or netns_inode(name) != found.inode:
            return False
        remove_netns(name)
        if keep is not None:
            keep.append(fd)
            fd = -1
        return True
    finally:
        if fd >= 0:
            os.close(fd)


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


def create_netns(name: str, ipv6: bool = False) -> NetnsId:
    """Make a new network namespace named ``name`` with lo up; return what it is. Call from
    a thread that may switch namespaces (the lab's worker).

    It does not forward, whatever the machine does: Linux copies a new namespace's IPv4
    settings from the machine's first one (``net.core.devconf_inherit_init_net`` = 0), so on
    a host that routes (Docker and podman turn ``ip_forward`` on) every namespace would be a
    router from birth, and a lab would behave one way here and another there.

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
            with open("/proc/sys/net/ipv4/ip_forward", "w") as handle:
                handle.write("0")
            _syscalls.set_link_up("lo")
            cookie = current_netns_cookie()
    except BaseException:
        os.unlink(path)
        raise
    return NetnsId(os.stat(path).st_ino, cookie)


def set_ipv6(interface: str, enabled: bool) -> None:
    """IPv6 on or off for an interface (or 'all'/'default') of the calling thread's netns."""
    with open(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6", "w") as handle:
        handle.write("0" if enabled else "1")


def remove_netns(name: str) -> None:
    path = os.path.join(NETNS_DIR, name)
    _syscalls.umount(path)
    os.unlink(path)


def processes_in_netns(inode: int) -> list[int]:
    """The visible processes whose network namespace has this inode."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                    found.append(int(entry))
            except OSError:
                pass
    return found
