"""Isolated Python on another host: the kernel launcher that gateway-provisioners'
DistributedProvisioner (and Enterprise Gateway) starts there over ssh.

The provisioner runs the kernelspec's argv on the chosen host (``nohup ARGV >> LOG &``) and
then waits for the launcher to call back. This module is that launcher, speaking the
protocol of gateway-provisioners' own ``launch_ipykernel.py`` / ``server_listener.py``:

1. Pick the five kernel ports and a *communication port* in ``--port-range``, and make the
   connection file (a new HMAC key; CurveZMQ keys too when ``--transport-encryption`` asks
   for them), in memory: nothing is written on the host.
2. Start :mod:`nskernel.launch` on it, in a session of its own: the isolated kernel, whose
   TCP listeners stay with its supervisor outside the walls (:mod:`nskernel.kernel.relay`),
   as for a local kernel. We are its parent: if we die, its supervisor ends it.
3. Send the connection file, with our pid, pgid, the communication port and the kernel id,
   to ``--response-address``, encrypted as the provisioner expects: AES (ECB, a fresh key)
   for the connection info, and that key under the server's RSA ``--public-key`` (PKCS#1
   v1.5), in base64 JSON ``{"version": 1, "key", "conn_info"}``.
4. Serve the communication port until the kernel has exited: each connection carries one
   JSON request, ``{"signum": N}`` (0: a poll, answered by accepting at all; 2: an interrupt)
   or ``{"shutdown": 1}``. Signals go to the kernel's process group, as jupyter_client sends
   them to a local kernel's: the interrupt reaches the kernel itself (its supervisor ignores
   SIGINT), SIGTERM/SIGKILL the supervisor. Once the kernel has exited we close the port, so
   the provisioner's next poll is refused: the kernel is reported dead.

The communication port takes requests from whoever can reach it, as gateway-provisioners'
own launcher does; only the signals Jupyter sends are honoured.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid

#: The protocol version of the response payload (gateway-provisioners' LAUNCHER_VERSION).
LAUNCHER_VERSION = 1
#: The signals a provisioner sends: poll, interrupt, terminate, kill.
SIGNALS = {0, signal.SIGINT, signal.SIGTERM, signal.SIGKILL}
#: After ``{"shutdown": 1}``, how long the kernel has to exit by itself before it is killed.
SHUTDOWN_GRACE = 5.0
#: How long a request may take to arrive once its connection is accepted.
REQUEST_TIMEOUT = 5.0
#: How long the server's response address may take to accept the connection info.
RESPONSE_TIMEOUT = 30.0
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")


class RemoteLaunchError(RuntimeError):
    """The kernel cannot be started or announced; one line for the kernel's log."""


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The provisioner's arguments; everything else is for :mod:`nskernel.launch`."""
    parser = argparse.ArgumentParser(
        prog="python -m nskernel.kernel.remote",
        description="Start Isolated Python for gateway-provisioners' DistributedProvisioner; "
                    "other arguments go to python -m nskernel.launch.")
    parser.add_argument("--kernel-id", required=True)
    parser.add_argument("--response-address", required=True, metavar="IP:PORT")
    parser.add_argument("--public-key", required=True)
    # nargs="?": the provisioner joins the argv into a shell command unquoted, so an empty
    # substitution (no encryption asked for) leaves the option without its value.
    parser.add_argument("--port-range", nargs="?", default="0..0", metavar="LOWER..UPPER")
    parser.add_argument("--transport-encryption", nargs="?", default="",
                        help="'auto' or 'required': CurveZMQ keys in the connection file")
    return parser.parse_known_args(argv)


def port_range(text: str) -> tuple[int, int]:
    """``LOWER..UPPER`` (0..0: any port). An unsubstituted ``{port_range}`` means any port."""
    if not text or text.startswith("{"):
        return 0, 0
    try:
        lower, upper = (int(part) for part in text.split(".."))
    except ValueError:
        raise RemoteLaunchError(f"bad --port-range {text!r}: use LOWER..UPPER") from None
    if not (lower == upper == 0 or 0 < lower <= upper <= 65535):
        raise RemoteLaunchError(f"bad --port-range {text!r}: use LOWER..UPPER within 1-65535")
    return lower, upper


def bind_port(lower: int, upper: int, attempts: int = 50) -> socket.socket:
    """A TCP socket bound on every address, to a free port within [lower, upper]."""
    for _ in range(attempts):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("0.0.0.0", random.randint(lower, upper) if upper else 0))
            return sock
        except OSError:
            sock.close()
    raise RemoteLaunchError(f"no free port in {lower}..{upper} after {attempts} attempts")


def connection_file(ports: list[int], curve: bool) -> tuple[int, dict]:
    """The kernel's connection info, and a memfd that holds it as a file: the launcher reads
    it through our /proc (:func:`launcher_argv`), and nothing is written to the host's disk,
    where a host whose processes are killed would keep it. The listeners take every address
    of the host: the server reaches them at the host's address, as it knows it."""
    info: dict = {**dict(zip(CHANNELS, ports, strict=True)), "ip": "0.0.0.0",
                  "key": str(uuid.uuid4()), "transport": "tcp",
                  "signature_scheme": "hmac-sha256", "kernel_name": ""}
    if curve:
        import zmq

        public, secret = zmq.curve_keypair()
        info.update(curve_publickey=public.decode(), curve_secretkey=secret.decode())
    fd = os.memfd_create("nskernel-connection")
    os.write(fd, json.dumps(info).encode())
    return fd, info


