"""nskernel.kernel.remote without hosts: the kernelspec it makes, the launcher it starts, its
port range, and a payload that gateway-provisioners' own decoder reads (the real thing runs
in tests/test_many_hosts.py)."""

from __future__ import annotations

import base64
import json
import os

import pytest
from Cryptodome.PublicKey import RSA

from nskernel.isolation import Isolation
from nskernel.kernel import kernelspec, remote
from nskernel.kernel.argv import make_argv
from nskernel.limits import Limits


def test_the_kernelspec_runs_the_remote_launcher_with_the_provisioners_placeholders() -> None:
    spec = Isolation.kernel_default()
    written = kernelspec.kernel_dict(spec, limits=Limits(pids=64), remote=["h1", "h2"])
    argv = written["argv"]
    assert argv[argv.index("-m") + 1] == "nskernel.kernel.remote"
    for name in remote.PROVISIONER_ARGUMENTS:
        flag = f"--{name.replace('_', '-')}"
        assert argv[argv.index(flag) + 1] == f"{{{name}}}"
    assert "{connection_file}" not in argv
    provisioner = written["metadata"]["kernel_provisioner"]
    assert provisioner == {"provisioner_name": "distributed-provisioner",
                           "config": {"remote_hosts": ["h1", "h2"]}}
    assert written["metadata"]["supported_encryption"] == ["curve"]
    hosts_from_the_server = kernelspec.kernel_dict(spec, remote=[])
    assert hosts_from_the_server["metadata"]["kernel_provisioner"]["config"] == {}


def test_the_launcher_gets_the_local_kernelspecs_settings() -> None:
    """As filled in by the provisioner, the remote argv starts the launcher with exactly the
    local kernelspec's command, on the connection file in our memfd."""
    local = make_argv(Isolation.kernel_default(), limits=Limits(pids=64))
    filled = [word.format(kernel_id="k", port_range="0..0", response_address="10.0.0.1:8877",
                          public_key="K", transport_encryption="")
              for word in remote.kernelspec_argv(local)]
    args, settings = remote.parse_args(filled[filled.index("nskernel.kernel.remote") + 1:])
    assert (args.kernel_id, args.response_address) == ("k", "10.0.0.1:8877")
    launched = remote.launcher_argv(7, settings)
    assert launched[:-1] == local[:-1]
    assert launched[-1] == f"/proc/{os.getpid()}/fd/7"


def test_an_empty_substitution_leaves_the_next_option_alone() -> None:
    """The provisioner joins the argv unquoted: no encryption asked for leaves
    ``--transport-encryption`` with nothing after it but the next option."""
    args, rest = remote.parse_args(["--kernel-id", "k", "--response-address", "10.0.0.1:8877",
                                    "--public-key", "K", "--transport-encryption", "--pid"])
    assert not args.transport_encryption
    assert rest == ["--pid"]


@pytest.mark.parametrize(("text", "expected"), [
    ("0..0", (0, 0)), ("40000..41000", (40000, 41000)), ("{port_range}", (0, 0)), ("", (0, 0))])
def test_port_range(text: str, expected: tuple[int, int]) -> None:
    assert remote.port_range(text) == expected


@pytest.mark.parametrize("text", ["40000", "a..b", "41000..40000", "0..70000"])
def test_a_bad_port_range_is_one_line(text: str) -> None:
    with pytest.raises(remote.RemoteLaunchError, match="bad --port-range"):
        remote.port_range(text)


def test_the_payload_is_what_the_provisioners_response_manager_decodes() -> None:
    from gateway_provisioners.response_manager import ResponseManager

    private = RSA.generate(1024)
    public = base64.b64encode(private.publickey().export_key("DER")).decode()
    info = {"shell_port": 1, "key": "secret", "kernel_id": "k", "comm_port": 2}
    decoder = ResponseManager.__new__(ResponseManager)  # no socket: only its decoder
    decoder._private_key = private
    decoder._response_registry = {}
    decoded = ResponseManager._decode_payload(decoder, remote.encrypt(info, public).decode())
    assert decoded == {**info, "key": b"secret"}
    assert json.loads(base64.b64decode(remote.encrypt(info, public)))["version"] == 1


def test_the_communication_port_passes_on_only_jupyters_signals_and_ends_with_the_kernel(
        ) -> None:
    """serve() with ``sleep`` for a kernel: a poll and a signal Jupyter never sends change
    nothing; SIGTERM reaches the kernel's group, and serve returns its status."""
    import signal
    import socket
    import subprocess
    import threading

    kernel = subprocess.Popen(["sleep", "60"], start_new_session=True)
    listener = socket.create_server(("127.0.0.1", 0))
    result: list[int] = []
    server = threading.Thread(target=lambda: result.append(remote.serve(listener, kernel)))
    server.start()
    try:
        def send(request: dict) -> None:
            with socket.create_connection(listener.getsockname(), timeout=5) as sock:
                sock.sendall(json.dumps(request).encode())

        send({"signum": 0})
        send({"signum": int(signal.SIGUSR1)})  # would kill a sleep, were it passed on
        send({"signum": "15"})  # not a number: ignored too
        server.join(0.5)
        assert server.is_alive() and kernel.poll() is None
        send({"signum": int(signal.SIGTERM)})
        server.join(10)
        assert result == [-signal.SIGTERM]
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait()
        listener.close()
        server.join(10)


def test_a_kernel_that_outlives_its_shutdown_request_is_killed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import socket
    import subprocess

    monkeypatch.setattr(remote, "SHUTDOWN_GRACE", 0.2)
    kernel = subprocess.Popen(["sleep", "60"], start_new_session=True)
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as sock:
            sock.sendall(b'{"shutdown": 1}')
        assert remote.serve(listener, kernel) == -signal.SIGKILL
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait()
        listener.close()
