"""A network lab: named network namespaces, veth links, bridges, routes, through netlink.

All netlink work runs in one worker thread of the kernel process. Two reasons: pyroute2's
synchronous API runs its own event loop, which cannot run in a thread whose loop is already
running (the kernel's main thread); and a thread may switch its own network namespace
(setns) without touching the kernel's other threads. So there is no fork, and no ``ip``
process, per step.

Everything a :class:`Lab` makes is recorded as its own, in memory and in a record file
under ``/run/nskernel/labs`` that ``nskernel clean`` reads after a kernel died. Only what a
record names, and still is what was recorded (same namespace inode, same interface alias),
is ever removed: the opposite of cleaning by name pattern.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import re
import socket
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK

from nskernel import _syscalls, sandbox
from nskernel.isolation import short_repr

T = TypeVar("T")
NETNS_DIR = sandbox.NETNS_DIR
RECORDS_DIR = "/run/nskernel/labs"
KERNEL_NS = sandbox.KERNEL_NS
IFNAMSIZ = 15
IFNAME_TRIES = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


OUTSIDE_ONLY = ("the network lab is run by the kernel itself, not from inside an isolated "
                "cell: use the lab magics in a normal cell")


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


def check_ifname(name: str) -> str:
    size = len(name.encode())
    if size > IFNAMSIZ or not size:
        raise LabError(f"interface name {name!r} is {size} bytes; Linux allows 1 to {IFNAMSIZ}:"
                       " use shorter namespace names or give the interface a name")
    return name


def _process_start(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[19])


def owner_id(pid: int | None = None) -> str:
    """"PID-STARTTIME": names a process for as long as it lives, never a later one."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_process_start(pid)}"


def owner_alive(owner: str) -> bool:
    pid, _, start = owner.partition("-")
    try:
        return _process_start(int(pid)) == int(start)
    except (OSError, ValueError):
        return False


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


# ---------------------------------------------------------------------------- namespaces
def _ensure_netns_dir() -> None:
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
        raise LabError(f"{exc.step}: {exc.strerror.split(': ', 1)[-1].split(' (')[0]} "
                       "(named network namespaces need root: run as root, or use the "
                       "Isolated Python kernel, where you are root of your own namespaces)")\
            from None


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


