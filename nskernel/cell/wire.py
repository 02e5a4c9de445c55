"""The wire between a cell's child and the kernel: length-prefixed messages on a pipe (the
value or the error, rich display data), written by the child, read back by the parent.

In the child, :data:`child_messages` is the pipe's fd (for :func:`publish_display`) and
:data:`child_sends_plain` says what it sends must be plain data (an untrusted run)."""

from __future__ import annotations

import os
import pickle
import struct

from nskernel.cell import jailed_output
from nskernel.cell.errors import IsolatedRunError

_HEADER = struct.Struct("!I")


#: In the child: the fd of the message pipe, for :func:`publish_display`.
child_messages: int | None = None


#: In the child of an ``untrusted`` run: what it sends must be plain data (see jailed_output).
child_sends_plain = False


# ---------------------------------------------------------------------------- parent side
class Channel:
    """Length-prefixed pickles arriving in arbitrary chunks; ``plain``: from a child that
    may be hostile (plain data only, of a bounded size, in the shapes the child sends)."""

    def __init__(self, plain: bool = False) -> None:
        self.buffer = bytearray()
        self.messages: list[tuple] = []
        self.plain = plain
        self.received = 0

    @property
    def has_result(self) -> bool:
        return any(message[0] != "display" for message in self.messages)

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.plain and self.received > jailed_output.OUTPUT_LIMIT:
            raise IsolatedRunError(f"the cell sent back more than "
                                   f"{jailed_output.OUTPUT_LIMIT >> 20} MiB of output: stopped it")
        self.buffer += data
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + size:
                return
            payload = bytes(self.buffer[_HEADER.size:_HEADER.size + size])
            del self.buffer[:_HEADER.size + size]
            self.messages.append(self._decode(payload) if self.plain else pickle.loads(payload))

    @staticmethod
    def _decode(payload: bytes) -> tuple:
        """A hostile child's message: plain data, in one of the shapes :func:`send` sends."""
        try:
            message = jailed_output.loads(payload)
        except jailed_output.NotPlainData as exc:
            raise IsolatedRunError(f"the cell sent back something other than plain data "
                                   f"({exc}): stopped it") from None
        shapes = {"display": (dict, dict), "value": (object,), "error": (Exception, str)}
        if isinstance(message, tuple) and message and isinstance(message[0], str):
            shape = shapes.get(message[0])
            if shape is not None and len(message) == 1 + len(shape) and all(
                    isinstance(part, kind) for part, kind in zip(message[1:], shape,
                                                                 strict=True)):
                return message
        raise IsolatedRunError("the cell sent back a message that is none of display, value "
                               "or error: stopped it")


def inside_isolated_cell() -> bool:
    """True in a child that :func:`run` forked (where the kernel's threads do not exist)."""
    return child_messages is not None


def publish_display(data: dict, metadata: dict | None = None) -> None:
    """In an isolated child: send rich output (a mimebundle) to the notebook."""
    if child_messages is None:
        raise RuntimeError("publish_display is only for code running under runner.run")
    send(child_messages, ("display", data, metadata or {}))


def send(fd: int, message: tuple) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)  # 5: bytearray is plain
    if child_sends_plain:
        jailed_output.loads(payload)  # the parent would refuse it: say why, here
    data = _HEADER.pack(len(payload)) + payload
    while data:
        written = os.write(fd, data)
        data = data[written:]


def picklable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling (as plain data, in an untrusted run),
    else a RuntimeError with its text."""
    try:
        (jailed_output.loads if child_sends_plain else pickle.loads)(pickle.dumps(exc))
        exc.__traceback__ = None
        exc.__context__ = exc.__cause__ = None
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")
