"""The topology picture drawn from a saved state, with no lab running."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from nskernel.netlab.topology import End, Topology, _layout, crosses, render_svg

SVG = "{http://www.w3.org/2000/svg}"
NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def star_and_line() -> Topology:
    """h1..h3 on a bridge in the kernel's namespace, and a router r between h3 and far."""
    return Topology(
        namespaces=["h1", "h2", "h3", "r", "far"],
        bridges={"kernel/br0": ["10.0.0.254/24"]},
        links=[(End("kernel/br0", f"br0p{i}"), End(f"h{i + 1}", f"h{i + 1}-eth0",
                                                   (f"10.0.0.{i + 1}/24",)))
               for i in range(3)] + [(End("h3", "h3-eth1"), End("r", "r-eth0")),
                                      (End("r", "r-eth1"), End("far", "far-eth0"))])


def test_every_node_has_a_place_of_its_own():
    topology = star_and_line()
    places = _layout(topology)
    assert set(places) == set(topology.nodes)
    assert len(set(places.values())) == len(places)


def test_the_svg_names_every_node_and_link():
    svg = render_svg(star_and_line())
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert sorted(re.findall(r'class="ns" data-name="([^"]+)"', svg)) == sorted(
        ["h1", "h2", "h3", "r", "far", "kernel"])
    assert re.findall(r'class="bridge" data-name="([^"]+)"', svg) == ["kernel/br0"]
    assert len(re.findall(r'<g class="link"', svg)) == 5
    assert 'data-a="r:r-eth1" data-b="far:far-eth0"' in svg
    assert "10.0.0.2/24" in svg and "bridge br0 10.0.0.254/24" in svg


def test_a_bridge_port_says_who_is_plugged_into_it():
    texts = {text.get("data-if"): text.text
             for text in svg_tree(star_and_line()).iter(f"{SVG}text")}
    assert [texts[f"br0p{i}"] for i in range(3)] == ["br0p0 \u2192 h1", "br0p1 \u2192 h2",
                                                     "br0p2 \u2192 h3"]
    assert texts["h1-eth0"] == "h1-eth0 10.0.0.1/24"


def svg_tree(topology: Topology) -> ElementTree.Element:
    return ElementTree.fromstring(render_svg(topology))


def rect_box(group: ElementTree.Element) -> tuple[float, float, float, float]:
    rect = group.find(f"{SVG}rect")
    x, y = float(rect.get("x")), float(rect.get("y"))
    return (x, y, x + float(rect.get("width")), y + float(rect.get("height")))


def inside(inner: tuple, outer: tuple) -> bool:
    return outer[0] <= inner[0] and inner[2] <= outer[2] and \
        outer[1] <= inner[1] and inner[3] <= outer[3]


def eleven() -> Topology:
    """Notebook 11's lab: a bridge in host with two containers, and host's uplink to world."""
    return Topology(namespaces=["c1", "c2", "host", "world"],
                    bridges={"host/br0": ["172.18.0.1/24"]},
                    links=[(End("c1", "c1-eth0", ("172.18.0.2/24",)), End("host/br0", "br0p0")),
                           (End("c2", "c2-eth0", ("172.18.0.3/24",)), End("host/br0", "br0p1")),
                           (End("host", "host-eth0", ("198.51.100.1/24",)),
                            End("world", "world-eth0", ("198.51.100.2/24",)))])


def seven() -> Topology:
    """Notebook 7's lab: two bridges in sw, a router plugged into both."""
    hosts = {"office": ["alice", "bob", "gw"], "servers": ["db", "web", "gw"]}
    return Topology(namespaces=["alice", "bob", "db", "gw", "sw", "web"],
                    bridges={"sw/office": [], "sw/servers": []},
                    links=[(End(f"sw/{bridge}", f"{bridge}p{i}"),
                            End(host, f"{host}-eth{int(host == 'gw' and bridge == 'servers')}"))
                           for bridge, members in hosts.items()
                           for i, host in enumerate(members)])


PICTURES = {"star of 20": lambda: star(20), "star of 5": lambda: star(5),
            "star and line": lambda: star_and_line(), "two hosts": lambda: two_hosts(),
            "notebook 7": seven, "notebook 11": eleven}


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_a_bridge_is_drawn_inside_its_namespaces_card(name):
    root = svg_tree(PICTURES[name]())
    for card in root.iter(f"{SVG}g"):
        if card.get("class") != "ns":
            continue
        bridges = [g for g in card if g.get("class") == "bridge"]
        for bridge in bridges:
            assert bridge.get("data-name").split("/")[0] == card.get("data-name")
            assert inside(rect_box(bridge), rect_box(card))
    drawn = {g.get("data-name") for g in root.iter(f"{SVG}g") if g.get("class") == "bridge"}
    assert drawn == set(PICTURES[name]().bridges)


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_every_line_ends_at_its_interfaces_row_and_arrives_from_outside(name):
    """A line's ends are dots on its cards' left or right edges, level with the rows of the
    interfaces it joins; it leaves each straight out, and the rest of it runs behind neither
    of the two cards it joins."""
    root = svg_tree(PICTURES[name]())
    cards = {g.get("data-name"): g for g in root.iter(f"{SVG}g") if g.get("class") == "ns"}
    links = [g for g in root.iter(f"{SVG}g") if g.get("class") == "link"]
    assert len(links) == len(PICTURES[name]().links)
    for link in links:
        points = [tuple(map(float, point.split(",")))
                  for point in link.find(f"{SVG}polyline").get("points").split()]
        assert len(points) >= 4
        for end, (x, y), (out_x, out_y) in ((link.get("data-a"), points[0], points[1]),
                                            (link.get("data-b"), points[-1], points[-2])):
            node, ifname = end.split(":")
            card = cards[node.split("/")[0]]
            row = next(t for t in card.iter(f"{SVG}text") if t.get("data-if") == ifname)
            assert abs(float(row.get("y")) - 4 - y) < 0.11, (end, y, row.get("y"))
            left, _, right, _ = rect_box(card)
            assert min(abs(x - left), abs(x - right)) < 0.11, (end, x, left, right)
            outward = -1 if abs(x - left) < 0.11 else 1
            assert out_y == y and (out_x - x) * outward > 0, (end, points)
            dots = [(float(c.get("cx")), float(c.get("cy"))) for c in link.iter(f"{SVG}circle")]
            assert any(math.dist(dot, (x, y)) < 0.11 for dot in dots), (end, dots)
        own = {cards[end.split(":")[0].split("/")[0]] for end in (link.get("data-a"),
                                                                  link.get("data-b"))}
        for card in own:
            for p, q in zip(points[1:-2], points[2:-1], strict=True):
                assert not crosses(p, q, rect_box(card)), (link.attrib, points)