# ---------------------------------------------------------------------------- the lab
class Lab:
    """The namespaces, links and bridges of one kernel (or script), and their removal."""

    def __init__(self, records_dir: str = RECORDS_DIR) -> None:
        self.owner = owner_id()
        self._pid = os.getpid()
        self.record_path = os.path.join(records_dir, f"{self.owner}.json")
        self.netns: dict[str, int] = {}  # name -> inode
        self.links: dict[str, int] = {}  # interfaces in the kernel's netns: name -> ifindex
        self._worker: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._home: int | None = None
        self._next_eth: dict[str, int] = {}  # ns -> next N for an NS-ethN name
        self.ipv6: dict[str, bool] = {}  # namespaces the lab made -> IPv6 on?

    # -- the worker thread
    def _call(self, function: Callable[..., T], *args: Any) -> T:
        if os.getpid() != self._pid:  # a fork (an isolated cell) has no worker thread
            raise LabError(OUTSIDE_ONLY)
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="nskernel-net",
                                              initializer=self._start_worker)
        try:
            future = self._worker.submit(function, *args)
        except RuntimeError:  # interpreter exit: no new work for threads, no loop running
            return function(*args)
        return future.result()

    def _start_worker(self) -> None:
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._loop = asyncio.new_event_loop()

    @contextmanager
    def _ns(self, name: str) -> Iterator[IPRoute]:
        """In the worker: a netlink socket in namespace ``name``."""
        with self._inside(name):
            ipr = IPRoute(use_event_loop=self._loop, nlm_echo=True)
        try:
            yield ipr
        finally:
            ipr.close()

    @contextmanager
    def _inside(self, name: str) -> Iterator[None]:
        """In the worker: this thread inside namespace ``name`` for the block."""
        if name == KERNEL_NS:
            yield
            return
        fd = self._open_ns(name)
        try:
            _syscalls.setns(fd, _syscalls.CLONE_NEWNET, f"netns {name}")
            try:
                yield
            finally:
                _syscalls.setns(self._home, _syscalls.CLONE_NEWNET, "netns kernel")
        finally:
            os.close(fd)

    def _open_ns(self, name: str) -> int:
        if name == KERNEL_NS:
            return os.dup(self._home)
        check_ns_name(name)  # a name, never a path: '../../proc/1/ns/net' is not one
        try:
            return os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            existing = ", ".join(named_namespaces()) or "none"
            raise LabError(f"no network namespace named {name!r} (existing: {existing}; "
                           f"make it with %netns add {name})") from None

    # -- records
    def _save(self) -> None:
        if not self.netns and not self.links:
            if os.path.exists(self.record_path):
                os.unlink(self.record_path)
            return
        os.makedirs(os.path.dirname(self.record_path), exist_ok=True)
        record = {"owner": self.owner, "netns": self.netns, "links": self.links,
                  "kernel_netns": os.stat("/proc/self/ns/net").st_ino}
        temporary = self.record_path + ".new"
        with open(temporary, "w") as handle:
            json.dump(record, handle)
        os.replace(temporary, self.record_path)

    # -- namespaces
    def add(self, *names: str, ipv6: bool = False) -> list[str]:
        """Create named network namespaces (lo up in each; IPv6 only if asked for)."""
        for name in names:
            if name == KERNEL_NS:
                raise LabError(f"{KERNEL_NS!r} is reserved: it names the kernel's own namespace")
            check_ns_name(name)
        if len(set(names)) != len(names):
            raise LabError("a namespace name is given twice")
        existing = [name for name in names if netns_inode(name) is not None]
        if existing:
            raise LabError(f"network namespace {existing[0]!r} exists already")
        _ensure_netns_dir()
        return self._call(self._add, list(names), ipv6)

    def _add(self, names: list[str], ipv6: bool) -> list[str]:
        made = []
        try:
            for name in names:
                self.netns[name] = create_netns(name, ipv6)
                self.ipv6[name] = ipv6
                made.append(name)
        finally:
            self._save()
        return made

    def delete(self, *names: str) -> None:
        """Remove namespaces this lab made (their links go with them)."""
        foreign = [name for name in names if name not in self.netns]
        if foreign:
            raise LabError(f"{foreign[0]!r} was not made by this kernel's lab: remove it with "
                           f"'ip netns del {foreign[0]}' if you mean it")
        for name in names:
            if netns_inode(name) == self.netns[name]:
                remove_netns(name)
            del self.netns[name]
        self._save()

    # -- links
    def link(self, a: str | Endpoint, b: str | Endpoint, ifname_a: str | None = None,
             ifname_b: str | None = None) -> tuple[str, str]:
        """A veth pair between two namespaces, addresses assigned, both ends up."""
        a, b = _endpoint(a), _endpoint(b)
        if a.ns == b.ns:
            raise LabError(f"both ends are in {a.ns!r}: a link joins two namespaces")
        return self._call(self._link, a, b, ifname_a, ifname_b)

    def _link(self, a: Endpoint, b: Endpoint, ifname_a: str | None,
              ifname_b: str | None) -> tuple[str, str]:
        with self._ns(a.ns) as ipr_a, self._ns(b.ns) as ipr_b:
            try:
                return self._make_veth(ipr_a, a, ifname_a, ipr_b, b, ifname_b)
            finally:
                self._save()

    def _make_veth(self, ipr_a: IPRoute, a: Endpoint, name_a: str | None, ipr_b: IPRoute,
                   b: Endpoint, name_b: str | None) -> tuple[str, str]:
        """Create a veth pair from a's side, b's end born in b's namespace, both up, with
        their addresses; undo it all on error.

        Unnamed ends are called NS-ethN with the first N free. One request makes the pair up
        and answers with a's index (netlink echo); b's end is set by name. With thousands of
        links every request counts.
        """
        names = [name_a, name_b]
        peer_fd = self._open_ns(b.ns)
        try:
            for attempt in range(IFNAME_TRIES):
                names = [given or self._auto_ifname(end.ns, attempt)
                         for given, end in ((name_a, a), (name_b, b))]
                for name in names:
                    check_ifname(name)
                try:
                    reply = ipr_a.link("add", ifname=names[0], kind="veth", state="up",
                                       peer={"ifname": names[1], "net_ns_fd": peer_fd})
                    break
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST or (name_a and name_b) or \
                            attempt == IFNAME_TRIES - 1:
                        raise _lab_error(f"create veth {names[0]} in {a.ns}", exc) from None
        finally:
            os.close(peer_fd)
        index_a = reply[0]["index"]
        try:
            self._own(a.ns, ipr_a, names[0], index_a, facing=b.ns)
            self._address(ipr_a, a, names[0], index_a)
            _netlink(f"bring {names[1]} up", ipr_b.link, "set", ifname=names[1], state="up")
            if b.address is not None or b.ns == KERNEL_NS:
                index_b = _index(ipr_b, names[1])
                self._own(b.ns, ipr_b, names[1], index_b, facing=a.ns)
                self._address(ipr_b, b, names[1], index_b)
        except BaseException:
            ipr_a.link("del", index=index_a)  # takes the peer with it
            for name in names:
                self.links.pop(name, None)
            raise
        return names[0], names[1]

    def _auto_ifname(self, ns: str, attempt: int) -> str:
        """NS-ethN: the lab counts the names it gave; a clash (EEXIST) moves on to the next."""
        number = self._next_eth.get(ns, 0) + attempt
        self._next_eth[ns] = number + 1
        return f"{'k' if ns == KERNEL_NS else ns}-eth{number}"

    def _own(self, ns: str, ipr: IPRoute, ifname: str, index: int,
             facing: str | None = None) -> None:
        """Interfaces in the kernel's namespace outlive nothing: mark and record them. One
        facing a namespace without IPv6 has none either (see create_netns)."""
        if ns == KERNEL_NS:
            ipr.link("set", index=index, ifalias=f"nskernel:{self.owner}")
            self.links[ifname] = index
            if facing is not None and not self.ipv6.get(facing, True):
                set_ipv6(ifname, False)

    @staticmethod
    def _address(ipr: IPRoute, end: Endpoint, ifname: str, index: int) -> None:
        if end.address is not None:
            _netlink(f"address {end.address} on {ifname} in {end.ns}", ipr.addr, "add",
                     index=index, address=str(end.address.ip),
                     prefixlen=end.address.network.prefixlen)

    # -- bridges
    def bridge(self, name: str | Endpoint, members: list[str | Endpoint],
               ns: str = KERNEL_NS) -> list[tuple[str, str]]:
        """A bridge ``name`` in ``ns``, with a veth from each member namespace attached.

        ``name`` may carry the bridge's own address (``br0:10.0.0.254/24``). Returns the
        (bridge port, member interface) names.
        """
        bridge, members = _endpoint(name), [_endpoint(m) for m in members]
        check_ifname(bridge.ns)
        if len({m.ns for m in members}) != len(members):
            raise LabError("a member is given twice")
        return self._call(self._bridge, bridge, members, ns)

    def _bridge(self, bridge: Endpoint, members: list[Endpoint],
                ns: str) -> list[tuple[str, str]]:
        for end in members:
            os.close(self._open_ns(end.ns))  # all exist, or one clear line before anything
        name = bridge.ns
        ports: list[tuple[str, str]] = []
        with self._ns(ns) as ipr:
            if _index(ipr, name) is not None:
                raise LabError(f"an interface named {name!r} exists already in {ns}")
            reply = _netlink(f"create bridge {name} in {ns}", ipr.link, "add", ifname=name,
                             kind="bridge")
            index = reply[0]["index"]
            try:
                self._own(ns, ipr, name, index)
                self._address(ipr, Endpoint(ns, bridge.address), name, index)
                with self._inside(ns):
                    switch = _QuickNetlink()
                with switch:
                    for number, member in enumerate(members):
                        port = check_ifname(f"{name}p{number}")
                        ports.append((port, self._attach(ipr, switch, ns, index, port, member)))
                # Up last: while a bridge is down, a new port does not make it walk all its
                # ports again (a star of N would cost N**2).
                _netlink(f"bring up bridge {name} in {ns}", ipr.link, "set", index=index,
                         state="up")
            except BaseException:
                for port, _ifname in ports:
                    ipr.link("del", ifname=port)
                    self.links.pop(port, None)
                ipr.link("del", index=index)
                self.links.pop(name, None)
                raise
            finally:
                self._save()
        return ports

    def _attach(self, ipr: IPRoute, switch: _QuickNetlink, ns: str, bridge: int, port: str,
                member: Endpoint) -> str:
        """One request (on ``switch``, a bare socket in ``ns``) makes the veth pair with its
        bridge end enslaved and up; the member's end is set up through a bare socket in its
        namespace (a star of a thousand members is a thousand of these: see
        benchmarks/netlab.py). Returns its name."""
        peer_fd = self._open_ns(member.ns)
        try:
            for attempt in range(IFNAME_TRIES):
                ifname = check_ifname(self._auto_ifname(member.ns, attempt))
                try:
                    index = switch.add_veth(port, ifname, peer_fd, bridge)
                    break
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST or attempt == IFNAME_TRIES - 1:
                        raise _lab_error(f"create veth {port} in {ns}", exc) from None
        finally:
            os.close(peer_fd)
        try:
            self._own(ns, ipr, port, index, facing=member.ns)
            with self._inside(member.ns):
                quick = _QuickNetlink()
            with quick:
                quick.configure(ifname, member.address, f"{ifname} in {member.ns}")
        except BaseException:
            ipr.link("del", index=index)
            self.links.pop(port, None)
            raise
        return ifname

    # -- routes and forwarding
    def route(self, ns: str, destination: str, via: str) -> None:
        """Route ``destination`` (a network or 'default') through gateway ``via`` in ``ns``."""
        try:
            network = "0.0.0.0/0" if destination == "default" else str(
                ipaddress.ip_network(destination, strict=False))
            gateway = str(ipaddress.ip_address(via))
        except ValueError as exc:
            raise LabError(f"bad route: {exc}") from None
        self._call(self._route, ns, network, gateway)

    def _route(self, ns: str, network: str, gateway: str) -> None:
        with self._ns(ns) as ipr:
            _netlink(f"route {network} via {gateway} in {ns}", ipr.route, "add", dst=network,
                     gateway=gateway)

    def forwarding(self, ns: str, enabled: bool = True) -> None:
        """Let ``ns`` forward IPv4 packets between its interfaces (a router)."""
        self._call(self._forwarding, ns, enabled)

    def _forwarding(self, ns: str, enabled: bool) -> None:
        with self._inside(ns), open("/proc/sys/net/ipv4/ip_forward", "w") as handle:
            handle.write("1" if enabled else "0")

    # -- looking at it
    def run_in(self, ns: str, function: Callable[[], T]) -> T:
        """Call ``function`` in the worker thread while it is inside ``ns`` (for sockets)."""
        def inside() -> T:
            with self._inside(ns):
                return function()
        return self._call(inside)

    def state(self, ns: str) -> dict[str, list[dict]]:
        """Links, addresses and routes of ``ns`` as plain dicts."""
        return self._call(self._state, ns)

    def _state(self, ns: str) -> dict[str, list[dict]]:
        with self._ns(ns) as ipr:
            links = [{"index": link["index"], "ifname": link.get("ifname"),
                      "kind": _kind(link), "state": _state_of(link["flags"]),
                      "master": link.get("master"), "peer": link.get("link"),
                      "mac": link.get("address")}
                     for link in ipr.get_links()]
            addresses = [{"index": a["index"], "address": f"{a.get('address')}/{a['prefixlen']}",
                          "family": a["family"]} for a in ipr.get_addr()
                         if not a.get("address", "").startswith("fe80")]
            routes = [{"dst": f"{r.get('dst') or 'default'}"
                       + (f"/{r['dst_len']}" if r.get("dst") else ""),
                       "gateway": r.get("gateway"), "oif": r.get("oif")}
                      for r in ipr.get_routes(family=2, table=254)]
        names = {link["index"]: link["ifname"] for link in links}
        for item in [*addresses, *routes]:
            key = "index" if "index" in item else "oif"
            item["ifname"] = names.get(item[key])
        return {"links": links, "addresses": addresses, "routes": routes}

    def processes_in(self, ns: str) -> list[int]:
        inode = netns_inode(ns) if ns != KERNEL_NS else os.stat("/proc/self/ns/net").st_ino
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                        found.append(int(entry))
                except OSError:
                    pass
        return found

    # -- the end
    def close(self) -> list[str]:
        """Remove everything this lab made; return what was removed."""
        removed = self._call(remove_recorded, self.netns, self.links, self.owner)
        self.netns.clear()
        self.links.clear()
        self._save()
        return removed

    def shutdown(self) -> None:
        """close(), then stop the worker thread (at kernel exit)."""
        try:
            self.close()
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True)
                self._worker = None


