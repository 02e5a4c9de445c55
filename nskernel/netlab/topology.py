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
        """What the picture draws as cards: the namespaces that have links or bridges. A
        bridge is drawn inside its namespace's card, where it is."""
        drawn = {end.node.split("/")[0] for pair in self.links for end in pair}
        drawn |= {bridge.split("/")[0] for bridge in self.bridges}
        return [ns for ns in self.namespaces if ns in drawn] + \
            sorted(drawn - set(self.namespaces))

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
PAD = 8  # inside a card, around its lines; a bridge's box is inset by half of it
SECTION = 6  # the room above a bridge's box, inside its namespace's card
GAP = 40  # the least room between two cards, so a link between them shows
STUB = 10  # a line leaves its card straight out from its interface's row, this far
MARGIN = 12
COLUMN = 4  # the most leaves hung in one column beside their node


def card_of(node: str) -> str:
    """The card a link end is drawn on: its namespace's ("sw" for "sw/br0")."""
    return node.split("/")[0]


@dataclass
class Row:
    """One line of a card: an interface (``end``: the link end drawn from it), or a bridge's
    name and addresses; ``bridge``: the bridge ("ns/br") whose box holds the row."""

    text: str
    end: End | None = None
    bridge: str | None = None


@dataclass
class Card:
    """A namespace drawn as a card: its name on top, a row per interface of its own, then a
    box per bridge in it: the bridge's name and addresses, and a row per port."""

    node: str
    title: str
    rows: list[Row]
    x: float = 0.0  # centre
    y: float = 0.0

    @property
    def width(self) -> float:
        longest = max([len(self.title) * CHAR_WIDTH + 2 * PAD]
                      + [len(row.text) * CHAR_WIDTH + (3 if row.bridge else 2) * PAD
                         for row in self.rows])
        return longest

    @property
    def height(self) -> float:
        return (1 + len(self.rows)) * ROW + 2 * PAD - 4 + SECTION * len(self.bridges())

    def bridges(self) -> list[str]:
        """The bridges in this card, top to bottom."""
        return list(dict.fromkeys(row.bridge for row in self.rows if row.bridge))

    def box(self, gap: float = 0.0) -> tuple[float, float, float, float]:
        """(left, top, right, bottom), grown by ``gap`` on every side."""
        half_w, half_h = self.width / 2 + gap, self.height / 2 + gap
        return (self.x - half_w, self.y - half_h, self.x + half_w, self.y + half_h)

    def row_y(self, row: int) -> float:
        """The middle of row ``row`` (0 is the first row under the title, -1 the title)."""
        sections = len({r.bridge for r in self.rows[:row + 1] if r.bridge}) if row >= 0 else 0
        return self.y - self.height / 2 + PAD + (row + 1.5) * ROW - 2 + SECTION * sections

    def bridge_box(self, bridge: str) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of a bridge's box: from its name's row to its last port."""
        numbers = [n for n, row in enumerate(self.rows) if row.bridge == bridge]
        left, _, right, _ = self.box()
        return (left + PAD / 2, self.row_y(numbers[0]) - ROW / 2 - 1,
                right - PAD / 2, self.row_y(numbers[-1]) + ROW / 2 - 1)


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (left, top, right, bottom) boxes share any area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def crosses(p: tuple[float, float], q: tuple[float, float],
            box: tuple[float, float, float, float]) -> bool:
    """Whether the segment p-q runs through the inside of a (left, top, right, bottom) box
    (Liang-Barsky clipping: the part of the segment within each pair of edges)."""
    start, end = 0.0, 1.0
    dx, dy = q[0] - p[0], q[1] - p[1]
    for delta, low, high, at in ((dx, box[0], box[2], p[0]), (dy, box[1], box[3], p[1])):
        if abs(delta) < 1e-9:
            if not low < at < high:
                return False
            continue
        one, two = sorted(((low - at) / delta, (high - at) / delta))
        start, end = max(start, one), min(end, two)
    return end - start > 1e-6


def cards(topology: Topology) -> dict[str, Card]:
    """One card per namespace drawn, its rows in the order of the links (the picture
    orders them again once the cards are placed)."""
    result = {node: Card(node, node, []) for node in topology.nodes}
    peers: dict[str, list[tuple[End, End]]] = {}
    for a, b in topology.links:
        peers.setdefault(a.node, []).append((a, b))
        peers.setdefault(b.node, []).append((b, a))
    for node in topology.nodes:
        result[node].rows += [Row(" ".join([end.ifname, *end.addresses]), end)
                              for end, _ in peers.get(node, [])]
    for bridge in sorted(topology.bridges):
        ns, name = bridge.split("/")
        rows = result[ns].rows
        rows.append(Row(" ".join([f"bridge {name}", *topology.bridges[bridge]]), None, bridge))
        # a port says who is plugged into it: the namespace at the veth's other end
        rows += [Row(f"{end.ifname} \u2192 {card_of(peer.node)}", end, bridge)
                 for end, peer in peers.get(bridge, [])]
    return result


def render_svg(topology: Topology) -> str:
    """Each namespace as a card listing its interfaces, with a box inside for each bridge it
    holds and a row per port; each link a line between the two interfaces' rows, leaving
    each card's left or right edge straight out from the row (see :func:`_route`). Cards
    placed by :func:`_layout`, so none overlaps another. A card lists its interfaces (and
    each bridge its ports) in the order of their peers from top to bottom, so the lines
    leaving it do not cross each other."""
    placed = cards(topology)
    for node, (x, y) in _layout(topology, placed).items():
        placed[node].x, placed[node].y = x, y
    boxes = [card.box(MARGIN) for card in placed.values()]
    left = min((b[0] for b in boxes), default=0.0)
    top = min((b[1] for b in boxes), default=0.0)
    width = max((b[2] for b in boxes), default=0.0) - left
    height = max((b[3] for b in boxes), default=0.0) - top
    peer_of = {}
    for a, b in topology.links:
        peer_of[a], peer_of[b] = placed[card_of(b.node)], placed[card_of(a.node)]
    for card in placed.values():
        card.x, card.y = card.x - left, card.y - top
    for card in placed.values():
        # each section (own interfaces, then each bridge's ports), its rows by their peers
        sections: dict[str | None, list[Row]] = {}
        for row in card.rows:
            sections.setdefault(row.bridge, []).append(row)
        card.rows = []
        for rows in sections.values():
            heading = [row for row in rows if row.end is None]
            ends = sorted((row for row in rows if row.end is not None),
                          key=lambda row: (peer_of[row.end].y, peer_of[row.end].x))
            card.rows += heading + ends
    row_y = {row.end: card.row_y(number) for card in placed.values()
             for number, row in enumerate(card.rows) if row.end is not None}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="nskernel-topology" '
             f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
             f'font-size="{FONT_SIZE}">']
    for a, b in topology.links:
        points = _route(placed[card_of(a.node)], row_y[a], placed[card_of(b.node)], row_y[b],
                        [card.box() for card in placed.values()])
        parts.append(f'<g class="link" data-a="{escape(a.node)}:{escape(a.ifname)}" '
                     f'data-b="{escape(b.node)}:{escape(b.ifname)}">'
                     f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}" '
                     'fill="none" stroke="#2660a0" stroke-width="2"/>'
                     + "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#2660a0"/>'
                               for x, y in (points[0], points[-1])) + '</g>')
    for card in placed.values():
        parts.append(_card_svg(card))
    parts.append("</svg>")
    return "".join(parts)


def _route(one: Card, y1: float, other: Card, y2: float,
           boxes: list[tuple[float, float, float, float]]) -> list[tuple[float, float]]:
    """A line's points: from one card's edge at its row straight out, across to the other
    card's row (straight, or by a corner where a straight line would run behind a card),
    and straight in. Of the ways, the one that runs behind the fewest cards, then the
    shortest."""
    def ways(s: int, t: int) -> list[list[tuple[float, float]]]:
        x1, x2 = one.x + s * one.width / 2, other.x + t * other.width / 2
        out, into = (x1 + s * STUB, y1), (x2 + t * STUB, y2)
        return [[(x1, y1), out, *corner, into, (x2, y2)]
                for corner in ((), ((out[0], y2),), ((into[0], y1),))]

    def cost(points: list[tuple[float, float]]) -> tuple[int, float]:
        middle = list(zip(points[1:-2], points[2:-1], strict=True))
        return (sum(crosses(p, q, box) for p, q in middle for box in boxes),
                sum(math.dist(p, q) for p, q in middle))

    return min((way for s in (-1, 1) for t in (-1, 1) for way in ways(s, t)), key=cost)


def _card_svg(card: Card) -> str:
    """A card: its box and title, its own rows, and a box (a group of its own) per bridge."""
    left, top, _, _ = card.box()
    parts = [f'<g class="ns" data-name="{escape(card.node)}">'
             f'<rect x="{left:.1f}" y="{top:.1f}" width="{card.width:.1f}" '
             f'height="{card.height:.1f}" rx="6" fill="#dbe8f6" stroke="#2660a0"/>'
             f'<text x="{left + PAD:.1f}" y="{card.row_y(-1) + 4:.1f}" '
             f'font-weight="bold">{escape(card.title)}</text>']

    def text(number: int, row: Row, x: float) -> str:
        bold = ' font-weight="bold"' if row.end is None else ' fill="#333"'
        name = f' data-if="{escape(row.end.ifname)}"' if row.end is not None else ""
        return (f'<text x="{x:.1f}" y="{card.row_y(number) + 4:.1f}"{name}{bold}>'
                f'{escape(row.text)}</text>')

    parts += [text(n, row, left + PAD) for n, row in enumerate(card.rows) if not row.bridge]
    for bridge in card.bridges():
        x1, y1, x2, y2 = card.bridge_box(bridge)
        parts.append(f'<g class="bridge" data-name="{escape(bridge)}">'
                     f'<rect x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" '
                     f'height="{y2 - y1:.1f}" rx="4" fill="#fde3d0" stroke="#f37626"/>')
        parts += [text(n, row, x1 + PAD) for n, row in enumerate(card.rows)
                  if row.bridge == bridge]
        parts.append("</g>")
    parts.append("</g>")
    return "".join(parts)


def _layout(topology: Topology, placed: dict[str, Card] | None = None
            ) -> dict[str, tuple[float, float]]:
    """Centres around (0, 0).

    A leaf (a namespace whose one neighbour has others) hangs beside its neighbour, in a
    column to its left or right (two columns for many), in the order of the rows its lines
    go to. Every other node sits on an ellipse,
    in the order a walk along the links meets them, so linked ones are side by side. The
    ellipse starts small and grows until no two groups (a node and its leaves) come closer
    than GAP, so a small lab gets a small picture. Of a few shapes of ellipse, the one whose
    picture is smallest wins, its longer side counting double and its width more than its
    height (a notebook is only so wide: a wide picture is shrunk to fit)."""
    placed = placed if placed is not None else cards(topology)
    if not placed:
        return {}
    neighbours: dict[str, list[str]] = {node: [] for node in topology.nodes}
    first_row: dict[tuple[str, str], int] = {}  # (card, neighbour): its first row facing it
    for a, b in topology.links:
        for one, other in ((a, b), (b, a)):
            card, peer = card_of(one.node), card_of(other.node)
            if peer != card and peer not in neighbours[card]:
                neighbours[card].append(peer)
            row = next(n for n, row in enumerate(placed[card].rows) if row.end == one)
            first_row[(card, peer)] = min(row, first_row.get((card, peer), row))

    def is_leaf(node: str) -> bool:
        return len(neighbours[node]) == 1 and len(neighbours[neighbours[node][0]]) > 1

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
    # in the order of the rows they are linked to, so that their lines do not cross
    leaves = {node: sorted((n for n in neighbours[node] if is_leaf(n)),
                           key=lambda leaf, node=node: first_row[(node, leaf)])
              for node in order}
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
