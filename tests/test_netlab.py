"""The network lab: real namespaces, veth links, bridges, routes and traffic between them.

Traffic goes only to addresses inside namespaces these tests made.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IS_ROOT, ROOT_ONLY, RUN_PREFIX, needs_root, one_run_at_a_time, wait_for
from kernels import execute, start, stop

from nskernel import probe
from nskernel.netlab import netns, records, topology
from nskernel.netlab.net import Lab
from nskernel.netlab.netns import LabError

#: The second octet of the subnets this run puts in the host's own network namespace, so
#: that two runs at once never route into each other's links.
_RUN = os.getpid() % 150 * 80 + os.getpid() // 150 % 80


def host_net(k: int) -> str:
    """'10.A.B': the k-th (0-2) /24 of this run for the host's own namespace."""
    return f"10.{100 + _RUN // 80}.{_RUN % 80 * 3 + k}"


def ns(name: str) -> str:
    return f"{RUN_PREFIX}{name}"  # this run's names, short enough for ifnames


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A lab in the test process itself: in the host's network namespace, so root only."""
    if not IS_ROOT:
        pytest.skip(ROOT_ONLY)
    made = Lab()
    try:
        yield made
    finally:
        made.shutdown()


def ifindex(link: str) -> str:
    """A host link's index: names are reused by other labs, indexes are not."""
    return Path(f"/sys/class/net/{link}/ifindex").read_text()


def host_ifindexes() -> set[str]:
    """The interface indexes in the host's network namespace (links come and go meanwhile)."""
    found = set()
    for link in os.listdir("/sys/class/net"):
        with contextlib.suppress(OSError):
            found.add(ifindex(link))
    return found


def addresses(state: dict) -> set[str]:
    return {a["address"] for a in state["addresses"] if a["family"] == 2} - {"127.0.0.1/8"}


# ---------------------------------------------------------------------------- a line of three
def build_line(lab: Lab) -> tuple[str, str, str]:
    a, r, b = ns("a"), ns("r"), ns("b")
    lab.add(a, r, b)
    lab.link(f"{a}:10.0.1.1/24", f"{r}:10.0.1.2/24")
    lab.link(f"{r}:10.0.2.1/24", f"{b}:10.0.2.2/24")
    return a, r, b


def test_line_of_three_routes_through_the_middle(lab):
    a, r, b = build_line(lab)
    assert addresses(lab.state(a)) == {"10.0.1.1/24"}
    assert addresses(lab.state(r)) == {"10.0.1.2/24", "10.0.2.1/24"}
    assert not probe.ping(lab, a, "10.0.2.2", count=1, timeout=0.3).ok  # no route yet
    assert probe.ping(lab, a, "10.0.1.2", count=1).ok  # the neighbour is reachable
    lab.route(a, "10.0.2.0/24", "10.0.1.2")
    lab.route(b, "default", "10.0.2.1")
    assert not probe.ping(lab, a, "10.0.2.2", count=1, timeout=0.3).ok  # r does not forward
    lab.forwarding(r)
    result = probe.ping(lab, a, "10.0.2.2", count=3)
    assert result.received == 3 and all(rtt > 0 for rtt in result.rtts)
    assert probe.tcp_check(lab, a, b, "10.0.2.2")
    assert probe.udp_check(lab, a, b, "10.0.2.2")
    routes = {(route["dst"], route["gateway"]) for route in lab.state(a)["routes"]}
    assert ("10.0.2.0/24", "10.0.1.2") in routes
    lab.forwarding(r, False)
    assert not probe.tcp_check(lab, a, b, "10.0.2.2", timeout=0.3)
    assert not probe.udp_check(lab, a, b, "10.0.2.2", timeout=0.3)


# ---------------------------------------------------------------------------- a star of five
def test_a_new_namespace_does_not_forward_even_where_the_host_does(lab):
    """Linux copies a new namespace's IPv4 settings from the machine's; podman and Docker
    turn the machine's forwarding on. The lab's namespaces start as a fresh machine does."""
    host = Path("/proc/sys/net/ipv4/ip_forward")
    before = host.read_text().strip()
    host.write_text("1")
    try:
        a, r, b = build_line(lab)
    finally:
        host.write_text(before)
    read = lambda: Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()  # noqa: E731
    assert [lab.run_in(name, read) for name in (a, r, b)] == ["0", "0", "0"]


