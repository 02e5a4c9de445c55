"""Checkers of the exercises of notebooks 2, 7 and 11: the network lab, read back from the
kernel and probed."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from nskernel.exercises._check import NotYet, checker


# ---------------------------------------------------------------------------- 02
def _lab() -> Any:
    import nskernel

    return nskernel.lab()


def _need_namespaces(*names: str) -> None:
    from nskernel.netlab.netns import named_namespaces

    there = named_namespaces()
    missing = [name for name in names if name not in there]
    if missing:
        raise NotYet(f"no network namespace {missing[0]!r} yet (%netns add {' '.join(missing)})")


def _addresses(ns: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses of a namespace, loopback's left out."""
    found = [ipaddress.IPv4Interface(a["address"]) for a in _lab().state(ns)["addresses"]
             if a["family"] == socket.AF_INET]
    return [a for a in found if not a.ip.is_loopback]


def _forwards(ns: str) -> bool:
    return _lab().run_in(ns, lambda: open("/proc/sys/net/ipv4/ip_forward").read().strip()) == "1"


def _pings(source: str, address: str) -> bool:
    from nskernel import probe

    # Two tries: the first echo of a path just built may be lost while its ends learn
    # each other's addresses (ARP) and a new bridge's ports settle.
    return probe.ping(_lab(), source, address, count=2, timeout=0.5).ok


@checker
def two_hops(left: str = "left", middle: str = "middle", right: str = "right") -> None:
    """02: three namespaces in a row, linked left–middle–right, and ``left`` reaches
    ``right`` through ``middle``, which forwards."""
    _need_namespaces(left, middle, right)
    far = _addresses(right)
    if not far:
        raise NotYet(f"{right} has no IPv4 address yet: link it to {middle} with %veth")
    if not _addresses(left):
        raise NotYet(f"{left} has no IPv4 address yet: link it to {middle} with %veth")
    if any(far[0].ip in near.network for near in _addresses(left)):
        raise NotYet(f"{left} and {right} are on one LAN ({far[0].network}): give each link "
                     f"its own network, so that packets must cross {middle}")
    if not _forwards(middle):
        raise NotYet(f"{middle} does not forward packets yet (%forward {middle} on)")
    if not _pings(left, str(far[0].ip)):
        raise NotYet(f"{left} gets no reply from {far[0].ip}: does {left} have a route to it "
                     f"through {middle}, and {right} one back?")


@checker
def cut_off(ns: str = "left", far: str = "right") -> None:
    """02: every interface of ``ns`` (but lo) set down with ``ip``, so ``far`` is out of reach."""
    _need_namespaces(ns, far)
    up = [link["ifname"] for link in _lab().state(ns)["links"]
          if link["ifname"] != "lo" and link["state"] == "up"]
    if up:
        raise NotYet(f"{up[0]} in {ns} is still up (ip -n {ns} link set {up[0]} down)")
    targets = _addresses(far)
    if targets and _pings(ns, str(targets[0].ip)):
        raise NotYet(f"{ns} still reaches {targets[0].ip}")


# ---------------------------------------------------------------------------- 07
def _has_bridge(ns: str, name: str) -> bool:
    return any(link["ifname"] == name and link["kind"] == "bridge"
               for link in _lab().state(ns)["links"])


def _default_route(ns: str) -> bool:
    return any(route["dst"] == "default" for route in _lab().state(ns)["routes"])


