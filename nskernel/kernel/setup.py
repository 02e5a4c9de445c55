"""What the launcher (:mod:`nskernel.launch`) needs before it forks: the kernelspec's arguments,
the connection file's listeners bound in the host's network namespace, dumb-init's path."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import secrets
import shutil
import socket
import sys

from nskernel import isolation, limits

CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class LaunchError(RuntimeError):
    """The kernel cannot start; the message is one line for the Jupyter server's log."""


@dataclasses.dataclass
class Channels:
    """Where Jupyter reaches the kernel, on both sides of the wall.

    ``outside``: the connection file's TCP listeners, bound here in the host's network
    namespace and kept by the supervisor, which relays each connection (see
    :mod:`nskernel.kernel.relay`); empty for an ``ipc`` connection file, whose Unix sockets the
    kernel adopts directly. ``inside``: {port: (listening Unix socket, zmq endpoint)}, the
    sockets the kernel adopts (``zmq.USE_FD``). Unix sockets only: no process that runs
    user code holds a socket of the host's that it could re-aim.
    """

    outside: dict[int, socket.socket]
    inside: dict[int, tuple[socket.socket, str]]

    def relayed(self) -> dict[int, bytes]:
        """{outside listener fd: the Unix address of its channel inside}, for the relay."""
        return {sock.fileno(): b"\0" + self.inside[port][1].removeprefix("ipc://@").encode()
                for port, sock in self.outside.items()}

    def close(self) -> None:
        for sock in [*self.outside.values(), *(inner for inner, _ in self.inside.values())]:
            sock.close()


def bind_listeners(connection: dict) -> Channels:
    """Listen on every channel of the connection file, outside and in.

    TCP ports are bound here, in the host netns, which the kernel will have left; the kernel
    gets a listening Unix socket per channel with an abstract name (in this netns: the
    supervisor, which stays here, reaches it; the kernel cannot bind another). ipc sockets
    (paths, ``IP-PORT``) are bound here too: a root kernel acts on the host as an id of its
    own, which may not create files where Jupyter keeps them.
    """
    transport = connection.get("transport", "tcp")
    ip = connection.get("ip") or "127.0.0.1"
    channels = Channels({}, {})
    tag = f"nskernel-{os.getpid()}-{secrets.token_hex(8)}"
    try:
        for channel in CHANNELS:
            port = int(connection.get(channel) or 0)
            if port <= 0:
                raise LaunchError(f"connection file has no {channel}; nskernel needs fixed ports")
            if transport == "ipc":
                sock = _listen(transport, ip, port, channel)
                channels.inside[port] = (sock, f"ipc://{ip}-{port}")
                continue
            channels.outside[port] = _listen(transport, ip, port, channel)
            name = f"{tag}-{channel.removesuffix('_port')}"
            inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            channels.inside[port] = (inner, f"ipc://@{name}")
            inner.bind("\0" + name)
            inner.listen(100)
    except BaseException:
        channels.close()
        raise
    return channels


def _listen(transport: str, ip: str, port: int, channel: str) -> socket.socket:
    if transport == "ipc":
        address: str | tuple[str, int] = f"{ip}-{port}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)  # a socket file left by an earlier kernel (libzmq does this)
    else:
        host = "" if ip in ("*", "0.0.0.0") else ip
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = (host, port)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise LaunchError(f"cannot listen on {ip}:{port} ({channel}): {exc.strerror}") from None
    sock.listen(100)
    return sock


def find_dumb_init() -> str:
    """dumb-init (a PyPI dependency) is PID 1: it reaps the orphans of the namespace."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "dumb-init")
    found = beside_python if os.access(beside_python, os.X_OK) else shutil.which("dumb-init")
    if found is None:
        raise LaunchError("dumb-init not found beside python or on PATH: pip install dumb-init")
    return found


def add_kernel_arguments(parser: argparse.ArgumentParser) -> None:
    """The kernel's flags: namespaces, locks (not --caps) and limits (not --cpu-time)."""
    isolation.add_arguments(parser)
    isolation.add_lock_arguments(parser, caps=False, tmpfs_default=isolation.KERNEL_TMP_SIZE)
    limits.add_arguments(parser, for_kernel=True)