def test_star_of_five_around_a_bridge(lab):
    hosts = [ns(f"h{i}") for i in range(5)]
    switch = ns("sw")
    lab.add(switch, *hosts)
    ports = lab.bridge("br0:10.1.0.254/24", [f"{h}:10.1.0.{i + 1}/24"
                                             for i, h in enumerate(hosts)], ns=switch)
    assert [port for port, _ in ports] == [f"br0p{i}" for i in range(5)]
    state = lab.state(switch)
    bridge = next(link for link in state["links"] if link["ifname"] == "br0")
    members = [link["ifname"] for link in state["links"] if link["master"] == bridge["index"]]
    assert sorted(members) == [f"br0p{i}" for i in range(5)]
    details = subprocess.run(["ip", "-n", switch, "-d", "link", "show", "br0"], check=True,
                             capture_output=True, text=True).stdout
    assert "mcast_snooping 1 " in details  # off while the ports joined, on again after
    for i, host in enumerate(hosts):
        assert probe.ping(lab, host, f"10.1.0.{(i + 1) % 5 + 1}", count=1).ok
    assert probe.ping(lab, hosts[0], "10.1.0.254", count=1).ok
    assert probe.tcp_check(lab, hosts[1], hosts[4], "10.1.0.5")

    picture = topology.read(lab, [switch, *hosts])
    assert picture.namespaces == [switch, *hosts]
    assert list(picture.bridges) == [f"{switch}/br0"]
    pairs = {(a.node, b.node) for a, b in picture.links}
    assert pairs == {(f"{switch}/br0", host) for host in hosts} or \
        pairs == {(host, f"{switch}/br0") for host in hosts}
    svg = ElementTree.fromstring(picture._repr_svg_())
    nodes = {g.get("data-name"): g for g in svg.iter("{http://www.w3.org/2000/svg}g")
             if g.get("class") in ("ns", "bridge")}
    assert set(nodes) == {switch, f"{switch}/br0", *hosts}
    assert nodes[f"{switch}/br0"] in list(nodes[switch])  # drawn inside the switch's card
    assert "bridge br0 10.1.0.254/24" in picture._repr_svg_()
    assert f"br0p0 \u2192 {hosts[0]}" in picture._repr_svg_()  # who is plugged in
    edges = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "link"]
    assert len(edges) == 5
    assert "10.1.0.3/24" in picture._repr_svg_()


def test_topology_shows_what_was_made_by_hand(lab):  # `ip netns add`: root only
    a, b = ns("ha"), ns("hb")
    try:
        for command in (f"ip netns add {a}", f"ip netns add {b}",
                        f"ip -n {a} link add x0 type veth peer name y0 netns {b}",
                        f"ip -n {a} addr add 10.2.0.1/24 dev x0"):
            subprocess.run(command.split(), check=True)
        picture = topology.read(lab, [a, b])
        assert [(str(x), str(y)) for x, y in picture.links] == \
            [(f"{a}:x0 10.2.0.1/24", f"{b}:y0")]
        assert lab.close() == []  # not the lab's: left alone
        assert netns.netns_inode(a) is not None
    finally:
        for name in (a, b):
            subprocess.run(["ip", "netns", "del", name], check=False)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("make", "message"), [
    (lambda lab: lab.add("kernel"), "'kernel' is reserved"),
    (lambda lab: lab.add(ns("d"), ns("d")), "a namespace name is given twice"),
    (lambda lab: lab.add("bad/name"), "bad namespace name 'bad/name'"),
    (lambda lab: lab.link(f"{ns('x')}:10.0.0.1", ns("y")), "give a prefix, as 10.0.0.1/24"),
    (lambda lab: lab.link(f"{ns('x')}:10.0.0.999/24", ns("y")), "bad address '10.0.0.999/24'"),
    (lambda lab: lab.link(ns("nope1"), ns("nope2")), f"no network namespace named '{ns('nope1')}'"),
    (lambda lab: lab.route("kernel", "10.0.0.0/33", "10.0.0.1"), "bad route"),
    (lambda lab: lab.delete("ns-we-never-made"), "was not made by this kernel's lab"),
])
def test_bad_input_gets_one_line(lab, make, message):
    with pytest.raises(LabError) as caught:
        make(lab)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_interface_names_over_15_bytes_are_refused_and_nothing_is_left(lab):
    long_name = ns("abcdefghijklm")  # its interfaces would be called "<name>-eth0"
    lab.add(long_name, ns("s"))
    with pytest.raises(LabError, match="is 2[0-9] bytes; Linux allows 1 to 15"):
        lab.link(long_name, ns("s"))
    assert [link["ifname"] for link in lab.state(ns("s"))["links"]] == ["lo"]


def test_a_duplicate_namespace_is_refused(lab):
    lab.add(ns("dup"))
    with pytest.raises(LabError, match="exists already"):
        lab.add(ns("dup"))


