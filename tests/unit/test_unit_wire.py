"""Bytes on the wire: the result channel's framing and the hand-packed rtnetlink requests."""

from __future__ import annotations

import errno
import ipaddress
import pickle
import socket
import struct

import pytest
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from nskernel.cell import wire
from nskernel.netlab import _rtnl


def framed(*messages: tuple) -> bytes:
    out = b""
    for message in messages:
        payload = pickle.dumps(message)
        out += struct.pack("!I", len(payload)) + payload
    return out


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 10_000])
def test_messages_arrive_whole_whatever_the_chunks(chunk):
    data = framed(("display", {"text/plain": "x"}, {}), ("value", list(range(100))))
    channel = wire.Channel()
    for start in range(0, len(data), chunk):
        channel.feed(data[start:start + chunk])
    assert channel.messages == [("display", {"text/plain": "x"}, {}),
                                ("value", list(range(100)))]
    assert channel.has_result and channel.buffer == b""


def test_a_display_alone_is_not_a_result():
    channel = wire.Channel()
    channel.feed(framed(("display", {}, {})))
    assert not channel.has_result


def decoded(message_class: type, kind: int, body: bytes) -> object:
    header = struct.pack("=IHHII", 16 + len(body), kind, 1, 1, 0)
    message = message_class(header + body)
    message.decode()
    return message


def test_the_veth_request_reads_back_in_pyroute2_as_meant():
    message = decoded(ifinfmsg, RTM_NEWLINK, _rtnl.veth_request("br0p0", "h1-eth0", 7, 5))
    assert message.get_attr("IFLA_IFNAME") == "br0p0"
    assert message.get_attr("IFLA_MASTER") == 5
    assert message["flags"] & _rtnl.IFF_UP and message["change"] & _rtnl.IFF_UP
    info = message.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "h1-eth0"
    assert peer.get_attr("IFLA_NET_NS_FD") == 7
    for end in (message, peer):  # not one per CPU, cut down to one: a grace period each
        assert end.get_attr("IFLA_NUM_TX_QUEUES") == end.get_attr("IFLA_NUM_RX_QUEUES") == 1


def test_an_interface_is_found_by_name_and_a_missing_one_is_enodev():
    with _rtnl.QuickNetlink() as quick:
        assert quick.index("lo") == socket.if_nametoindex("lo")
        with pytest.raises(_rtnl.RtnlError) as caught:
            quick.index("nskernel-none")
    assert caught.value.code == errno.ENODEV and caught.value.action == "find nskernel-none"


@pytest.mark.parametrize("address", ["10.0.0.1/24", "fd00::5/64"])
def test_the_address_request_reads_back_in_pyroute2_as_meant(address):
    interface = ipaddress.ip_interface(address)
    message = decoded(ifaddrmsg, RTM_NEWADDR, _rtnl.address_request(3, interface))
    assert message["index"] == 3 and message["prefixlen"] == interface.network.prefixlen
    assert message["family"] == (socket.AF_INET6 if interface.version == 6 else socket.AF_INET)
    assert message.get_attr("IFA_LOCAL") == message.get_attr("IFA_ADDRESS") == str(interface.ip)


def test_attributes_are_padded_to_four_bytes():
    assert _rtnl.attr(3, b"ab\0") == struct.pack("=HH", 7, 3) + b"ab\0" + b"\0"
    assert len(_rtnl.nested(1, _rtnl.attr(2, b"abcd"))) % 4 == 0


@pytest.mark.parametrize(("flags", "state"), [(0, "down"), (_rtnl.IFF_UP, "no-carrier"),
                                              (_rtnl.IFF_UP | _rtnl.IFF_LOWER_UP, "up")])
def test_link_state_from_flags(flags, state):
    assert _rtnl.link_state(flags) == state