@checker
def third_lan(host: str = "pc", address: str = "10.10.3.31", bridge: str = "lab",
              switch: str = "sw", router: str = "gw", source: str = "alice") -> None:
    """07: a third LAN, bridge ``bridge`` in ``switch`` with ``host`` at ``address`` and the
    router on it, reached from the office LAN."""
    _need_namespaces(source, switch, router, host)
    if not _has_bridge(switch, bridge):
        raise NotYet(f"no bridge {bridge!r} in {switch} yet (%bridge {bridge} ... --in {switch})")
    if ipaddress.IPv4Address(address) not in [a.ip for a in _addresses(host)]:
        raise NotYet(f"{host} does not have the address {address} yet")
    lan = next(a.network for a in _addresses(host) if str(a.ip) == address)
    if not any(a.ip in lan for a in _addresses(router)):
        raise NotYet(f"{router} has no address in {lan}: plug it into {bridge} too")
    if not _pings(source, address):
        raise NotYet(f"{source} gets no reply from {address}: does {host} have a default route "
                     f"through {router}'s address on its LAN?")


@checker
def no_way_back(host: str = "db", source: str = "alice", neighbour: str = "web") -> None:
    """07: ``host`` without its default route: ``source``'s ping gets no answer, while
    ``host`` still answers its own LAN."""
    _need_namespaces(host, source, neighbour)
    if _default_route(host):
        raise NotYet(f"{host} still has a default route (ip -n {host} route del default)")
    if not _default_route(source):
        raise NotYet(f"{source} has no default route: its pings must still reach {host}")
    target = str(_addresses(host)[0].ip)
    if _pings(source, target):
        raise NotYet(f"{source} still gets replies from {target}")
    if not _pings(neighbour, target):
        raise NotYet(f"{neighbour} gets no reply from {host} either: only its way to other "
                     "LANs should be gone")


# ---------------------------------------------------------------------------- 11
def _connect(client_ns: str, server_ns: str, listen: tuple[str, int],
             target: tuple[str, int] | None = None) -> str | None:
    """A TCP connection from ``client_ns`` to ``target`` (the server's own address when
    None), accepted by a server in ``server_ns`` on ``listen``: the client's address as the
    server saw it, or None."""
    lab = _lab()
    try:
        server = lab.run_in(server_ns, lambda: socket.create_server(listen))
    except OSError as error:
        raise NotYet(f"cannot serve on {listen[0]}:{listen[1]} in {server_ns}: "
                     f"{error.strerror}") from None
    client = lab.run_in(client_ns, socket.socket)
    try:
        server.settimeout(1)
        client.settimeout(1)
        client.connect(target or server.getsockname())
        connection, peer = server.accept()
        connection.close()
        return peer[0]
    except OSError:
        return None
    finally:
        client.close()
        server.close()


@checker
def published_port(service: str = "c2", address: str = "172.18.0.3", port: int = 80,
                   published: int = 8081, outside: str = "world",
                   machine: str = "198.51.100.1") -> None:
    """11: ``service``'s port published on the machine's ``published`` port: a connection
    from ``outside`` to it lands in ``service``."""
    _need_namespaces(service, outside, "host")
    if _connect(outside, service, (address, port), (machine, published)) is None:
        raise NotYet(f"{outside} cannot reach {service} at {machine}:{published}: a dnat rule "
                     f"in host's prerouting chain to {address}:{port}?")


@checker
def plain_routing(outside: str = "world", container: str = "c1",
                  container_address: str = "172.18.0.2", gateway: str = "198.51.100.1") -> None:
    """11: ``outside`` routes to the containers' network through the machine, and sees a
    container's own address: no masquerade left."""
    _need_namespaces(outside, container, "host")
    lan = ipaddress.IPv4Network(f"{container_address}/24", strict=False)
    if not any(r["dst"] == str(lan) and r["gateway"] == gateway
               for r in _lab().state(outside)["routes"]):
        raise NotYet(f"{outside} has no route to {lan} via {gateway} yet")
    peer = _connect(container, outside, (str(_addresses(outside)[0].ip), 0))
    if peer is None:
        raise NotYet(f"{container} cannot connect to {outside} any more")
    if peer != container_address:
        raise NotYet(f"{outside} sees the connection come from {peer}: the masquerade rule "
                     "still rewrites it (nft flush chain ip nat postrouting, in host)")