def test_an_error_halfway_through_a_bridge_leaves_nothing(lab):
    hosts = [ns("p0"), ns("p1"), ns("longlonglong")]  # the third one's ifname is too long
    lab.add(*hosts)
    bridge = ns("brx")
    with pytest.raises(LabError, match="Linux allows 1 to 15"):
        lab.bridge(f"{bridge}:10.3.0.254/24", [f"{host}:10.3.0.{i + 1}/24"
                                               for i, host in enumerate(hosts)])
    kernel_links = [link["ifname"] for link in lab.state("kernel")["links"]]
    assert not [name for name in kernel_links if name.startswith(bridge)]
    for host in hosts:  # the two members attached before the failure were detached again
        assert [link["ifname"] for link in lab.state(host)["links"]] == ["lo"]
    assert lab.links == {}


def test_a_failing_address_undoes_the_veth(lab):
    a, b = ns("u0"), ns("u1")
    lab.add(a, ipv6=True)
    lab.add(b)  # without IPv6: its end refuses the address
    with pytest.raises(LabError, match=f"address fd00::2/64 on {b}-eth0 in {b}: IPv6 is off"):
        lab.link(f"{a}:fd00::1/64", f"{b}:fd00::2/64")  # a's end is made first, then b's fails
    assert [link["ifname"] for link in lab.state(a)["links"]] == ["lo"]
    assert [link["ifname"] for link in lab.state(b)["links"]] == ["lo"]


# ---------------------------------------------------------------------------- ownership
@needs_root
def test_close_removes_everything_the_lab_made():
    lab = Lab()
    a, b, bridge = ns("c0"), ns("c1"), ns("brc")
    lab.add(a, b)
    kernel_end, _ = lab.link(f"kernel:{host_net(0)}.1/24", f"{a}:{host_net(0)}.2/24")
    lab.bridge(bridge, [b])
    indexes = {ifindex(kernel_end), ifindex(bridge)}
    removed = lab.close()
    lab.shutdown()
    assert set(removed) >= {f"netns {a}", f"netns {b}", f"link {bridge}"}
    assert netns.netns_inode(a) is None and netns.netns_inode(b) is None
    assert not os.path.exists(lab.record_path)
    assert not indexes & host_ifindexes()  # by index: another lab may reuse the names


def test_close_holds_what_it_removed_in_batches_and_leaks_no_file(lab, monkeypatch):
    """The namespaces removed are held open (destroyed together afterwards), a few at a time."""
    monkeypatch.setattr(records, "_held_at_most", lambda: 2)
    names = [ns(f"hold{i}") for i in range(5)]
    lab.add(names[0])
    files = len(os.listdir("/proc/self/fd"))  # the lab's worker is started: it holds one
    lab.add(*names[1:])
    assert sorted(lab.close()) == sorted(f"netns {name}" for name in names)
    assert all(netns.netns_inode(name) is None for name in names)
    assert len(os.listdir("/proc/self/fd")) == files


@pytest.mark.parametrize("kernel_name", ["python3", "isolated-python"])
def test_magics_in_both_kernels_and_cleanup_on_shutdown(kernel_name):
    if kernel_name == "python3" and not IS_ROOT:
        pytest.skip(ROOT_ONLY)
    manager, client = start(kernel_name)
    name = ns("m")
    try:
        if kernel_name == "python3":
            execute(client, "%load_ext nskernel")
        assert execute(client, f"%netns add {name}").status == "ok"
        veth = execute(client, f"%veth kernel:{host_net(1)}.1/24 {name}:{host_net(1)}.2/24")
        assert veth.status == "ok" and f"{host_net(1)}.2/24" in veth.result, veth
        # NS-ethN, N the first free on both sides (another lab may hold k-eth0 meanwhile)
        kernel_end, far_end = re.findall(rf"\b(?:k|{name})-eth\d+\b", veth.result)[:2]
        if kernel_name == "python3":  # its kernel end is in the host's namespace
            index = ifindex(kernel_end)
        ping = execute(client, f"%ping {name} {host_net(1)}.1 -c 2")
        assert ping.result == f"2/2 replies from {host_net(1)}.1"
        picture = execute(client, "%topology")
        assert (f"link kernel:{kernel_end} {host_net(1)}.1/24 <-> {name}:{far_end} "
                f"{host_net(1)}.2/24") in picture.result
        listing = execute(client, "%netns list").result
        assert name in listing and "lab" in listing
        tables = execute(client, f"%ip {name}").result
        assert f"{host_net(1)}.2/24" in tables
        error = execute(client, "%ping kernel 10.9.9.300")
        assert "bad IPv4 address '10.9.9.300'" in error.stderr
    finally:
        stop(manager, client)
    # normal shutdown: nothing of the lab is left on the host
    assert netns.netns_inode(name) is None
    if kernel_name == "python3":  # by index: another lab may take the name meanwhile
        assert index not in host_ifindexes()


