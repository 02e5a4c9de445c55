"""The kernelspec's argv: start an IPython kernel inside new namespaces.

Process chain (DESIGN.md)::

    jupyter server ─ launcher ─ init (PID 1) ─ kernel (PID 2) ─ user processes
                     host pids   new pid namespace ───────────────────────────

The launcher starts in the host network namespace, binds and listens on the connection
file's TCP ports, then enters the new namespaces. The listening sockets stay in the host
netns, so the kernel adopts them (``zmq.USE_FD``) and Jupyter reaches it directly, with no
proxy in between. The launcher stays behind to be the process Jupyter signals and waits
for, and to kill the namespace if the Jupyter server dies.

Only the standard library is imported here before the kernel forks, so the launcher and
init stay small and start fast; ipykernel is imported by the kernel process alone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys

from nskernel import _syscalls, isolation, nsinfo, sandbox

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


def run_kernel(connection_file: str) -> int:
    """The kernel process proper: ipykernel with adopted sockets (see kernelapp)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the launcher ignored it
    from nskernel.kernelapp import IsolatedKernelApp

    IsolatedKernelApp.launch_instance(argv=["-f", connection_file])
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


def launch(spec: isolation.Isolation, connection_file: str) -> int:
    """Bind, isolate, start init and kernel, then wait; return the kernel's exit code."""
    try:
        with open(connection_file) as handle:
            connection = json.load(handle)
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot read connection file {connection_file}: {exc}") from None
    listeners = bind_listeners(connection)
    os.environ[LISTEN_FDS_ENV] = ",".join(
        f"{sock.getsockname()[1]}:{sock.fileno()}" for sock in listeners)

    os.environ[nsinfo.HOST_NS_ENV] = nsinfo.encode_host_namespaces()  # for %nsinfo inside
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts are for the kernel alone
    for directory in sandbox.PRIVATE_RUN_DIRS:  # mount points for the kernel's private copies
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            pass  # not root: the lab says what to do if it ever needs them
    sandbox.enter(spec)

    def kernel() -> int:
        return run_kernel(connection_file)

    if spec.pid:
        child = sandbox.fork_pid1(spec, lambda: sandbox.run_init(kernel))
    else:
        _syscalls.set_child_subreaper()
        child = sandbox.fork_pid1(spec, kernel)
    _syscalls.set_process_name("nskernel-launch")
    for sock in listeners:
        sock.close()  # the kernel owns them now; a restart must be able to bind again
    try:
        return sandbox.supervise(child, reap_orphans=not spec.pid)
    finally:
        if not spec.pid:
            sandbox.kill_descendants(os.getpid())


def main(argv: list[str] | None = None) -> int:
    spec, connection_file = parse_args(argv)
    try:
        return launch(spec, connection_file)
    except (LaunchError, _syscalls.NamespaceError) as exc:
        print(f"nskernel: cannot start the kernel: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
