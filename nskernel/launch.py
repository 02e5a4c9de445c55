"""The kernelspec's argv: start an IPython kernel inside new namespaces.

Process chain (DESIGN.md has why; here dumb-init stands in for our own init)::

    jupyter server ─ launcher ┬ dumb-init (PID 1) ─ sleep (PID 3)     orphans → PID 1
                              └ kernel (PID 2) ─ user processes
                   host pids    new pid namespace ──────────────────────────────

The launcher starts in the host network namespace, binds and listens on the connection
file's TCP ports and imports ipykernel, then enters the new namespaces and forks twice: PID 1,
which becomes dumb-init (it reaps the namespace's orphans), and the kernel, PID 2, which
starts warm from the launcher's imports. The listening sockets stay in the host netns, so
the kernel adopts them (``zmq.USE_FD``) and Jupyter reaches it directly, with no proxy in
between. The launcher then execs :mod:`nskernel.supervisor` in a bare interpreter: it stays
behind to be the process Jupyter signals and waits for, ends the namespace when the kernel
exits, and kills it if the Jupyter server dies.

Everything beside the kernel is small: a bare Python, dumb-init and its ``sleep`` (~13 MB of
RSS together), where forks of the launcher would each count the launcher's heap again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
from typing import NoReturn

from nskernel import _syscalls, isolation, nsinfo, sandbox, supervisor

#: Environment variable handing the adopted listening sockets to the kernel: "port:fd,...".
LISTEN_FDS_ENV = "NSKERNEL_LISTEN_FDS"
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


class LaunchError(RuntimeError):
    """The kernel cannot start; the message is one line for the Jupyter server's log."""


def bind_listeners(connection: dict) -> list[socket.socket]:
    """Listen on every TCP port of the connection file, in the current (host) netns."""
    if connection.get("transport", "tcp") != "tcp":
        return []  # ipc sockets are paths, reachable from any network namespace
    ip = connection.get("ip") or "127.0.0.1"
    host = "" if ip in ("*", "0.0.0.0") else ip
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listeners = []
    for channel in CHANNELS:
        port = int(connection.get(channel) or 0)
        if port <= 0:
            raise LaunchError(f"connection file has no {channel}; nskernel needs fixed ports")
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise LaunchError(f"cannot listen on {ip}:{port} ({channel}): {exc.strerror}") from None
        sock.listen(100)
        listeners.append(sock)
    return listeners


def find_dumb_init() -> str:
    """dumb-init (a PyPI dependency) is PID 1: it reaps the orphans of the namespace."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "dumb-init")
    found = beside_python if os.access(beside_python, os.X_OK) else shutil.which("dumb-init")
    if found is None:
        raise LaunchError("dumb-init not found beside python or on PATH: pip install dumb-init")
    return found


def run_init(dumb_init: str, go: int) -> NoReturn:
    """PID 1: wait until the kernel has PID 2, then become dumb-init.

    dumb-init needs a child to run; ``sleep infinity`` is the smallest. PID 1 leaves the
    launcher's process group, so Jupyter's interrupts and kills (sent to that group) reach
    the kernel and not the init; it dies with the launcher (parent-death signal) or when the
    supervisor kills it after the kernel has exited.
    """
    os.setsid()
    os.read(go, 1)
    os.close(go)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # ignored by the launcher; exec would keep it
    os.execv(dumb_init, [dumb_init, "--", "sleep", "infinity"])


def run_kernel(connection_file: str, kernel_app: type, launcher_fds: list[int]) -> int:
    """The kernel process proper: ipykernel with adopted sockets (see kernelapp)."""
    for fd in launcher_fds:
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the launcher ignored it
    kernel_app.launch_instance(argv=["-f", connection_file])
    return 0


def parse_args(argv: list[str] | None) -> tuple[isolation.Isolation, str]:
    parser = argparse.ArgumentParser(prog="python -m nskernel.launch",
                                     description="Start an IPython kernel in new namespaces.")
    parser.add_argument("-f", dest="connection_file", required=True,
                        help="the Jupyter connection file")
    isolation.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return isolation.from_args(args), args.connection_file
    except isolation.IsolationError as exc:
        parser.exit(2, f"nskernel: cannot start the kernel: {exc}\n")


def launch(spec: isolation.Isolation, connection_file: str) -> NoReturn:
    """Bind, isolate, start init and kernel, then exec the supervisor (never returns)."""
    server = os.pidfd_open(os.getppid())  # before anything can orphan us
    try:
        with open(connection_file) as handle:
            connection = json.load(handle)
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot read connection file {connection_file}: {exc}") from None
    dumb_init = find_dumb_init() if spec.pid else ""
    listeners = bind_listeners(connection)
    os.environ[LISTEN_FDS_ENV] = ",".join(
        f"{sock.getsockname()[1]}:{sock.fileno()}" for sock in listeners)
    os.environ[nsinfo.HOST_NS_ENV] = nsinfo.encode_host_namespaces()  # for %nsinfo inside
    # Imported here, once, so that the kernel forked below starts warm (as fast as stock).
    from nskernel.kernelapp import IsolatedKernelApp

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts are for the kernel alone
    sandbox.enter(spec)
    init = ready = None
    if spec.pid:
        go, ready = os.pipe()
        init = sandbox.fork_pid1(spec, lambda: run_init(dumb_init, go))
        os.close(go)
    else:
        _syscalls.set_child_subreaper()  # no init: orphans come to us
    ours = [fd for fd in (server, ready) if fd is not None]
    kernel = sandbox.fork_child(lambda: run_kernel(connection_file, IsolatedKernelApp, ours))
    if ready is not None:
        os.write(ready, b"1")  # the kernel is PID 2: the init may start its own child now
        os.close(ready)
    for sock in listeners:
        sock.close()  # the kernel owns them now; a restart must be able to bind again
    os.set_inheritable(server, True)
    argv = supervisor.command(server, kernel, init=init)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.execve(argv[0], argv, {**os.environ, "PYTHONPATH": package_parent})


def main(argv: list[str] | None = None) -> int:
    spec, connection_file = parse_args(argv)
    try:
        launch(spec, connection_file)
    except (LaunchError, _syscalls.NamespaceError) as exc:
        print(f"nskernel: cannot start the kernel: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
