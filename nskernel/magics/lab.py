"""The network-lab magics: thin parsers in front of :class:`nskernel.netlab.net.Lab`.

``%netns add|del|list|reset``, ``%veth``, ``%bridge``, ``%route``, ``%forward``, ``%ping``,
``%ip`` and ``%topology``. Every failure is one ``UsageError`` line; the lab undoes what a
failing step half-made.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from nskernel._syscalls import NamespaceError
from nskernel.display import Table
from nskernel.magics.magicargs import magic_parser, parse_line, with_usage
from nskernel.netlab import explain
from nskernel.netlab.netns import KERNEL_NS, Endpoint, LabError, named_namespaces

if TYPE_CHECKING:  # pyroute2 is imported on first use: kernels start without paying for it
    from nskernel.netlab.net import Lab
    from nskernel.netlab.probe import PingResult
    from nskernel.netlab.topology import Topology


NETNS = magic_parser("netns", "Named network namespaces of this kernel's lab (with a cell: "
                         "%%netns NAME runs the cell inside one).")
NETNS.add_argument("action", choices=["add", "del", "list", "reset"],
                   help="add/del NAMEs, list all, or reset: remove everything the lab made")
NETNS.add_argument("names", nargs="*", help="namespace names")
NETNS.add_argument("--ipv6", action="store_true",
                   help="keep IPv6 on in new namespaces (off by default: on a big bridge every "
                        "new interface's IPv6 start-up floods all ports)")
VETH = magic_parser("veth", f"A veth link between two namespaces ({KERNEL_NS!r} is the kernel's "
                       "own), with addresses, both ends up.")
VETH.add_argument("a", metavar="A[:ADDR/PREFIX]")
VETH.add_argument("b", metavar="B[:ADDR/PREFIX]")
BRIDGE = magic_parser("bridge", "A bridge with a veth from each member namespace attached: a LAN.")
BRIDGE.add_argument("bridge", metavar="NAME[:ADDR/PREFIX]")
BRIDGE.add_argument("members", nargs="+", metavar="MEMBER[:ADDR/PREFIX]")
BRIDGE.add_argument("--in", dest="ns", default=KERNEL_NS, metavar="NS",
                    help="the namespace the bridge lives in (default: the kernel's)")
ROUTE = magic_parser("route", "Route a network (or 'default') through a gateway, in a namespace.")
ROUTE.add_argument("ns")
ROUTE.add_argument("destination", metavar="NETWORK|default")
ROUTE.add_argument("via", choices=["via"], help="the word 'via'")
ROUTE.add_argument("gateway")
FORWARD = magic_parser("forward", "Turn IPv4 forwarding on (a router) or off in a namespace.")
FORWARD.add_argument("ns")
FORWARD.add_argument("state", nargs="?", choices=["on", "off"], default="on")
PING = magic_parser("ping", "ICMP echo from inside a namespace, with RTTs (no ping binary needed).")
PING.add_argument("source", metavar="SRC")
PING.add_argument("destination", metavar="DST_ADDR")
PING.add_argument("-c", dest="count", type=int, default=3, help="echo requests (default 3)")
PING.add_argument("-W", dest="timeout", type=float, default=1.0, help="seconds to wait each")
IP = magic_parser("ip", "Links, addresses and routes of a namespace, as tables.")
IP.add_argument("ns", nargs="?", default=KERNEL_NS)
TOPOLOGY = magic_parser("topology", "Draw the namespaces, bridges and links as they are now.")
for _parser in (NETNS, VETH, BRIDGE, ROUTE, FORWARD):
    _parser.add_argument("--explain", action="store_true",
                         help="also print the ip and sysctl commands that do the same by hand")


_lab: Lab | None = None


def _explain(args: Any, commands: list[str]) -> None:
    """With --explain: the commands that do what the magic did, by hand, one per line."""
    if args.explain:
        print("\n".join(["# the same by hand:", *commands]))


def current_lab() -> Lab:
    """The lab of this process (one per kernel): the magics' and ``nskernel.lab()``'s.
    Removed at exit: kernel shutdown and restart leave nothing of it behind."""
    global _lab
    from nskernel.cell import wire
    from nskernel.netlab.net import OUTSIDE_ONLY, Lab

    if wire.inside_isolated_cell():  # its lab would die with it, unremoved
        raise LabError(OUTSIDE_ONLY)
    if _lab is None:
        _lab = Lab()
        _remove_with_the_kernel(_lab)
    return _lab


def _remove_with_the_kernel(lab: Lab) -> None:
    """Remove the lab when the kernel is asked to shut down or restart, and at exit.

    atexit alone is too late: after the shutdown reply ipykernel waits for the kernel's
    child processes (seconds, for a zombie the notebook never reaped), and Jupyter kills
    a kernel that has not exited by then, so atexit never runs.
    """
    atexit.register(lab.shutdown)
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return
    do_shutdown = kernel.do_shutdown

    def remove_lab_then_shut_down(restart: bool) -> Any:
        try:
            lab.close()
        finally:
            return do_shutdown(restart)  # noqa: B012 - the kernel's reply must go out

    kernel.do_shutdown = remove_lab_then_shut_down


class Tables:
    """Several tables shown one after another."""

    def __init__(self, tables: list[Table]) -> None:
        self.tables = tables

    def __repr__(self) -> str:
        return "\n\n".join(repr(table) for table in self.tables)

    def _repr_html_(self) -> str:
        return "".join(table._repr_html_() for table in self.tables)


@magics_class
class LabMagics(Magics):
    """Network lab magics over one :class:`Lab` per kernel, removed when the kernel exits."""

    @property
    def lab(self) -> Lab:
        return current_lab()

    def _do(self, prog: str, action: Callable[[], Any]) -> Any:
        try:
            self.lab  # noqa: B018 - refuses early inside an isolated cell
            return action()
        except (LabError, NamespaceError) as exc:
            raise UsageError(f"%{prog}: {exc}") from None

    @line_magic
    @with_usage(NETNS)
    def netns(self, line: str) -> Any:
        """Add, delete, list or reset named network namespaces."""
        args = parse_line(NETNS, line)
        if args.action in ("add", "del") and not args.names:
            raise UsageError(f"%netns {args.action}: name at least one namespace")
        if args.action == "add":
            self._do("netns", lambda: self.lab.add(*args.names, ipv6=args.ipv6))
            _explain(args, explain.netns_add(args.names, args.ipv6))
        elif args.action == "del":
            self._do("netns", lambda: self.lab.delete(*args.names))
            _explain(args, explain.netns_del(args.names))
        elif args.action == "reset":
            removed = self._do("netns", self.lab.close)
            return Table(["removed"], [[item] for item in removed],
                         title=f"lab reset: {len(removed)} removed")
        return self._list()

    def _list(self) -> Table:
        rows = []
        for name in named_namespaces():
            state = self._do("netns", lambda name=name: self.lab.state(name))
            addresses: dict[int, list[str]] = {}
            for address in state["addresses"]:
                addresses.setdefault(address["index"], []).append(address["address"])
            interfaces = "; ".join(
                " ".join([link["ifname"], link["state"], *addresses.get(link["index"], [])])
                for link in state["links"] if link["kind"] != "loopback")
            processes = len(self.lab.processes_in(name))
            owner = "lab" if name in self.lab.netns else "other"
            rows.append([name, interfaces or "-", processes, owner])
        return Table(["namespace", "interfaces", "processes", "made by"], rows,
                     title=f"{len(rows)} named network namespaces")

    @line_magic
    @with_usage(VETH)
    def veth(self, line: str) -> Table:
        """Link two namespaces with a veth pair."""
        args = parse_line(VETH, line)
        names = self._do("veth", lambda: self.lab.link(args.a, args.b))
        _explain(args, explain.veth(Endpoint.parse(args.a), names[0], Endpoint.parse(args.b),
                                    names[1], self._without_ipv6()))
        return self._ends([(args.a, names[0]), (args.b, names[1])])

    @line_magic
    @with_usage(BRIDGE)
    def bridge(self, line: str) -> Table:
        """Make a bridge and attach member namespaces to it."""
        args = parse_line(BRIDGE, line)
        ports = self._do("bridge", lambda: self.lab.bridge(args.bridge, args.members, args.ns))
        _explain(args, explain.bridge(Endpoint.parse(args.bridge), args.ns,
                                      [Endpoint.parse(member) for member in args.members], ports,
                                      self._without_ipv6()))
        rows = [(member, ifname) for member, (_port, ifname) in zip(args.members, ports,
                                                                     strict=True)]
        return self._ends(rows, title=f"bridge {args.bridge} in {args.ns}")

    def _without_ipv6(self) -> set[str]:
        return {ns for ns, on in self.lab.ipv6.items() if not on}

    @staticmethod
    def _ends(ends: list[tuple[str, str]], title: str = "veth link") -> Table:
        rows = []
        for text, ifname in ends:
            end = Endpoint.parse(text)
            rows.append([end.ns, ifname, str(end.address) if end.address else "-"])
        return Table(["namespace", "interface", "address"], rows, title=title)

    @line_magic
    @with_usage(ROUTE)
    def route(self, line: str) -> None:
        """Add a route in a namespace."""
        args = parse_line(ROUTE, line)
        self._do("route", lambda: self.lab.route(args.ns, args.destination, args.gateway))
        _explain(args, explain.route(args.ns, args.destination, args.gateway))

    @line_magic
    @with_usage(FORWARD)
    def forward(self, line: str) -> None:
        """Turn IPv4 forwarding on or off in a namespace."""
        args = parse_line(FORWARD, line)
        self._do("forward", lambda: self.lab.forwarding(args.ns, args.state == "on"))
        _explain(args, explain.forward(args.ns, args.state == "on"))

    @line_magic
    @with_usage(PING)
    def ping(self, line: str) -> PingResult:
        """Ping from inside a namespace."""
        from nskernel.netlab import probe

        args = parse_line(PING, line)
        return self._do("ping", lambda: probe.ping(self.lab, args.source, args.destination,
                                                   args.count, args.timeout))

    @line_magic
    @with_usage(IP)
    def ip(self, line: str) -> Tables:
        """Show a namespace's links, addresses and routes."""
        args = parse_line(IP, line)
        state = self._do("ip", lambda: self.lab.state(args.ns))
        links = Table(["interface", "kind", "state"],
                      [[link["ifname"], link["kind"], link["state"]]
                       for link in state["links"]], title=f"links in {args.ns}")
        addresses = Table(["interface", "address"],
                          [[a["ifname"], a["address"]] for a in state["addresses"]],
                          title=f"addresses in {args.ns}")
        routes = Table(["destination", "gateway", "interface"],
                       [[r["dst"], r["gateway"] or "-", r["ifname"]] for r in state["routes"]],
                       title=f"IPv4 routes in {args.ns}")
        return Tables([links, addresses, routes])

    @line_magic
    @with_usage(TOPOLOGY)
    def topology(self, line: str) -> Topology:
        """Draw the lab."""
        from nskernel.netlab import topology

        parse_line(TOPOLOGY, line)
        return self._do("topology", lambda: topology.read(self.lab))