def _endpoint(value: str | Endpoint) -> Endpoint:
    return value if isinstance(value, Endpoint) else Endpoint.parse(value)


class _QuickNetlink:
    """A bare rtnetlink socket for the few requests per bridge member: make the veth pair,
    look up, bring up, address. The messages are packed here with ``struct``: for a star
    of a thousand members, building them with pyroute2's request machinery cost more than
    the kernel's work (measured: ~2.2 ms against ~1 ms per member for ``ip -batch``)."""

    _HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
    _ERROR = struct.Struct("=IHHIIi")  # nlmsghdr + the errno of an NLMSG_ERROR (ack)
    _IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
    _IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sequence = 0

    def __enter__(self) -> _QuickNetlink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()

    def _request(self, kind: int, flags: int, body: bytes, step: str | None = None) -> bytes:
        """Send one request; return the reply. A refusal raises a LabError naming ``step``,
        or without one the NetlinkError itself (for callers that look at the errno)."""
        self.sequence += 1
        header = self._HEADER.pack(self._HEADER.size + len(body), kind, NLM_F_REQUEST | flags,
                                   self.sequence, 0)
        self.sock.send(header + body)
        reply = self.sock.recv(65536)
        _length, reply_type, _flags, _seq, _pid, code = self._ERROR.unpack_from(reply)
        if reply_type == NLMSG_ERROR and code:
            if step is not None:
                raise _lab_error(step, NetlinkError(-code))
            raise NetlinkError(-code)
        return reply

    def index(self, ifname: str, step: str | None = None) -> int:
        reply = self._request(RTM_GETLINK, 0, self._IFINFO.pack(0, 0, 0, 0, 0)
                              + _attr(IFLA_IFNAME, _name(ifname)), step)
        return struct.unpack_from("=i", reply, 20)[0]  # nlmsghdr(16) + family, type: ifindex

    def add_veth(self, ifname: str, peer: str, peer_netns_fd: int, master: int) -> int:
        """Make a veth pair, ``ifname`` here (up, a port of bridge ``master``) and ``peer``
        in the namespace of ``peer_netns_fd``; return the index of ``ifname``."""
        peer_info = (self._IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(peer))
                     + _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd)))
        link_info = (_attr(IFLA_INFO_KIND, b"veth\0")
                     + _nested(IFLA_INFO_DATA, _nested(VETH_INFO_PEER, peer_info)))
        body = (self._IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + _attr(IFLA_IFNAME, _name(ifname))
                + _attr(IFLA_MASTER, struct.pack("=I", master)) + _nested(IFLA_LINKINFO, link_info))
        self._request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
        return self.index(ifname)

    def configure(self, ifname: str, address: Any, where: str) -> None:
        """Bring ``ifname`` up and give it ``address`` (an ip_interface, or None)."""
        index = self.index(ifname, f"find {where}")
        self._request(RTM_NEWLINK, NLM_F_ACK, self._IFINFO.pack(0, 0, index, IFF_UP, IFF_UP),
                      f"bring up {where}")
        if address is not None:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            packed = address.ip.packed
            body = (self._IFADDR.pack(family, address.network.prefixlen, 0, 0, index)
                    + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed))
            self._request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body,
                          f"address {address} on {where}")


