"""ipykernel's app, taught to adopt the listening sockets the launcher made in the host netns.

The kernel runs in its own network namespace where the connection file's 127.0.0.1 ports
mean nothing. The launcher listened on them before it isolated; here each channel sets
``zmq.USE_FD`` to that inherited fd before binding, so libzmq accepts on it instead of
creating a socket. Everything else is stock ipykernel, message for message.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import zmq
from ipykernel.heartbeat import Heartbeat
from ipykernel.kernelapp import IPKernelApp
from traitlets import Dict, default

from nskernel.launch import LISTEN_FDS_ENV

#: The debugger connects to the shell socket's last endpoint; the host-netns TCP address is
#: unreachable from inside, so the shell socket also binds here (same zmq context).
DEBUG_SHELL_ENDPOINT = "inproc://nskernel-debug-shell"


def inherited_listeners(value: str | None = None) -> dict[int, int]:
    """Parse ``NSKERNEL_LISTEN_FDS`` ("port:fd,...") into {port: fd}."""
    value = os.environ.get(LISTEN_FDS_ENV, "") if value is None else value
    pairs = (item.split(":") for item in value.split(",") if item)
    return {int(port): int(fd) for port, fd in pairs}


class AdoptingHeartbeat(Heartbeat):
    """The heartbeat binds in its own thread; give it the inherited fd too."""

    def __init__(self, *args: object, listen_fd: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.listen_fd = listen_fd

    def _try_bind_socket(self) -> None:
        self.socket.setsockopt(zmq.USE_FD, self.listen_fd)
        return super()._try_bind_socket()


class IsolatedKernelApp(IPKernelApp):
    """IPKernelApp whose TCP channels adopt inherited listening sockets."""

    name = "nskernel-kernel"
    listen_fds = Dict(help="port -> inherited listening fd, from the launcher").tag(config=False)

    @default("extra_extensions")
    def _extra_extensions_default(self) -> list[str]:
        return ["nskernel"]  # the namespace magics, loaded by themselves

    @default("listen_fds")
    def _listen_fds_default(self) -> dict[int, int]:
        return inherited_listeners()

    def _try_bind_socket(self, s: zmq.Socket, port: int) -> int:
        fd = self.listen_fds.get(port) if self.transport == "tcp" else None
        if fd is None:
            port = super()._try_bind_socket(s, port)
        else:
            s.setsockopt(zmq.USE_FD, fd)
            s.bind(f"tcp://{self.ip}:{port}")
        if s is self.shell_socket:
            s.bind(DEBUG_SHELL_ENDPOINT)
        return port

    debug_directory = ""

    def init_kernel(self) -> None:
        self._private_debug_directory()
        super().init_kernel()

    def start(self) -> None:
        """Run the kernel; then remove its debugger directory (the forked kernel process ends
        with ``os._exit``, so this is the place, not ``atexit``)."""
        try:
            super().start()
        finally:
            shutil.rmtree(self.debug_directory, ignore_errors=True)

    def _private_debug_directory(self) -> None:
        """Give the debugger's cell files a directory of this kernel's own.

        ipykernel names it /tmp/ipykernel_PID, and every isolated kernel is PID 2: a root
        kernel's /tmp/ipykernel_2 (mode 0700) would lock every later kernel of another user
        out of its debugger. The connection file's name is unique on the host; the directory
        goes when the kernel stops.
        """
        from ipykernel import compiler, debugger  # here: debugpy warns when imported early

        name = os.path.splitext(os.path.basename(self.connection_file))[0]
        directory = os.path.join(tempfile.gettempdir(), f"ipykernel_nskernel_{name}")
        compiler.get_tmp_directory = debugger.get_tmp_directory = lambda: directory
        self.debug_directory = directory

    def init_poller(self) -> None:
        """No parent poller: inside a pid namespace the kernel's parent (the launcher) is not
        visible, and the Jupyter server is not its parent at all.

        The launcher's supervisor watches the Jupyter server instead.
        """

    def init_heartbeat(self) -> None:
        fd = self.listen_fds.get(self.hb_port) if self.transport == "tcp" else None
        if fd is None:
            return super().init_heartbeat()
        self.heartbeat = AdoptingHeartbeat(
            zmq.Context(),
            (self.transport, self.ip, self.hb_port),
            listen_fd=fd,
            curve_publickey=self.curve_publickey,
            curve_secretkey=self.curve_secretkey,
        )
        self.heartbeat.start()
