"""The lab's names and endpoints: what `ip netns` would take, and nothing that is a path."""

from __future__ import annotations

import ipaddress

import pytest

from nskernel.netlab.names import check_ifname
from nskernel.netlab.netns import Endpoint, LabError, check_ns_name


@pytest.mark.parametrize(("text", "ns", "address"), [
    ("a", "a", None),
    ("r1:10.0.1.2/24", "r1", "10.0.1.2/24"),
    ("h.2:fd00::1/64", "h.2", "fd00::1/64"),
])
def test_an_endpoint_is_a_namespace_and_maybe_an_address(text, ns, address):
    end = Endpoint.parse(text)
    assert end.ns == ns
    assert end.address == (ipaddress.ip_interface(address) if address else None)
    assert str(end) == text


@pytest.mark.parametrize(("text", "message"), [
    ("a:10.0.0.1", "bad address '10.0.0.1' for a: give a prefix, as 10.0.0.1/24"),
    ("a:10.0.0.300/24", "bad address '10.0.0.300/24' for a: expected e.g. 10.0.0.1/24"),
])
def test_a_bad_address_says_what_it_should_look_like(text, message):
    with pytest.raises(LabError, match="^" + message.replace(".", r"\.")):
        Endpoint.parse(text)


@pytest.mark.parametrize("name", ["../../proc/1/ns/net", "/run/netns/x", "-a", "", "a b",
                                  "x" * 65])
def test_a_namespace_name_is_never_a_path_or_an_option(name):
    with pytest.raises(LabError, match="^bad namespace name"):
        check_ns_name(name)


def test_interface_names_fit_linux_limit():
    assert check_ifname("a" * 15) == "a" * 15
    with pytest.raises(LabError, match="is 16 bytes; Linux allows 1 to 15"):
        check_ifname("a" * 16)
