"""The topology picture drawn from a saved state, with no lab running."""

from __future__ import annotations

import re

from nskernel.topology import End, Topology, _layout, render_svg


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