def test_the_text_form_lists_what_the_picture_shows():
    text = repr(star_and_line())
    assert text.splitlines()[:2] == ["namespaces: h1, h2, h3, r, far",
                                     "bridge br0 in kernel 10.0.0.254/24"]
    assert "link h3:h3-eth1 <-> r:r-eth0" in text


def test_a_namespace_without_links_is_listed_but_not_drawn():
    topology = Topology(namespaces=["alone"])
    assert topology.nodes == [] and "alone" in repr(topology)
    assert 'data-name="alone"' not in render_svg(topology)


def star(hosts: int) -> Topology:
    return Topology(namespaces=["sw", *(f"h{i}" for i in range(1, hosts + 1))],
                    bridges={"sw/br0": ["10.0.0.254/24"]},
                    links=[(End("sw/br0", f"br0p{i}"), End(f"h{i + 1}", f"h{i + 1}-eth0",
                                                            (f"10.0.0.{i + 1}/24",)))
                           for i in range(hosts)])


def two_hosts() -> Topology:
    return Topology(namespaces=["red", "blue"],
                    links=[(End("red", "red-eth0", ("10.0.0.1/24",)),
                            End("blue", "blue-eth0", ("10.0.0.2/24",)))])


def saved_pictures() -> list[tuple[str, str]]:
    """Every topology picture the tutorial notebooks carry in their saved outputs."""
    found = []
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            for output in cell.get("outputs", []):
                svg = output.get("data", {}).get("image/svg+xml")
                if svg:
                    found.append((notebook.name, "".join(svg)))
    return found


def label_and_card_boxes(svg: str) -> tuple[list[tuple], list[tuple]]:
    """(label boxes, card boxes) read back from the SVG, as (left, top, right, bottom, card):
    the namespaces' cards and the bridges' boxes within them, each label with the innermost
    card it is in. A label's box is worked out from its text: at most 0.61 em per character
    in a monospace font, from the baseline up one font size and down a quarter of one."""
    root = ElementTree.fromstring(svg)
    size = float(root.get("font-size"))
    assert "monospace" in root.get("font-family")
    labels, cards = [], []
    for group in root.iter(f"{SVG}g"):
        if group.get("class") not in ("ns", "bridge"):
            continue
        cards.append((*rect_box(group), group.get("data-name")))
        for text in group.findall(f"{SVG}text"):
            left, base = float(text.get("x")), float(text.get("y"))
            assert text.get("text-anchor") in (None, "start")
            labels.append((left, base - size, left + 0.61 * size * len(text.text),
                           base + size / 4, group.get("data-name")))
    return labels, cards


def overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def assert_readable(svg: str) -> None:
    """No label over another label or over a card other than its own; no card over another;
    everything inside the picture."""
    labels, cards = label_and_card_boxes(svg)
    root = ElementTree.fromstring(svg)
    assert float(root.get("font-size")) >= 12
    width, height = float(root.get("width")), float(root.get("height"))
    for i, label in enumerate(labels):
        assert label[0] >= 0 and label[1] >= 0 and label[2] <= width and label[3] <= height
        for other in labels[i + 1:]:
            assert not overlaps(label, other), (label, other)
        for card in cards:
            if card[4] == label[4] or label[4].startswith(card[4] + "/"):  # its own, or a
                assert card[0] <= label[0] and label[2] <= card[2], (label, card)  # bridge's
            else:
                assert not overlaps(label, card), (label, card)
    for i, card in enumerate(cards):
        for other in cards[i + 1:]:
            if card[4].split("/")[0] != other[4].split("/")[0]:  # a bridge is in its card
                assert not overlaps(card, other), (card, other)
            elif "/" in card[4] and "/" in other[4]:  # two bridges of one namespace
                assert not overlaps(card, other), (card, other)


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_no_label_overlaps_another_or_a_card(name):
    assert_readable(render_svg(PICTURES[name]()))


def test_the_notebooks_saved_pictures_are_readable():
    pictures = saved_pictures()
    assert {name for name, _ in pictures} >= {"02-network-namespaces.ipynb",
                                               "07-network-lab.ipynb"}
    for _, svg in pictures:
        assert_readable(svg)


def test_the_picture_is_as_big_as_the_lab():
    def size(topology):
        root = ElementTree.fromstring(render_svg(topology))
        return float(root.get("width")), float(root.get("height"))

    width, height = size(two_hosts())
    assert height <= 100 and width <= 450  # two cards side by side
    big_width, big_height = size(star(20))
    assert big_width * big_height > 4 * width * height
    assert big_width <= 900  # fits a notebook's width: hosts in columns, not on a ring
