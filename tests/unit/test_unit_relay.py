"""The supervisor's relay, between real sockets and pipes of this process."""

from __future__ import annotations

import os
import socket
import threading

from nskernel.kernel import relay


def _relay_between_listeners() -> tuple[socket.socket, socket.socket, relay.Relay]:
    """A Unix listener (the kernel's), a TCP one on loopback (Jupyter's) and the relay."""
    name = b"\0nskernel-test-relay-" + os.urandom(6).hex().encode()
    inside = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inside.bind(name)
    inside.listen()
    outside = socket.socket()
    outside.bind(("127.0.0.1", 0))
    outside.listen()
    return inside, outside, relay.Relay({outside.fileno(): name}, [])


def test_each_connection_reaches_the_unix_listener_byte_for_byte():
    inside, outside, carrier = _relay_between_listeners()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            carrier.poll(0.05)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        client = socket.create_connection(outside.getsockname(), timeout=5)
        server, _ = inside.accept()
        payload = os.urandom(1 << 20)
        client.sendall(payload)
        received = b""
        while len(received) < len(payload):
            received += server.recv(1 << 16)
        assert received == payload
        server.sendall(b"back")
        assert client.recv(4) == b"back"
        server.close()  # one side ends: so does the other
        assert client.recv(1) == b""
        client.close()
    finally:
        stop.set()
        thread.join()
        carrier.close()
        inside.close()


def test_output_is_bounded_and_never_waited_for():
    """A flood reaches the sink only up to the limit, with one line that says so; a sink
    that is full (nobody reads it) costs dropped output, not a stuck relay."""
    source_r, source_w = os.pipe()
    sink_r, sink_w = os.pipe()
    carrier = relay.Relay({}, [(source_r, sink_w)])
    carrier.flows[source_r].notice = b"[dropped]"
    try:
        written = 0
        os.set_blocking(source_w, False)
        while written < 3 * relay.OUTPUT_LIMIT:
            try:
                written += os.write(source_w, b"x" * 65536)
            except BlockingIOError:
                pass
            carrier.poll(0)  # the sink pipe fills at 64 KiB: the rest is dropped
        os.close(source_w)
        carrier.poll(0)
        os.set_blocking(sink_r, False)
        passed = os.read(sink_r, 1 << 22)
        assert 0 < len(passed) < relay.OUTPUT_LIMIT
    finally:
        carrier.close()
        os.close(sink_r)
        os.close(sink_w)


def test_connections_from_jupyter_send_small_writes_at_once():
    """TCP_NODELAY on each connection the relay accepts, as zmq sets on its own: with Nagle,
    a reply written after the idle status waited for Jupyter's delayed ACK (up to 40 ms, a
    third of an Isolated Python kernel's cells)."""
    inside, outside, carrier = _relay_between_listeners()
    try:
        client = socket.create_connection(outside.getsockname(), timeout=5)
        for _ in range(100):
            carrier.poll(0.05)
            if carrier.partner:
                break
        server, _ = inside.accept()
        delays = {}
        for fd in carrier.partner:
            relayed = socket.socket(fileno=os.dup(fd))
            with relayed:
                if relayed.family == socket.AF_INET:
                    delays[fd] = relayed.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert list(delays.values()) == [1], delays
        client.close()
        server.close()
    finally:
        carrier.close()  # the listener too
        inside.close()
        outside.detach()
