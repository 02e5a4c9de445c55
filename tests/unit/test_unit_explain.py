"""The commands --explain prints, without a lab: where each runs, and the kernel's side."""

from __future__ import annotations

from nskernel.netlab import explain
from nskernel.netlab.netns import Endpoint


def test_a_veth_to_the_kernel_is_made_from_the_kernels_side():
    commands = explain.veth(Endpoint.parse("h1:10.0.0.2/24"), "h1-eth0",
                            Endpoint.parse("kernel:10.0.0.1/24"), "k-eth0", ipv6_off={"h1"})
    assert commands == [
        "ip link add k-eth0 type veth peer name h1-eth0 netns h1",
        "sysctl -q -w net.ipv6.conf.k-eth0.disable_ipv6=1",
        "ip addr add 10.0.0.1/24 dev k-eth0",
        "ip link set k-eth0 up",
        "ip -n h1 addr add 10.0.0.2/24 dev h1-eth0",
        "ip -n h1 link set h1-eth0 up",
    ]


def test_namespaces_routes_and_forwarding():
    assert explain.netns_add(["a"], ipv6=True) == [
        "ip netns add a", "ip -n a link set lo up",
        "ip netns exec a sysctl -q -w net.ipv4.ip_forward=0"]
    assert explain.netns_add(["a"], ipv6=False)[-1] == (
        "ip netns exec a sysctl -q -w net.ipv6.conf.all.disable_ipv6=1")
    assert explain.route("r", "default", "10.0.0.1") == ["ip -n r route add default via 10.0.0.1"]
    assert explain.forward("kernel", False) == ["sysctl -q -w net.ipv4.ip_forward=0"]


def test_a_bridge_comes_up_last_with_its_ports_enslaved():
    commands = explain.bridge(Endpoint.parse("br0"), "sw", [Endpoint.parse("a:10.0.0.1/24")],
                              [("br0p0", "a-eth0")])
    assert commands == [
        "ip -n sw link add br0 type bridge",
        "ip -n sw link add br0p0 type veth peer name a-eth0 netns a",
        "ip -n sw link set br0p0 master br0 up",
        "ip -n a addr add 10.0.0.1/24 dev a-eth0",
        "ip -n a link set a-eth0 up",
        "ip -n sw link set br0 up",
    ]
