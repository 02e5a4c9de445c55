"""ipykernel's app, taught to adopt the listening sockets the launcher made for it.

The kernel runs in its own network namespace where the connection file's 127.0.0.1 ports
mean nothing. The launcher made a listening Unix socket per channel before it isolated (the
TCP ports stay with its supervisor, which relays to these: see :mod:`nskernel.kernel.relay`); here
each channel sets ``zmq.USE_FD`` to its inherited fd before binding, so libzmq accepts on it
instead of creating a socket. Everything else is stock ipykernel, message for message.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import zmq
from ipykernel.heartbeat import Heartbeat
from ipykernel.kernelapp import IPKernelApp
from traitlets import Dict, Unicode, default

#: The debugger connects to the shell socket's last endpoint; the host-netns TCP address is
#: unreachable from inside, so the shell socket also binds here (same zmq context).
DEBUG_SHELL_ENDPOINT = "inproc://nskernel-debug-shell"


def _may_write(directory: str) -> bool:
    """Whether ``directory`` is writable, or could be made (IPython's own test)."""
    if os.path.exists(directory):
        return os.access(directory, os.W_OK)
    parent = os.path.dirname(directory)
    return os.path.isdir(parent) and os.access(parent, os.W_OK)


class AdoptingHeartbeat(Heartbeat):
    """The heartbeat binds in its own thread; give it the inherited fd too."""

    def __init__(self, *args: object, listener: tuple[int, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.listener = listener

    def _try_bind_socket(self) -> None:
        fd, endpoint = self.listener
        self.socket.setsockopt(zmq.USE_FD, fd)
        return self.socket.bind(endpoint)


class IsolatedKernelApp(IPKernelApp):
    """IPKernelApp whose channels adopt inherited listening sockets."""

    name = "nskernel-kernel"
    listeners = Dict(help="port -> (inherited listening fd, its zmq endpoint), from the "
                          "launcher").tag(config=False)
    connection_info = Dict(
        help="the connection file's contents, read by the launcher: a root kernel acts on the "
             "host as an id of its own, which may not read the file itself").tag(config=False)

    @default("extra_extensions")
    def _extra_extensions_default(self) -> list[str]:
        return ["nskernel"]  # the namespace magics, loaded by themselves

    def _try_bind_socket(self, s: zmq.Socket, port: int) -> int:
        listener = self.listeners.get(port)
        if listener is None:
            port = super()._try_bind_socket(s, port)
        else:
            fd, endpoint = listener
            s.setsockopt(zmq.USE_FD, fd)
            s.bind(endpoint)
        if s is self.shell_socket:
            s.bind(DEBUG_SHELL_ENDPOINT)
        return port

    def init_connection_file(self) -> None:
        if not self.connection_info:
            return super().init_connection_file()
        self.connection_file = os.path.abspath(self.connection_file)
        self.load_connection_info(self.connection_info)

    def write_connection_file(self, **kwargs: object) -> None:
        """Jupyter wrote the file with every port in it; nothing is left to add."""
        if not self.connection_info:
            super().write_connection_file(**kwargs)

    scratch_directory = Unicode(
        help="this kernel's own directory, in its private /run (gone with the kernel's mount "
             "namespace, however the kernel ends): the debugger's cell files, and IPython's "
             "directory when the home directory is not writable (a root kernel is no user "
             "of the host's)").tag(config=False)

    def initialize(self, argv: list[str] | None = None) -> None:
        self._use_scratch_directory()
        super().initialize(argv)

    def init_kernel(self) -> None:
        from ipykernel import compiler, debugger  # here: debugpy warns when imported early

        compiler.get_tmp_directory = debugger.get_tmp_directory = lambda: self.scratch_directory
        super().init_kernel()

    def _use_scratch_directory(self) -> None:
        """Point the debugger and, where needed, IPython at the kernel's own directory.

        ipykernel names the debugger's directory /tmp/ipykernel_PID, and every isolated
        kernel is PID 2: a root kernel's /tmp/ipykernel_2 (mode 0700) would lock every later
        kernel of another user out of its debugger. Where IPython cannot write its usual
        directory it makes a temporary one and leaves it behind: it gets one in here.
        """
        if not self.scratch_directory:
            self.scratch_directory = tempfile.mkdtemp(prefix="ipykernel_nskernel_")
            atexit.register(shutil.rmtree, self.scratch_directory, ignore_errors=True)
        if "IPYTHONDIR" not in os.environ and not _may_write(os.path.expanduser("~/.ipython")):
            os.environ["IPYTHONDIR"] = os.path.join(self.scratch_directory, "ipython")

    def init_poller(self) -> None:
        """No parent poller: inside a pid namespace the kernel's parent (the launcher) is not
        visible, and the Jupyter server is not its parent at all.

        The launcher's supervisor watches the Jupyter server instead.
        """

    def init_heartbeat(self) -> None:
        listener = self.listeners.get(self.hb_port)
        if listener is None:
            return super().init_heartbeat()
        self.heartbeat = AdoptingHeartbeat(
            zmq.Context(),
            (self.transport, self.ip, self.hb_port),
            listener=listener,
            curve_publickey=self.curve_publickey,
            curve_secretkey=self.curve_secretkey,
        )
        self.heartbeat.start()
