"""The live network picture: namespaces, bridges and veth links, read back from netlink.

Built from what the kernel reports, not from what the lab remembers, so it also shows what
was made by hand with ``ip``. Renders as SVG in a notebook and as text elsewhere; the SVG
carries ``data-`` attributes naming each node and link, so tests can read it back.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from html import escape

from nskernel.netlab.net import Lab
from nskernel.netlab.netns import KERNEL_NS, named_namespaces


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

    def _repr_html_(self) -> str:
        """The same picture as an image, a form that JupyterLab also shows in a notebook
        it does not trust (it shows a saved SVG only from a trusted one, so a shipped
        notebook opened on a new machine would show the text form instead)."""
        data = base64.b64encode(render_svg(self).encode()).decode()
        return f'<img alt="{escape(repr(self))}" src="data:image/svg+xml;base64,{data}"/>'


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


# The picture's measures. Labels are set in a monospace font, so a label's width is known
# here without a browser: every font that "monospace" resolves to is at most 0.61 em wide per
# character, which is what CHAR_WIDTH allows for.
FONT_SIZE = 12
CHAR_WIDTH = 0.61 * FONT_SIZE
ROW = 18  # height of one line of a card
PAD = 8  # inside a card, around its lines
GAP = 40  # the least room between two cards, so a link between them shows
MARGIN = 12
COLUMN = 4  # the most leaves hung in one column beside their node


@dataclass
class Card:
    """A node drawn as a card: its name on top, then one row per interface (or address)."""

    node: str
    title: str
    rows: list[str]
    x: float = 0.0  # centre
    y: float = 0.0

    @property
    def width(self) -> float:
        longest = max(len(text) for text in [self.title, *self.rows])
        return longest * CHAR_WIDTH + 2 * PAD

    @property
    def height(self) -> float:
        return (1 + len(self.rows)) * ROW + 2 * PAD - 4

    def box(self, gap: float = 0.0) -> tuple[float, float, float, float]:
        """(left, top, right, bottom), grown by ``gap`` on every side."""
        half_w, half_h = self.width / 2 + gap, self.height / 2 + gap
        return (self.x - half_w, self.y - half_h, self.x + half_w, self.y + half_h)

    def row_y(self, row: int) -> float:
        """The middle of row ``row`` (0 is the first row under the title)."""
        return self.y - self.height / 2 + PAD + (row + 1.5) * ROW - 2


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (left, top, right, bottom) boxes share any area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def cards(topology: Topology) -> dict[str, Card]:
    """One card per node (its interfaces are added as rows when the picture is drawn)."""
    result: dict[str, Card] = {}
    for node in topology.nodes:
        if "/" in node:
            ns, bridge = node.split("/")
            result[node] = Card(node, f"{bridge} @ {ns}", list(topology.bridges[node]))
        else:
            result[node] = Card(node, node, [])
    for pair in topology.links:
        for end in pair:
            result[end.node].rows.append(" ".join([end.ifname, *end.addresses]))
    return result


def render_svg(topology: Topology) -> str:
    """Each namespace or bridge as a card listing its interfaces, each link a line between
    the two interfaces' rows; cards placed by :func:`_layout`, so none overlaps another.
    A card lists its interfaces in the order of their peers from top to bottom, so the lines
    leaving it do not cross each other."""
    placed = cards(topology)
    for node, (x, y) in _layout(topology, placed).items():
        placed[node].x, placed[node].y = x, y
    boxes = [card.box(MARGIN) for card in placed.values()]
    left = min((b[0] for b in boxes), default=0.0)
    top = min((b[1] for b in boxes), default=0.0)
    width = max((b[2] for b in boxes), default=0.0) - left
    height = max((b[3] for b in boxes), default=0.0) - top
    for card in placed.values():
        card.x, card.y = card.x - left, card.y - top
    ends: dict[str, list[tuple[End, Card]]] = {node: [] for node in placed}
    for a, b in topology.links:
        ends[a.node].append((a, placed[b.node]))
        ends[b.node].append((b, placed[a.node]))
    row_y: dict[tuple[str, str], float] = {}
    for node, card in placed.items():
        ordered = sorted(ends[node], key=lambda pair: (pair[1].y, pair[1].x))
        first = len(topology.bridges.get(node, []))
        card.rows[first:] = [" ".join([end.ifname, *end.addresses]) for end, _ in ordered]
        for row, (end, _) in enumerate(ordered, start=first):
            row_y[(node, end.ifname)] = card.row_y(row)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="nskernel-topology" '
             f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
             f'font-size="{FONT_SIZE}">']
    for a, b in topology.links:
        # from the left or right edge of each card, at the interface's row: the shortest line
        y1, y2 = row_y[(a.node, a.ifname)], row_y[(b.node, b.ifname)]
        card_a, card_b = placed[a.node], placed[b.node]
        x1, x2 = min(((card_a.x + s * card_a.width / 2, card_b.x + t * card_b.width / 2)
                      for s in (-1, 1) for t in (-1, 1)),
                     key=lambda xs: math.hypot(xs[0] - xs[1], y1 - y2))
        parts.append(f'<g class="link" data-a="{escape(a.node)}:{escape(a.ifname)}" '
                     f'data-b="{escape(b.node)}:{escape(b.ifname)}">'
                     f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                     'stroke="#2660a0" stroke-width="2"/>'
                     f'<circle cx="{x1:.1f}" cy="{y1:.1f}" r="3" fill="#2660a0"/>'
                     f'<circle cx="{x2:.1f}" cy="{y2:.1f}" r="3" fill="#2660a0"/></g>')
    for card in placed.values():
        bridge = "/" in card.node
        left_x, top_y, _, _ = card.box()
        fill, stroke = ("#fde3d0", "#f37626") if bridge else ("#dbe8f6", "#2660a0")
        parts.append(f'<g class="{"bridge" if bridge else "ns"}" '
                     f'data-name="{escape(card.node)}">'
                     f'<rect x="{left_x:.1f}" y="{top_y:.1f}" width="{card.width:.1f}" '
                     f'height="{card.height:.1f}" rx="6" fill="{fill}" stroke="{stroke}"/>'
                     f'<text x="{left_x + PAD:.1f}" y="{card.row_y(-1) + 4:.1f}" '
                     f'font-weight="bold">{escape(card.title)}</text>')
        for number, text in enumerate(card.rows):
            parts.append(f'<text x="{left_x + PAD:.1f}" y="{card.row_y(number) + 4:.1f}" '
                         f'fill="#333">{escape(text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _layout(topology: Topology, placed: dict[str, Card] | None = None
            ) -> dict[str, tuple[float, float]]:
    """Centres around (0, 0).

    A leaf (a namespace whose one neighbour has others) hangs beside its neighbour, in a
    column to its left or right (two columns for many). Every other node sits on an ellipse,
    in the order a walk along the links meets them, so linked ones are side by side. The
    ellipse starts small and grows until no two groups (a node and its leaves) come closer
    than GAP, so a small lab gets a small picture. Of a few shapes of ellipse, the one whose
    picture is smallest wins, its longer side counting double and its width more than its
    height (a notebook is only so wide: a wide picture is shrunk to fit)."""
    placed = placed if placed is not None else cards(topology)
    if not placed:
        return {}
    neighbours: dict[str, list[str]] = {node: [] for node in topology.nodes}
    for a, b in topology.links:
        for one, other in ((a.node, b.node), (b.node, a.node)):
            if other not in neighbours[one]:
                neighbours[one].append(other)

    def is_leaf(node: str) -> bool:
        return "/" not in node and len(neighbours[node]) == 1 and \
            len(neighbours[neighbours[node][0]]) > 1

    order: list[str] = []

    def walk(node: str) -> None:  # depth first, through the links, in the order made
        if node in order or is_leaf(node):
            return
        order.append(node)
        for other in neighbours[node]:
            walk(other)

    for node in topology.nodes:
        walk(node)
    start = math.pi if len(order) == 2 else -math.pi / 2  # two side by side, else from the top
    angles = {node: start + 2 * math.pi * number / len(order) for number, node in enumerate(order)}
    leaves = {node: [n for n in neighbours[node] if is_leaf(n)] for node in order}
    # beside its node, relative to its centre: a few leaves in one column on the side away
    # from the middle of the picture; more, half of them on each side
    beside: dict[str, tuple[float, float]] = {}
    for node, hanging in leaves.items():
        outward = 1 if math.cos(angles[node]) > -1e-9 else -1
        half = len(hanging) // 2 if len(hanging) > COLUMN else 0
        for column, sign in ((hanging[:half], -outward), (hanging[half:], outward)):
            height = sum(placed[n].height for n in column) + GAP / 2 * (len(column) - 1)
            y = -height / 2
            for leaf in column:
                x = sign * (placed[node].width / 2 + GAP + placed[leaf].width / 2)
                beside[leaf] = (x, y + placed[leaf].height / 2)
                y += placed[leaf].height + GAP / 2

    def spread(width_factor: float) -> tuple[float, dict[str, tuple[float, float]]]:
        radius = 20.0
        while True:
            position: dict[str, tuple[float, float]] = {}
            groups = []
            for node, angle in angles.items():
                x, y = width_factor * radius * math.cos(angle), radius * math.sin(angle)
                position[node] = (x, y)
                position.update({leaf: (x + beside[leaf][0], y + beside[leaf][1])
                                 for leaf in leaves[node]})
                group = []
                for member in (node, *leaves[node]):
                    placed[member].x, placed[member].y = position[member]
                    group.append(placed[member].box(GAP / 2))
                groups.append(group)
            boxes = [box for group in groups for box in group]
            if not any(overlap(a, b) for i, group in enumerate(groups) for a in group
                       for other in groups[i + 1:] for b in other):
                width = max(b[2] for b in boxes) - min(b[0] for b in boxes)
                height = max(b[3] for b in boxes) - min(b[1] for b in boxes)
                return max(1.3 * width, height) + min(width, height) / 2, position
            radius *= 1.08

    return min((spread(factor) for factor in (0.6, 1.0, 1.6, 2.4, 4.0)), key=lambda t: t[0])[1]
