"""The live network picture: namespaces, bridges and veth links, read back from netlink.

Built from what the kernel reports, not from what the lab remembers, so it also shows what
was made by hand with ``ip``. Renders as SVG in a notebook and as text elsewhere; the SVG
carries ``data-`` attributes naming each node and link, so tests can read it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from nskernel.net import Lab
from nskernel.netns import KERNEL_NS, named_namespaces


@dataclass(frozen=True)
class End:
    """One end of a link: the node it hangs on, its interface and addresses."""

    node: str
    ifname: str
    addresses: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.node}:{self.ifname}" + "".join(f" {a}" for a in self.addresses)


@dataclass
class Topology:
    namespaces: list[str] = field(default_factory=list)
    bridges: dict[str, list[str]] = field(default_factory=dict)  # "ns/br" -> addresses
    links: list[tuple[End, End]] = field(default_factory=list)

    @property
    def nodes(self) -> list[str]:
        """What the picture draws: bridges, and the namespaces that have links of their own
        (one that only hosts bridges shows in their labels, "br0 @ sw", not as a box)."""
        linked = {end.node for pair in self.links for end in pair}
        return [ns for ns in self.namespaces if ns in linked] + sorted(self.bridges)

    def __repr__(self) -> str:
        lines = [f"namespaces: {', '.join(self.namespaces) or 'none'}"]
        for bridge, addresses in sorted(self.bridges.items()):
            ns, name = bridge.split("/")
            lines.append(f"bridge {name} in {ns}" + "".join(f" {a}" for a in addresses))
        lines += [f"link {a} <-> {b}" for a, b in self.links]
        return "\n".join(lines)

    def _repr_svg_(self) -> str:
        return render_svg(self)


def read(lab: Lab, namespaces: list[str] | None = None) -> Topology:
    """Read every named namespace (and the kernel's) and pair up their veth ends."""
    names = [KERNEL_NS, *(namespaces if namespaces is not None else named_namespaces())]
    states = {ns: lab.state(ns) for ns in names}
    topology = Topology()
    veths = []
    for ns, state in states.items():
        by_index = {link["index"]: link for link in state["links"]}
        addresses: dict[int, list[str]] = {}
        for address in state["addresses"]:
            if address["family"] == 2:
                addresses.setdefault(address["index"], []).append(address["address"])
        for link in state["links"]:
            if link["kind"] == "bridge":
                topology.bridges[f"{ns}/{link['ifname']}"] = addresses.get(link["index"], [])
        for link in state["links"]:
            if link["kind"] != "veth":
                continue
            master = by_index.get(link["master"])
            node = f"{ns}/{master['ifname']}" if master and master["kind"] == "bridge" else ns
            end = End(node, link["ifname"], tuple(addresses.get(link["index"], [])))
            veths.append((ns, link["index"], link["peer"], end))
    seen = set()
    for ns, index, peer, end in veths:
        for other_ns, other_index, other_peer, other in veths:
            if (other_index, other_peer) == (peer, index) and other_ns != ns and \
                    (other_ns, other_index) not in seen:
                seen.add((ns, index))
                topology.links.append((end, other))
                break
    used = {end.node.split("/")[0] for pair in topology.links for end in pair}
    used |= {bridge.split("/")[0] for bridge in topology.bridges}
    topology.namespaces = [ns for ns in names if ns != KERNEL_NS or ns in used]
    topology.bridges = {b: a for b, a in topology.bridges.items()
                        if b.split("/")[0] in topology.namespaces}
    return topology


def render_svg(topology: Topology) -> str:
    """Namespaces on a circle, in the order a walk along the links meets them (so linked
    ones sit side by side), each bridge inside the circle among its members."""
    position = _layout(topology)
    size = 2 * max((abs(v) for point in position.values() for v in point), default=0) + 200
    centre = size / 2
    position = {node: (centre + x, centre + y) for node, (x, y) in position.items()}
    nodes = topology.nodes
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="nskernel-topology" '
             f'width="{size:.0f}" height="{size:.0f}" viewBox="0 0 {size:.0f} {size:.0f}" '
             'font-family="sans-serif" font-size="11">']
    for a, b in topology.links:
        (x1, y1), (x2, y2) = position[a.node], position[b.node]
        parts.append(f'<g class="link" data-a="{escape(str(a.node))}:{escape(a.ifname)}" '
                     f'data-b="{escape(str(b.node))}:{escape(b.ifname)}">'
                     f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                     'stroke="#2660a0" stroke-width="2"/>')
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        normal = ((y1 - y2) / length * 9, (x2 - x1) / length * 9)  # labels sit beside the line
        for end, (ex, ey), (ox, oy) in ((a, (x1, y1), (x2, y2)), (b, (x2, y2), (x1, y1))):
            lx = ex + (ox - ex) * 0.2 + normal[0]
            ly = ey + (oy - ey) * 0.2 + normal[1] + 4
            anchor = "start" if ox - ex > 40 else "end" if ex - ox > 40 else "middle"
            label = " ".join([end.ifname, *end.addresses])
            parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" '
                         f'fill="#333" stroke="white" stroke-width="3" paint-order="stroke">'
                         f'{escape(label)}</text>')
        parts.append("</g>")
    for node in nodes:
        x, y = position[node]
        if "/" in node:
            ns, bridge = node.split("/")
            label = f"{bridge} @ {ns}"
            extra = " ".join(topology.bridges[node])
            parts.append(f'<g class="bridge" data-name="{escape(node)}">'
                         f'<ellipse cx="{x:.1f}" cy="{y:.1f}" rx="44" ry="16" fill="#fde3d0" '
                         f'stroke="#f37626"/><text x="{x:.1f}" y="{y + 4:.1f}" '
                         f'text-anchor="middle">{escape(label)}</text>'
                         + (f'<text x="{x:.1f}" y="{y - 22:.1f}" text-anchor="middle" '
                            f'fill="#555">{escape(extra)}</text>' if extra else "") + "</g>")
        else:
            parts.append(f'<g class="ns" data-name="{escape(node)}">'
                         f'<rect x="{x - 40:.1f}" y="{y - 16:.1f}" width="80" height="32" '
                         f'rx="6" fill="#dbe8f6" stroke="#2660a0"/><text x="{x:.1f}" '
                         f'y="{y + 4:.1f}" text-anchor="middle" font-weight="bold">'
                         f'{escape(node)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _layout(topology: Topology) -> dict[str, tuple[float, float]]:
    """Positions around (0, 0): namespaces on a circle, bridges at their members' centre."""
    neighbours: dict[str, set[str]] = {node: set() for node in topology.nodes}
    for a, b in topology.links:
        neighbours[a.node].add(b.node)
        neighbours[b.node].add(a.node)
    order: list[str] = []

    def walk(node: str) -> None:  # depth first, through bridges, recording namespaces
        if node in order:
            return
        order.append(node)
        for other in sorted(neighbours[node]):
            walk(other)

    for node in topology.nodes:
        walk(node)
    ring = [node for node in order if "/" not in node]
    radius = 130 + 26 * len(ring)
    position = {}
    for number, node in enumerate(ring):
        angle = 2 * math.pi * number / max(len(ring), 1) - math.pi / 2
        position[node] = (radius * math.cos(angle), radius * math.sin(angle))
    for bridge in sorted(topology.bridges):
        members = [position[n] for n in neighbours[bridge] if n in position]
        x = sum(p[0] for p in members) / len(members) if members else 0.0
        y = sum(p[1] for p in members) / len(members) if members else 0.0
        position[bridge] = (x * 0.55, y * 0.55)
    return position
