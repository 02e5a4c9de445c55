"""``--explain`` on the lab magics: the ``ip`` and ``sysctl`` commands printed, run by hand
on a clean kernel, build the same lab (namespaces, links and their ports, addresses,
routes, forwarding and IPv6 switched off). In Isolated Python, where the lab lives in the
kernel's own namespaces: as root and as a user alike, and everything goes with the kernel."""

from __future__ import annotations

import kernels
import pytest

CELLS = ["%netns add xa xb xsw --explain",
         "%veth xa:10.9.0.1/24 xb:10.9.0.2/24 --explain",
         "%veth kernel:10.6.0.1/24 xa:10.6.0.2/24 --explain",
         "%bridge br9:10.8.0.254/24 xa:10.8.0.1/24 xb:10.8.0.2/24 --in xsw --explain",
         "%route xa 10.7.0.0/24 via 10.9.0.2 --explain",
         "%route xb default via 10.9.0.1 --explain",
         "%forward xb --explain"]

#: A snapshot of what the lab is, by namespace: links (name, state, kind, bridge), addresses,
#: routes, and the two sysctls the lab sets.
SNAPSHOT = """\
from nskernel.magics.lab import current_lab
def sysctls():
    read = lambda path: open(path).read().strip()
    return (read('/proc/sys/net/ipv4/ip_forward'),
            read('/proc/sys/net/ipv6/conf/all/disable_ipv6'))
def snapshot():
    lab, found = current_lab(), {}
    for ns in ('xa', 'xb', 'xsw'):
        state = lab.state(ns)
        names = {link['index']: link['ifname'] for link in state['links']}
        found[ns] = (
            sorted((link['ifname'], link['state'], link['kind'], names.get(link.get('master')))
                   for link in state['links']),
            sorted((names[a['index']], a['address']) for a in state['addresses']),
            sorted((r.get('dst') or 'default', r.get('gateway') or '') for r in state['routes']),
            lab.run_in(ns, sysctls))
    kernel_side = open('/proc/sys/net/ipv6/conf/k-eth0/disable_ipv6').read().strip()
    return found, kernel_side
"""


@pytest.fixture
def kernel():
    manager, client = kernels.start("isolated-python")
    try:
        yield client
    finally:
        kernels.stop(manager, client)


def test_the_printed_commands_build_the_same_lab(kernel):
    commands = []
    for cell in CELLS:
        done = kernels.execute(kernel, cell)
        assert done.status == "ok", done
        lines = done.stdout.splitlines()
        assert lines[0] == "# the same by hand:", done
        commands += lines[1:]
    assert "ip -n xa link add xa-eth0 type veth peer name xb-eth0 netns xb" in commands
    assert "ip netns exec xb sysctl -q -w net.ipv4.ip_forward=1" in commands
    assert kernels.execute(kernel, SNAPSHOT).status == "ok"
    built = kernels.execute(kernel, "built = snapshot()\nbuilt")
    assert built.status == "ok", built
    assert "10.7.0.0/24" in built.result and "'1', '1'" in built.result  # routed, forwarding

    assert kernels.execute(kernel, "%netns reset").status == "ok"
    by_hand = kernels.execute(kernel, f"import subprocess\nfor command in {commands!r}:\n"
                                      "    subprocess.run(command, shell=True, check=True)",
                              timeout=60)
    assert by_hand.status == "ok", by_hand
    same = kernels.execute(kernel, "again = snapshot()\n"
                                   "[(ns, built[0][ns], again[0][ns]) for ns in built[0]"
                                   " if built[0][ns] != again[0][ns]], built[1], again[1]")
    assert same.status == "ok", same
    assert same.value == ([], "1", "1"), same


def test_without_explain_nothing_is_printed(kernel):
    done = kernels.execute(kernel, "%netns add xq")
    assert done.status == "ok" and "by hand" not in done.stdout, done
