"""What crosses the wall between Jupyter and the kernel: bytes, relayed from outside.

Nothing the host's network namespace made may be held by a process that runs user code. A
TCP socket keeps the namespace it was made in, and an established one can be re-aimed
(``connect(AF_UNSPEC)`` dissolves it, and the same socket may then ``connect()`` anywhere
that namespace reaches); so may a listening one. Jupyter's connections to the kernel are
such sockets. So the launcher's supervisor, which runs no user code, keeps the connection
file's TCP listeners; the kernel listens on Unix sockets instead (they cannot be re-aimed:
a listening or connected Unix stream socket refuses ``connect``), adopted through
``zmq.USE_FD`` as before. Each connection Jupyter opens is answered here by one to the
kernel's Unix socket for that channel, and the bytes are copied both ways: ZMTP is the same
on both transports, so this is a byte pipe, not a proxy that reads messages.

The same loop carries the kernel's stdout and stderr (pipes: the Jupyter server's own
descriptors never reach the kernel, where a cell could write to, or truncate, the server's
log) to ours, which are the server's: up to :data:`OUTPUT_LIMIT` bytes each over the
kernel's life, dropped rather than waited for when the server does not read; and, for a
pooled kernel, the server's stdin (the notebook's handout) to the kernel's.

Standard library only, no ``site``: it runs in the supervisor's bare interpreter, which
every kernel start waits for; so it takes ``_socket``, not ``socket`` (whose import cost
~1.5 ms more).
"""

from __future__ import annotations

import _socket
import os
import select

#: How much of each of the kernel's stdout and stderr reaches the server's log in the
#: kernel's whole life; what follows is dropped, with one line that says so.
OUTPUT_LIMIT = 1 << 20
#: What the server may send to a pooled kernel's stdin (its handout is one JSON line).
INPUT_LIMIT = 1 << 20
#: A pipe that polls writable takes this much without blocking (PIPE_BUF).
_ATOMIC_WRITE = 4096
_CHUNK = 1 << 16


class _Flow:
    """One direction of bytes, from ``source`` to ``sink``: at most one read in flight,
    so the memory held is bounded by :data:`_CHUNK` however slow the sink is."""

    def __init__(self, source: int, sink: int, *, budget: int | None = None,
                 notice: bytes = b"", closes_sink: bool = True) -> None:
        self.source = source
        self.sink = sink
        self.closes_sink = closes_sink  # not our own stdout and stderr
        self.pending = b""
        #: Bytes still to pass (None: unbounded). A flow with a budget never waits on its
        #: sink: what the sink cannot take at once is dropped.
        self.budget = budget
        self.notice = notice  # written once the budget is spent
        self.sink_pollable = True