# rtnetlink attribute numbers (linux/if_link.h, linux/if_addr.h, linux/veth.h)
IFF_UP = 0x1
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
NLA_F_NESTED = 0x8000


def _attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute: length, type, payload, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _nested(kind: int, payload: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, payload)


def _name(ifname: str) -> bytes:
    return ifname.encode() + b"\0"


def _index(ipr: IPRoute, ifname: str) -> int | None:
    """The interface's index by one targeted request (link_lookup dumps every link)."""
    try:
        return ipr.link("get", ifname=ifname)[0]["index"]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def _state_of(flags: int) -> str:
    """From the flags, which settle at once (operstate follows a moment later)."""
    if not flags & 0x1:
        return "down"
    return "up" if flags & 0x10000 else "no-carrier"


def _kind(link: Any) -> str:
    info = link.get("linkinfo")
    return (info.get("kind") if info else None) or ("loopback" if link["flags"] & 8 else "")


def _netlink(step: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except NetlinkError as exc:
        raise _lab_error(step, exc) from None


def _lab_error(step: str, exc: NetlinkError) -> LabError:
    hint = {errno.EEXIST: "it exists already", errno.EPERM: "needs root (or a user "
            "namespace that owns the network namespace)", errno.ENETUNREACH:
            "the gateway is not on a connected network: give an address in its subnet "
            "to an interface first", errno.EADDRNOTAVAIL: "address not available",
            errno.EACCES: "IPv6 is off in that namespace (make it with %netns add --ipv6)"}
    return LabError(f"{step}: {hint.get(exc.code) or os.strerror(exc.code)}")


# ---------------------------------------------------------------------------- cleaning
def remove_recorded(netns: dict[str, int], links: dict[str, int], owner: str) -> list[str]:
    """Remove recorded namespaces and kernel-namespace links that are still what was recorded.

    Usable from any thread and at interpreter exit: namespaces need only umount/unlink, and
    links a netlink socket in the calling thread's (the kernel's) namespace.
    """
    removed = []
    if links:  # first: while their peers' namespaces still hold them, they are listed here
        with IPRoute(use_event_loop=asyncio.new_event_loop()) as ipr:
            for ifname, index in links.items():
                found = ipr.get_links(index)[0] if _index(ipr, ifname) == index else None
                if found is not None and found.get("ifalias") == f"nskernel:{owner}":
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