def encrypt(info: dict, public_key: str) -> bytes:
    """The response payload (see the module's docstring, step 3)."""
    from Cryptodome.Cipher import AES, PKCS1_v1_5
    from Cryptodome.PublicKey import RSA
    from Cryptodome.Random import get_random_bytes
    from Cryptodome.Util.Padding import pad

    aes_key = get_random_bytes(16)
    sealed = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(json.dumps(info).encode(), 16))
    server_key = RSA.import_key(base64.b64decode(public_key))
    payload = {"version": LAUNCHER_VERSION,
               "key": base64.b64encode(PKCS1_v1_5.new(server_key).encrypt(aes_key)).decode(),
               "conn_info": base64.b64encode(sealed).decode()}
    return base64.b64encode(json.dumps(payload).encode())


def send_response(address: str, payload: bytes) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), RESPONSE_TIMEOUT) as sock:
            sock.sendall(payload)
    except (OSError, ValueError) as exc:
        raise RemoteLaunchError(f"cannot send the connection info to {address}: {exc}") from None


#: What the provisioner fills in (its pre_launch substitutes ``{name}`` in the argv).
PROVISIONER_ARGUMENTS = ("kernel_id", "port_range", "response_address", "public_key",
                         "transport_encryption")


def kernelspec_argv(local_argv: list[str]) -> list[str]:
    """The remote kernelspec's argv, from the local one (:func:`nskernel.kernel.argv.make_argv`):
    this module instead of the launcher, the provisioner's placeholders instead of the
    connection file; the settings go through to the launcher (:func:`launcher_argv`)."""
    module = local_argv.index("nskernel.launch")
    settings = local_argv[module + 1:local_argv.index("-f")]
    placeholders = [word for name in PROVISIONER_ARGUMENTS
                    for word in (f"--{name.replace('_', '-')}", f"{{{name}}}")]
    return [*local_argv[:module], "nskernel.kernel.remote", *placeholders, *settings]


def launcher_argv(connection_fd: int, launch_arguments: list[str]) -> list[str]:
    """``python -m nskernel.launch`` as the local kernelspec runs it (see kernel.argv), on
    the connection file in our ``connection_fd``: the launcher, our child, reads it there."""
    frozen = ["-Xfrozen_modules=off"] if platform.python_implementation() == "CPython" else []
    return [sys.executable, *frozen, "-m", "nskernel.launch", *launch_arguments,
            "-f", f"/proc/{os.getpid()}/fd/{connection_fd}"]


def read_request(listener: socket.socket) -> dict | None:
    """Accept one connection and read its JSON request to the end; None if there was none
    (a poll that only connects) or it was not one."""
    conn, _peer = listener.accept()
    data = b""
    with conn:
        conn.settimeout(REQUEST_TIMEOUT)
        with contextlib.suppress(OSError):
            while len(data) < 4096:
                chunk = conn.recv(1024)
                if not chunk:
                    break
                data += chunk
    try:
        request = json.loads(data)
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def signal_group(kernel: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(kernel.pid, signum)


def serve(listener: socket.socket, kernel: subprocess.Popen) -> int:
    """Answer the provisioner until the kernel has exited; return its exit status."""
    deadline: float | None = None
    exited = os.pidfd_open(kernel.pid)
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        selector.register(exited, selectors.EVENT_READ)
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = selector.select(timeout)
            if not events and deadline is not None:
                signal_group(kernel, signal.SIGKILL)
                deadline = None
            for key, _mask in events:
                if key.fileobj == exited:
                    os.close(exited)
                    return kernel.wait()
                request = read_request(listener) or {}
                signum = request.get("signum")
                if isinstance(signum, int) and signum in SIGNALS and signum:
                    signal_group(kernel, signum)
                if request.get("shutdown") and deadline is None:
                    deadline = time.monotonic() + SHUTDOWN_GRACE


def run(args: argparse.Namespace, launch_arguments: list[str]) -> int:
    lower, upper = port_range(args.port_range or "")
    curve = (args.transport_encryption or "").lower() in ("auto", "required")
    sockets = [bind_port(lower, upper) for _ in range(len(CHANNELS) + 1)]
    listener = sockets.pop()  # the communication port: ours, held from here on
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()  # the kernel's supervisor binds them again (SO_REUSEADDR)
    kernel = None
    connection_fd, info = connection_file(ports, curve)
    try:
        listener.listen(16)
        kernel = subprocess.Popen(launcher_argv(connection_fd, launch_arguments),
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        info.update(pid=os.getpid(), pgid=os.getpgid(0), comm_port=listener.getsockname()[1],
                    kernel_id=args.kernel_id)
        send_response(args.response_address, encrypt(info, args.public_key))
        return serve(listener, kernel)
    finally:
        listener.close()
        os.close(connection_fd)
        if kernel is not None and kernel.poll() is None:
            signal_group(kernel, signal.SIGKILL)
            kernel.wait()


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(128 + signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    args, launch_arguments = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # ends the kernel too (run's finally)
    try:
        return run(args, launch_arguments)
    except RemoteLaunchError as exc:
        print(f"nskernel: cannot start the remote kernel: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