class Relay:
    """The supervisor's side of the wall: one epoll loop for every flow.

    ``listeners``: {TCP listening fd: the kernel's Unix address for that channel}.
    ``outputs``: [(read end of the kernel's stdout or stderr, our fd to copy it to)].
    ``stdin``: (our stdin, write end of the kernel's stdin) for a pooled kernel, or None.
    The caller polls :meth:`fileno` beside what else it waits for and calls :meth:`handle`.
    """

    def __init__(self, listeners: dict[int, bytes], outputs: list[tuple[int, int]],
                 stdin: tuple[int, int] | None = None) -> None:
        self.poller = select.epoll()
        self.listeners = {fd: (_socket.socket(fileno=fd), address)
                          for fd, address in listeners.items()}
        self.flows: dict[int, _Flow] = {}  # by source fd
        self.by_sink: dict[int, _Flow] = {}
        self.partner: dict[int, int] = {}  # a relayed connection's other fd
        self.registered: dict[int, int] = {}
        for listener, _address in self.listeners.values():
            listener.setblocking(False)
            self.poller.register(listener.fileno(), select.EPOLLIN)
        notice = (b"\nnskernel: the kernel wrote more than %d bytes to this stream; the rest "
                  b"is dropped\n" % OUTPUT_LIMIT)
        for source, sink in outputs:
            self._add(_Flow(source, sink, budget=OUTPUT_LIMIT, notice=notice,
                            closes_sink=False))
        if stdin is not None:
            self._add(_Flow(*stdin, budget=INPUT_LIMIT))

    def fileno(self) -> int:
        return self.poller.fileno()

    def close(self) -> None:
        """Close every fd the relay holds (the listeners too: a restart binds again)."""
        for flow in list(self.flows.values()):
            self._end(flow)
        for listener, _address in self.listeners.values():
            listener.close()
        self.poller.close()

    def drain_outputs(self) -> None:
        """The kernel has ended: pass on what it wrote last, as far as the sinks take it."""
        for flow in [flow for flow in self.flows.values() if not flow.closes_sink]:
            for _ in range(16):
                if flow.source not in self.flows or not self._read(flow):
                    break
                self._write(flow)

    def handle(self, events: list[tuple[int, int]]) -> None:
        """Act on what epoll reported for the relay's fds."""
        for fd, mask in events:
            if fd in self.listeners:
                self._accept(*self.listeners[fd])
                continue
            flow = self.flows.get(fd)
            if flow is not None and not flow.pending and mask & _READABLE:
                if self._read(flow):
                    self._write(flow)
            into = self.by_sink.get(fd)
            if into is not None and mask & (select.EPOLLOUT | select.EPOLLERR):
                self._write(into)

    def poll(self, timeout: float = -1) -> None:
        """Wait for, and act on, events of the relay alone."""
        self.handle(self.poller.poll(timeout))

    def _accept(self, listener: _socket.socket, address: bytes) -> None:
        """Answer each connection from outside with one to the kernel's channel; a kernel
        that is gone (or not listening) gets the connection closed."""
        while True:
            try:
                outside, _peer = listener._accept()
            except OSError:  # BlockingIOError: none left; anything else: try at next event
                return
            kernel = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                kernel.connect(address)
            except OSError:
                _close(outside)
                kernel.close()
                continue
            inside = kernel.detach()
            _send_at_once(outside)
            os.set_blocking(outside, False)
            os.set_blocking(inside, False)
            self.partner[outside], self.partner[inside] = inside, outside
            self._add(_Flow(outside, inside))
            self._add(_Flow(inside, outside))

    def _add(self, flow: _Flow) -> None:
        self.flows[flow.source] = flow
        self.by_sink[flow.sink] = flow
        os.set_blocking(flow.source, False)
        self._update(flow.source)
        self._update(flow.sink)

    def _update(self, fd: int) -> None:
        """Register what ``fd`` waits for: input while its flow has nothing pending, room
        to write while the flow into it has something pending."""
        mask = 0
        if fd in self.flows and not self.flows[fd].pending:
            mask |= select.EPOLLIN
        into = self.by_sink.get(fd)
        if into is not None and into.pending:
            mask |= select.EPOLLOUT
        if into is not None and not into.sink_pollable:
            return
        try:
            if fd not in self.registered:
                self.poller.register(fd, mask)
            elif mask != self.registered[fd]:
                self.poller.modify(fd, mask)
        except PermissionError:  # a regular file or /dev/null: epoll refuses; never blocks
            if into is not None:
                into.sink_pollable = False
            return
        self.registered[fd] = mask

    def _read(self, flow: _Flow) -> bool:
        """Read once from the flow's source; False when the source is done."""
        try:
            data = os.read(flow.source, _CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self._end(flow)
            return False
        if flow.budget is not None:
            if flow.budget <= 0:
                return True  # over its limit: read and dropped
            if len(data) > flow.budget:
                data = data[:flow.budget] + flow.notice
            flow.budget -= len(data)
        flow.pending = data
        return True

    def _write(self, flow: _Flow) -> None:
        while flow.pending and flow.source in self.flows:
            chunk = flow.pending
            if flow.budget is not None and flow.sink_pollable:
                if not _writable(flow.sink):
                    flow.pending = b""  # the sink does not read: drop, never wait
                    break
                chunk = chunk[:_ATOMIC_WRITE]
            try:
                written = os.write(flow.sink, chunk)
            except BlockingIOError:
                break
            except OSError:
                self._end(flow)
                return
            flow.pending = flow.pending[written:]
        if flow.source in self.flows:
            self._update(flow.source)
            self._update(flow.sink)

    def _end(self, flow: _Flow) -> None:
        """A source is done: a relayed connection ends on both sides; an output or input
        flow stops, and closes its sink unless that is our own stdout or stderr."""
        ends = [flow.source, self.partner.get(flow.source, flow.sink)]
        keep = None if flow.closes_sink else flow.sink
        for fd in ends:
            self.flows.pop(fd, None)
            self.by_sink.pop(fd, None)
            self.partner.pop(fd, None)
            if self.registered.pop(fd, None) is not None:
                try:
                    self.poller.unregister(fd)
                except OSError:
                    pass
            if fd != keep:
                _close(fd)


_READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR


def _send_at_once(fd: int) -> None:
    """No Nagle on a TCP connection from Jupyter: zmq turns it off on its own sockets, and
    without it a small write that follows another one waits for the peer's delayed ACK
    (up to 40 ms: a third of the kernel's replies and idle statuses came that late)."""
    connection = _socket.socket(fileno=fd)
    try:
        connection.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    except OSError:
        pass  # not TCP
    finally:
        connection.detach()


def _writable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(0))


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
