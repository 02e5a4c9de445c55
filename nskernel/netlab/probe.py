"""Reachability checks from inside a namespace: ICMP echo, TCP and UDP, with no ``ping``.

Sockets belong to the network namespace of the thread that creates them, so each check
creates its sockets through :meth:`nskernel.netlab.net.Lab.run_in` and then just uses them.
Traffic goes only to the addresses the caller names, which in this project are always
inside namespaces it made.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from nskernel.display import Table
from nskernel.netlab.net import Lab
from nskernel.netlab.netns import LabError

_ICMP_ECHO_REQUEST = 8
_ICMP_ECHO_REPLY = 0
#: The longest wait for one answer, in seconds.
MAX_WAIT = 3600


@dataclass
class PingResult:
    """RTTs of an echo exchange; None where no reply came within the timeout."""

    source: str
    destination: str
    rtts: list[float | None]

    @property
    def received(self) -> int:
        """How many replies came back."""
        return sum(rtt is not None for rtt in self.rtts)

    @property
    def ok(self) -> bool:
        """Whether any reply came back: the destination is reachable."""
        return self.received > 0

    def table(self) -> Table:
        """One row per echo request: its reply or timeout, and the RTT in ms."""
        rows = [[seq, "reply" if rtt is not None else "timeout",
                 "" if rtt is None else f"{rtt * 1000:.3f}"]
                for seq, rtt in enumerate(self.rtts, 1)]
        return Table(["seq", "result", "rtt ms"], rows,
                     title=f"ping {self.destination} from {self.source}: "
                           f"{self.received}/{len(self.rtts)} replies")

    def __repr__(self) -> str:
        return f"{self.received}/{len(self.rtts)} replies from {self.destination}"

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int) -> bytes:
    payload = b"nskernel-ping"
    header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    checksum = _checksum(header + payload)
    return struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, checksum, ident, seq) + payload


def _address(text: str) -> str:
    try:
        return str(socket.inet_aton(text) and text)
    except OSError:
        raise LabError(f"bad IPv4 address {text!r}") from None


def _wait(timeout: float) -> float:
    """``timeout`` if select and socket timeouts can wait that long: inf and 1e308 raise
    OverflowError there, nan and 0 would not wait at all."""
    if not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_WAIT:  # nan too
        raise LabError(f"timeout {timeout!r}: give seconds above 0, up to {MAX_WAIT}")
    return float(timeout)


def ping(lab: Lab, source: str, destination: str, count: int = 3,
         timeout: float = 1.0) -> PingResult:
    """ICMP echo from namespace ``source`` to ``destination``: one RTT (or None) per probe."""
    destination = _address(destination)
    timeout = _wait(timeout)
    if count < 1 or count > 100:
        raise LabError("ping count: give 1 to 100")

    def exchange() -> list[float | None]:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        except PermissionError:
            raise LabError("ICMP needs root (or a user namespace owning the netns)") from None
        with sock:
            ident = os.getpid() & 0xFFFF
            return [_one_echo(sock, destination, ident, seq, timeout)
                    for seq in range(1, count + 1)]

    return PingResult(source, destination, lab.run_in(source, exchange))


def _one_echo(sock: socket.socket, destination: str, ident: int, seq: int,
              timeout: float) -> float | None:
    sent = time.perf_counter()
    try:
        sock.sendto(_echo_request(ident, seq), (destination, 0))
    except OSError:
        time.sleep(min(timeout, 0.05))
        return None  # no route: as unreachable as a lost reply
    deadline = sent + timeout
    while (left := deadline - time.perf_counter()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        packet, (sender, _port) = sock.recvfrom(2048)
        header_length = (packet[0] & 0x0F) * 4
        kind, _code, _sum, reply_id, reply_seq = struct.unpack(
            "!BBHHH", packet[header_length:header_length + 8])
        if (kind, reply_id, reply_seq, sender) == (_ICMP_ECHO_REPLY, ident, seq, destination):
            return time.perf_counter() - sent
    return None


def tcp_check(lab: Lab, source: str, destination_ns: str, address: str,
              timeout: float = 1.0) -> bool:
    """Can ``source`` open a TCP connection to ``address`` served in ``destination_ns``?"""
    with _client_and_server(lab, source, destination_ns, address, socket.SOCK_STREAM,
                            timeout) as (client, server):
        try:
            client.connect(server.getsockname())
            connection, _ = server.accept()
        except OSError:
            return False
        with connection:
            client.sendall(b"hello")
            return connection.recv(5) == b"hello"


def udp_check(lab: Lab, source: str, destination_ns: str, address: str,
              timeout: float = 1.0) -> bool:
    """Does a UDP datagram from ``source`` reach ``address`` in ``destination_ns`` and back?"""
    with _client_and_server(lab, source, destination_ns, address, socket.SOCK_DGRAM,
                            timeout) as (client, server):
        try:
            client.sendto(b"hello", server.getsockname())
            data, peer = server.recvfrom(16)
            server.sendto(data, peer)
            return client.recv(16) == b"hello"
        except OSError:
            return False


@contextmanager
def _client_and_server(lab: Lab, source: str, destination_ns: str, address: str, kind: int,
                       timeout: float) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A server bound to ``address`` in ``destination_ns`` and a client in ``source``."""
    address = _address(address)
    timeout = _wait(timeout)
    server = lab.run_in(destination_ns, lambda: _listen(address, kind))
    try:
        client = lab.run_in(source, lambda: socket.socket(socket.AF_INET, kind))
        with client:
            client.settimeout(timeout)
            server.settimeout(timeout)
            yield client, server
    finally:
        server.close()


def _listen(address: str, kind: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.bind((address, 0))
    except OSError as exc:
        sock.close()
        raise LabError(f"cannot serve on {address}: {exc.strerror} (is the address on an "
                       "interface of that namespace?)") from None
    if kind == socket.SOCK_STREAM:
        sock.listen(1)
    return sock
