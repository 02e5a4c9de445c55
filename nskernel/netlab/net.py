"""A network lab: named network namespaces, veth links, bridges, routes, through netlink.

All netlink work runs in one worker thread of the kernel process. Two reasons: pyroute2's
synchronous API runs its own event loop, which cannot run in a thread whose loop is already
running (the kernel's main thread); and a thread may switch its own network namespace
(setns) without touching the kernel's other threads. So there is no fork, and no ``ip``
process, per step. Everything a :class:`Lab` makes is recorded as its own (see
:mod:`nskernel.netlab.records`), and only that is ever removed.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nskernel import _syscalls
from nskernel.cell import wire
from nskernel.netlab import _rtnl, records
from nskernel.netlab.names import (
    IFNAME_TRIES,
    _endpoint,
    _lab_error,
    _netlink,
    _new_link_index,
    check_ifname,
)
from nskernel.netlab.netns import (
    KERNEL_NS,
    Endpoint,
    LabError,
    NetnsId,
    check_ns_name,
    create_netns,
    ensure_netns_dir,
    netns_inode,
    open_netns,
    processes_in_netns,
    remove_if_same,
    set_ipv6,
)
from nskernel.owners import owner_id

T = TypeVar("T")


OUTSIDE_ONLY = ("the network lab is run by the kernel itself, not from inside an isolated "
                "cell: use the lab magics in a normal cell")


# ---------------------------------------------------------------------------- the lab
class Lab:
    """The namespaces, links and bridges of one kernel (or script), and their removal."""

    def __init__(self, records_dir: str = records.RECORDS_DIR) -> None:
        self.owner = owner_id()
        self.record_path = os.path.join(records_dir, f"{self.owner}.json")
        self.netns: dict[str, NetnsId] = {}  # name -> the namespace it was made as
        self.links: dict[str, int] = {}  # interfaces in the kernel's netns: name -> ifindex
        self._worker: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._home: int | None = None
        self._next_eth: dict[str, int] = {}  # ns -> next N for an NS-ethN name
        self.ipv6: dict[str, bool] = {}  # namespaces the lab made -> IPv6 on?

    # -- the worker thread
    def _call(self, function: Callable[..., T], *args: Any) -> T:
        if wire.inside_isolated_cell():  # a fork: it has no worker thread
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
            # groups=0: no broadcasts of every change, which nobody here would read.
            ipr = IPRoute(use_event_loop=self._loop, nlm_echo=True, groups=0)
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
        return os.dup(self._home) if name == KERNEL_NS else open_netns(name)

    def _save(self) -> None:
        records.save(self.record_path, self.owner, self.netns, self.links)

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
        ensure_netns_dir()
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
        if len(set(names)) != len(names):
            raise LabError("a namespace name is given twice")
        foreign = [name for name in names if name not in self.netns]
        if foreign:
            raise LabError(f"{foreign[0]!r} was not made by this kernel's lab: remove it with "
                           f"'ip netns del {foreign[0]}' if you mean it")
        for name in names:
            self._call(functools.partial(remove_if_same, name, self.netns[name],
                                         inode_will_do=True))
            del self.netns[name]
            self._next_eth.pop(name, None)  # made again, it is numbered from 0 again
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
        index_a = _new_link_index(reply, ipr_a, names[0])
        try:
            self._own(a.ns, ipr_a, names[0], index_a, facing=b.ns)
            self._address(ipr_a, a, names[0], index_a)
            _netlink(f"bring {names[1]} up", ipr_b.link, "set", ifname=names[1], state="up")
            if b.address is not None or b.ns == KERNEL_NS:
                index_b = _rtnl.interface_index(ipr_b, names[1])
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
            ipr.link("set", index=index, ifalias=records.owner_alias(self.owner))
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
            if _rtnl.interface_index(ipr, name) is not None:
                raise LabError(f"an interface named {name!r} exists already in {ns}")
            reply = _netlink(f"create bridge {name} in {ns}", ipr.link, "add", ifname=name,
                             kind="bridge", br_mcast_snooping=0)  # on again below
            index = _new_link_index(reply, ipr, name)
            try:
                self._own(ns, ipr, name, index)
                self._address(ipr, Endpoint(ns, bridge.address), name, index)
                with self._inside(ns):
                    switch = _rtnl.QuickNetlink()
                with switch:
                    for number, member in enumerate(members):
                        port = check_ifname(f"{name}p{number}")
                        ports.append((port, self._attach(ipr, switch, ns, index, port, member)))
                # Up last: a port joining a bridge that is up makes it walk all its ports.
                # Coming up, it enables each port, and each enabling walks every port
                # (br_port_state_selection), multicast snooping resetting each one's timers:
                # N**2 resets (at N=1000, 165 ms; 35 ms with snooping off till up, then on).
                _netlink(f"bring up bridge {name} in {ns}", ipr.link, "set", index=index,
                         state="up")
                _netlink(f"turn on multicast snooping of {name} in {ns}", ipr.link, "set",
                         index=index, kind="bridge", br_mcast_snooping=1)
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

    def _attach(self, ipr: IPRoute, switch: _rtnl.QuickNetlink, ns: str, bridge: int, port: str,
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
                quick = _rtnl.QuickNetlink()
            with quick:
                quick.configure(ifname, member.address)
        except _rtnl.RtnlError as exc:
            ipr.link("del", index=index)
            self.links.pop(port, None)
            raise _lab_error(f"{exc.action} in {member.ns}", exc) from None
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
            return _rtnl.describe(ipr)

    def processes_in(self, ns: str) -> list[int]:
        inode = netns_inode(ns) if ns != KERNEL_NS else os.stat("/proc/self/ns/net").st_ino
        return processes_in_netns(inode)

    # -- the end
    def close(self) -> list[str]:
        """Remove everything this lab made; return what was removed."""
        removed = self._call(records.remove_recorded, self.netns, self.links, self.owner)
        self.netns.clear()
        self.links.clear()
        self._next_eth.clear()  # a lab built again gets the names it had the first time
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