@needs_root
def test_nskernel_clean_removes_what_a_killed_kernel_left_and_nothing_else():
    # `nskernel clean` removes what every dead kernel left: another run's clean must not
    # take this one's leftovers first, nor this one theirs.
    with one_run_at_a_time():
        foreign = ns("foreign")
        subprocess.run(["ip", "netns", "add", foreign], check=True)
        manager, client = start("python3")
        name = ns("k")
        try:
            execute(client, "%load_ext nskernel")
            execute(client, f"%netns add {name}")
            veth = execute(client, f"%veth kernel:{host_net(2)}.1/24 {name}")
            kernel_end = re.search(r"k-eth\d+", veth.result).group()
            os.kill(manager.provisioner.pid, signal.SIGKILL)  # no chance to clean up
            assert wait_for(lambda: not manager.is_alive(), timeout=5)
            assert netns.netns_inode(name) is not None  # left behind...
            done = subprocess.run([sys.executable, "-m", "nskernel", "clean"],
                                  capture_output=True, text=True, check=True)
            assert f"removed netns {name}" in done.stdout
            assert f"removed link {kernel_end}" in done.stdout
            assert netns.netns_inode(name) is None
            assert netns.netns_inode(foreign) is not None  # ...and only that was removed
        finally:
            stop(manager, client)
            subprocess.run(["ip", "netns", "del", foreign], check=False)


@needs_root
def test_shutdown_removes_the_lab_even_with_a_zombie_child():
    """ipykernel waits seconds for a zombie child at shutdown and Jupyter then kills the
    kernel: the lab must be gone before that, not at exit."""
    manager, client = start("python3")
    name = ns("zb")
    try:
        execute(client, "%load_ext nskernel")
        execute(client, f"%netns add {name}")
        execute(client, f"import subprocess; p = subprocess.Popen(['sleep', '{RUN_PREFIX[1:]}'])")
    finally:
        stop(manager, client)
    assert netns.netns_inode(name) is None


@needs_root
def test_restart_removes_the_lab():
    manager, client = start("python3")
    name = ns("rs")
    try:
        execute(client, "%load_ext nskernel")
        execute(client, f"%netns add {name}")
        manager.restart_kernel(now=False)
        client.wait_for_ready(timeout=60)
        assert wait_for(lambda: netns.netns_inode(name) is None, timeout=5)
    finally:
        stop(manager, client)


def test_isolated_kernel_names_are_private_and_vanish_when_it_is_killed():
    manager, client = start("isolated-python")
    name = ns("iso")
    try:
        execute(client, f"%netns add {name}")
        assert name in execute(client, "import os; os.listdir('/run/netns')").value
        assert netns.netns_inode(name) is None  # not on the host
        os.kill(manager.provisioner.pid, signal.SIGKILL)
        assert wait_for(lambda: not manager.is_alive(), timeout=5)
    finally:
        stop(manager, client)
    assert not os.path.exists(f"/run/netns/{name}")


def test_ipv6_is_off_by_default_and_on_when_asked(lab):
    plain, other, six_a, six_b = ns("v4"), ns("v4b"), ns("v6a"), ns("v6b")
    lab.add(plain, other)
    lab.add(six_a, six_b, ipv6=True)
    lab.link(f"{six_a}:fd00:1::1/64", f"{six_b}:fd00:1::2/64")
    lab.link(f"{plain}:10.7.0.1/24", f"{other}:10.7.0.2/24")  # made later: off by default too
    assert "fd00:1::2/64" in {a["address"] for a in lab.state(six_b)["addresses"]}
    assert not [a for a in lab.state(plain)["addresses"] if a["family"] == 10]  # not even ::1


def test_a_lab_built_again_gets_the_same_interface_names(start_kernel):
    """After `%netns reset` (or deleting its namespaces), building the same lab again in the
    same kernel names its interfaces as the first time: outputs match the notebook's text."""
    _manager, client = start_kernel("isolated-python")
    build = ("%netns add alice gw bob\n%veth alice:10.9.1.1/24 gw:10.9.1.2/24\n"
             "%veth gw:10.9.2.1/24 bob:10.9.2.2/24\n"
             "import nskernel\nsorted(link['ifname'] for ns in ('alice', 'gw', 'bob') "
             "for link in nskernel.lab().state(ns)['links'])")
    first = execute(client, build).value
    assert first == ["alice-eth0", "bob-eth0", "gw-eth0", "gw-eth1", "lo", "lo", "lo"], first
    execute(client, "%netns reset")
    assert execute(client, build).value == first
    execute(client, "%netns del alice gw bob")
    assert execute(client, build).value == first
    execute(client, "%netns reset")
