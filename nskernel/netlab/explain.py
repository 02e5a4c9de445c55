"""The ``ip`` and ``sysctl`` commands that do what a lab magic did (``--explain``).

The lab talks netlink directly (see :mod:`nskernel.netlab._rtnl`), which is fast and says
nothing to a learner. These functions write the same steps as the commands a learner takes
away, one per line, to be run from the kernel's own network namespace (``ip -n NS`` reaches
a named one); run in order on a clean kernel, they build the same namespaces, links,
addresses and routes. What they leave out is the lab's bookkeeping: the owner marks on the
kernel's interfaces, its records, and multicast snooping being off while a bridge is built.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from nskernel.netlab.netns import KERNEL_NS, Endpoint


def netns_add(names: Iterable[str], ipv6: bool) -> list[str]:
    commands = []
    for name in names:
        commands += [f"ip netns add {name}", f"ip -n {name} link set lo up",
                     sysctl(name, "net.ipv4.ip_forward", 0)]
        if not ipv6:
            commands.append(sysctl(name, "net.ipv6.conf.all.disable_ipv6", 1))
    return commands


def netns_del(names: Iterable[str]) -> list[str]:
    return [f"ip netns del {name}" for name in names]


def veth(a: Endpoint, name_a: str, b: Endpoint, name_b: str,
         ipv6_off: Iterable[str] = ()) -> list[str]:
    """A veth pair made from one side, the other end born in the other namespace. From the
    kernel's side when it is one: its namespace has no name to give ``netns``."""
    if b.ns == KERNEL_NS:
        (a, name_a), (b, name_b) = (b, name_b), (a, name_a)
    commands = [f"{ip(a.ns)} link add {name_a} type veth peer name {name_b} netns {b.ns}"]
    commands += _kernel_side_ipv6([(a, name_a, b.ns), (b, name_b, a.ns)], set(ipv6_off))
    for end, name in ((a, name_a), (b, name_b)):
        if end.address is not None:
            commands.append(f"{ip(end.ns)} addr add {end.address} dev {name}")
        commands.append(f"{ip(end.ns)} link set {name} up")
    return commands


def bridge(bridge: Endpoint, ns: str, members: list[Endpoint], ports: list[tuple[str, str]],
           ipv6_off: Iterable[str] = ()) -> list[str]:
    """A bridge in ``ns`` and, for each member, a veth whose bridge end is a port of it.
    ``ports``: (bridge port, member interface) names, as the lab gave them."""
    name = bridge.ns
    commands = [f"{ip(ns)} link add {name} type bridge"]
    if bridge.address is not None:
        commands.append(f"{ip(ns)} addr add {bridge.address} dev {name}")
    for member, (port, ifname) in zip(members, ports, strict=True):
        commands.append(f"{ip(ns)} link add {port} type veth peer name {ifname} "
                        f"netns {member.ns}")
        commands += _kernel_side_ipv6([(Endpoint(ns), port, member.ns)], set(ipv6_off))
        commands.append(f"{ip(ns)} link set {port} master {name} up")
        if member.address is not None:
            commands.append(f"{ip(member.ns)} addr add {member.address} dev {ifname}")
        commands.append(f"{ip(member.ns)} link set {ifname} up")
    commands.append(f"{ip(ns)} link set {name} up")
    return commands


def route(ns: str, destination: str, gateway: str) -> list[str]:
    """``destination``: 'default' or a network, as the lab took it (checked there already)."""
    if destination != "default":
        destination = str(ipaddress.ip_network(destination, strict=False))
    return [f"{ip(ns)} route add {destination} via {gateway}"]


def forward(ns: str, enabled: bool) -> list[str]:
    return [sysctl(ns, "net.ipv4.ip_forward", 1 if enabled else 0)]


def ip(ns: str) -> str:
    """``ip``, in the named namespace ``ns`` or the kernel's own."""
    return "ip" if ns == KERNEL_NS else f"ip -n {ns}"


def sysctl(ns: str, key: str, value: int) -> str:
    """A sysctl of a network namespace: set from inside it (``ip netns exec``)."""
    inside = "" if ns == KERNEL_NS else f"ip netns exec {ns} "
    return f"{inside}sysctl -q -w {key}={value}"


def _kernel_side_ipv6(ends: list[tuple[Endpoint, str, str]], ipv6_off: set[str]) -> list[str]:
    """An interface in the kernel's namespace facing a namespace made without IPv6 has none
    either (the kernel's own keeps IPv6; see nskernel.netlab.netns.create_netns)."""
    return [sysctl(KERNEL_NS, f"net.ipv6.conf.{name}.disable_ipv6", 1)
            for end, name, facing in ends if end.ns == KERNEL_NS and facing in ipv6_off]
