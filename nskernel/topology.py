"""The live network picture: namespaces, bridges and veth links, read back from netlink.

Built from what the kernel reports, not from what the lab remembers, so it also shows what
was made by hand with ``ip``. Renders as SVG in a notebook and as text elsewhere; the SVG
carries ``data-`` attributes naming each node and link, so tests can read it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from nskernel.net import KERNEL_NS, Lab, named_namespaces


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
        ordered = []
        for ns in self.namespaces:
            ordered.append(ns)
            ordered += sorted(b for b in self.bridges if b.split("/")[0] == ns)
        return ordered

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
    """Nodes on a circle (each bridge beside its namespace), links as labelled lines."""
    nodes = topology.nodes
    count = max(len(nodes), 1)
    radius = 60 + 28 * count
    size = 2 * radius + 220
    centre = size / 2
    position = {}
    for number, node in enumerate(nodes):
        angle = 2 * math.pi * number / count - math.pi / 2
        position[node] = (centre + radius * math.cos(angle), centre + radius * math.sin(angle))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="nskernel-topology" '
             f'width="{size:.0f}" height="{size:.0f}" viewBox="0 0 {size:.0f} {size:.0f}" '
             'font-family="sans-serif" font-size="11">']
    for bridge in topology.bridges:
        (x1, y1), (x2, y2) = position[bridge.split("/")[0]], position[bridge]
        parts.append(f'<line class="in-ns" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" '
                     f'y2="{y2:.1f}" stroke="#999" stroke-dasharray="4 3"/>')
    for a, b in topology.links:
        (x1, y1), (x2, y2) = position[a.node], position[b.node]
        parts.append(f'<g class="link" data-a="{escape(str(a.node))}:{escape(a.ifname)}" '
                     f'data-b="{escape(str(b.node))}:{escape(b.ifname)}">'
                     f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                     'stroke="#2660a0" stroke-width="2"/>')
        for end, (ex, ey), (ox, oy) in ((a, (x1, y1), (x2, y2)), (b, (x2, y2), (x1, y1))):
            lx, ly = ex + (ox - ex) * 0.3, ey + (oy - ey) * 0.3
            label = " ".join([end.ifname, *end.addresses])
            parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle" '
                         f'fill="#333" stroke="white" stroke-width="3" paint-order="stroke">'
                         f'{escape(label)}</text>')
        parts.append("</g>")
    for node in nodes:
        x, y = position[node]
        if "/" in node:
            label = node.split("/")[1]
            extra = " ".join(topology.bridges[node])
            parts.append(f'<g class="bridge" data-name="{escape(node)}">'
                         f'<ellipse cx="{x:.1f}" cy="{y:.1f}" rx="34" ry="16" fill="#fde3d0" '
                         f'stroke="#f37626"/><text x="{x:.1f}" y="{y + 4:.1f}" '
                         f'text-anchor="middle">{escape(label)}</text>'
                         + (f'<text x="{x:.1f}" y="{y + 30:.1f}" text-anchor="middle" '
                            f'fill="#555">{escape(extra)}</text>' if extra else "") + "</g>")
        else:
            parts.append(f'<g class="ns" data-name="{escape(node)}">'
                         f'<rect x="{x - 40:.1f}" y="{y - 16:.1f}" width="80" height="32" '
                         f'rx="6" fill="#dbe8f6" stroke="#2660a0"/><text x="{x:.1f}" '
                         f'y="{y + 4:.1f}" text-anchor="middle" font-weight="bold">'
                         f'{escape(node)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
