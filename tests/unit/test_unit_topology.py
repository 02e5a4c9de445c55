"""The topology picture drawn from a saved state, with no lab running."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from nskernel.netlab.topology import End, Topology, _layout, render_svg

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
    assert sorted(re.findall(r'class="(?:ns|bridge)" data-name="([^"]+)"', svg)) == sorted(
        ["h1", "h2", "h3", "r", "far", "kernel/br0"])
    assert len(re.findall(r'<g class="link"', svg)) == 5
    assert 'data-a="r:r-eth1" data-b="far:far-eth0"' in svg
    assert "10.0.0.2/24" in svg and "br0 @ kernel" in svg


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
    """(label boxes, card boxes) read back from the SVG, as (left, top, right, bottom, card).
    A label's box is worked out from its text: at most 0.61 em per character in a monospace
    font, from the baseline up one font size and down a quarter of one."""
    root = ElementTree.fromstring(svg)
    size = float(root.get("font-size"))
    assert "monospace" in root.get("font-family")
    labels, cards = [], []
    for group in root.iter(f"{SVG}g"):
        if group.get("class") not in ("ns", "bridge"):
            continue
        rect = group.find(f"{SVG}rect")
        x, y = float(rect.get("x")), float(rect.get("y"))
        cards.append((x, y, x + float(rect.get("width")), y + float(rect.get("height")),
                      group.get("data-name")))
        for text in group.iter(f"{SVG}text"):
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
            if card[4] == label[4]:
                assert card[0] <= label[0] and label[2] <= card[2], (label, card)
            else:
                assert not overlaps(label, card), (label, card)
    for i, card in enumerate(cards):
        for other in cards[i + 1:]:
            assert not overlaps(card, other), (card, other)


@pytest.mark.parametrize("topology", [star(20), star(5), star_and_line(), two_hosts()],
                         ids=["star of 20", "star of 5", "star and line", "two hosts"])
def test_no_label_overlaps_another_or_a_card(topology):
    assert_readable(render_svg(topology))


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
