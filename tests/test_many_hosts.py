"""Isolated Python on other hosts, started by gateway-provisioners' DistributedProvisioner.

Two hosts, each a real sshd in a network namespace of its own on a bridge (tests/hosts.py),
the machine's files shared as a cluster's are; the kernelspec is `nskernel install --remote
HOST,HOST`'s; the Jupyter side is jupyter_client's KernelManager with the provisioner, as a
Jupyter Server's would be (the server's own configuration: c.DistributedProvisioner...).
Kernels spread over both hosts, execute, interrupt, restart and shut down; a host cut off or
killed has its kernel reported dead while the other goes on; nothing of ours is left.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    IS_ROOT,
    REPO,
    RUN_ID,
    RUN_MARK_ENV,
    RUN_PREFIX,
    others_may_traverse,
    wait_for,
)
from gateway_provisioners import distributed, response_manager
from hosts import Cluster, Host, cluster
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from traitlets.config import Config

pytestmark = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: hosts are network namespaces on a bridge, each with an "
                        "sshd, which only root may make here")

KERNEL_NAME = "isolated-remote"
START_TIMEOUT = 60
#: The ports a server lets its kernels take (a firewall's opening, say): the launcher picks
#: the kernel's five and its communication port in it.
PORT_RANGE = (40000, 41000)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Cluster]:
    """Two hosts, the remote kernelspec for them, and the provisioner pointed at them."""
    with cluster(RUN_PREFIX, f"{RUN_MARK_ENV}={RUN_ID}") as the_cluster:
        addresses = ",".join(host.address for host in the_cluster.hosts)
        subprocess.run([sys.executable, "-m", "nskernel", "install", "--prefix", str(tmp_path),
                        "--name", KERNEL_NAME, "--remote", addresses, "--readonly"], check=True,
                       capture_output=True, timeout=60)
        the_cluster.kernels_dir = tmp_path / "share" / "jupyter" / "kernels"
        with pytest.MonkeyPatch.context() as patch:
            # The launchers call back on the bridge (not the machine's first address), and
            # each host writes its kernel-ID.log where the test looks.
            patch.setattr(response_manager, "response_ip", the_cluster.bridge_address)
            patch.setattr(distributed, "kernel_log_dir", str(the_cluster.logs))
            try:
                yield the_cluster
            finally:
                if response_manager.ResponseManager.initialized():
                    response_manager.ResponseManager.instance().stop_response_manager()
                    response_manager.ResponseManager.clear_instance()


@pytest.fixture
def start(hosts: Cluster) -> Iterator[Callable[..., tuple[KernelManager, Any]]]:
    """Start a remote kernel through the provisioner, ready; all shut down at the end."""
    started: list[tuple[KernelManager, Any]] = []

    def start_one(**manager_options: Any) -> tuple[KernelManager, Any]:
        manager = KernelManager(
            kernel_name=KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(hosts.kernels_dir)]),
            # As a server's jupyter_server_config.py would: root may start kernels here, on
            # ports in the range.
            config=Config({"DistributedProvisioner": {
                "unauthorized_users": set(), "port_range": "{}..{}".format(*PORT_RANGE)}}),
            **manager_options)
        manager.start_kernel()
        client = manager.client()
        started.append((manager, client))
        client.start_channels()
        client.wait_for_ready(timeout=START_TIMEOUT)
        return manager, client

    try:
        yield start_one
    finally:
        for manager, client in started:
            client.stop_channels()
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)


def host_of(manager: KernelManager, hosts: Cluster) -> Host:
    """The host the kernel runs on: the provisioner's word for it, and where its launcher
    (the pid the launcher reported) actually lives."""
    provisioner = manager.provisioner
    host = next(host for host in hosts.hosts if host.address == provisioner.assigned_ip)
    assert provisioner.connection_info["ip"] == host.address
    assert provisioner.pid in host.processes()
    ports = [provisioner.connection_info[f"{channel}_port"]
             for channel in ("shell", "iopub", "stdin", "control", "hb")] + [provisioner.comm_port]
    assert all(PORT_RANGE[0] <= port <= PORT_RANGE[1] for port in ports), ports
    assert len(set(ports)) == 6, ports
    return host


def kernel_processes(kernel_id: str) -> set[int]:
    """Every process on the machine (so on every host) started for ``kernel_id``: the
    provisioner exports KERNEL_ID into the command it runs over ssh."""
    mark = f"KERNEL_ID={kernel_id}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.add(int(entry))
    return found


def host_uid(pid: int) -> int:
    """The real uid of ``pid`` as the host sees it."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nUid:")[1].split()[0])


def run(client: Any, code: str, timeout: float = 30) -> tuple[dict, str]:
    """Execute ``code``; the reply's content and what it printed."""
    printed: list[str] = []

    def output(message: dict) -> None:
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])

    reply = client.execute_interactive(code, timeout=timeout, output_hook=output)
    return reply["content"], "".join(printed)


def interrupt_a_sleep(manager: KernelManager, client: Any) -> dict:
    """Interrupt a cell that sleeps (once it is running); the reply's content."""
    msg_id = client.execute("import time; time.sleep(120)")
    while True:
        message = client.get_iopub_msg(timeout=30)
        if message["parent_header"].get("msg_id") == msg_id and \
                message["msg_type"] == "execute_input":
            break
    manager.interrupt_kernel()
    while True:
        reply = client.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def only_sshd_left(hosts: Cluster) -> bool:
    return all(host.processes() == {host.sshd.pid} for host in hosts.hosts)


def test_kernels_spread_over_the_hosts_and_live_their_lives(
        hosts: Cluster, start: Callable[..., tuple[KernelManager, Any]]) -> None:
    kernels = [start() for _ in range(4)]
    on = [host_of(manager, hosts) for manager, _client in kernels]
    assert sorted(host.address for host in on) == sorted(
        2 * [host.address for host in hosts.hosts]), "round-robin: two kernels on each host"

    for _manager, client in kernels:
        content, printed = run(client, "import os, socket; print(os.getpid(), "
                                       "socket.gethostname(), len(os.listdir('/sys/class/net')), "
                                       "os.statvfs('/usr').f_flag & os.ST_RDONLY)")
        assert content["status"] == "ok"
        # PID 2, its own uts and net (lo alone), and the kernelspec's lock: a read-only host
        assert printed.split() == ["2", "isolated", "1", str(os.ST_RDONLY)]

    manager, client = kernels[0]
    content = interrupt_a_sleep(manager, client)
    assert (content["status"], content["ename"]) == ("error", "KeyboardInterrupt")
    assert run(client, "x = 6 * 7; print(x)")[1] == "42\n"

    old_launcher, old_id = manager.provisioner.pid, manager.kernel_id
    client.stop_channels()
    manager.restart_kernel()
    client = manager.client()  # a restarted remote kernel has new ports and a new key
    client.start_channels()
    kernels[0] = (manager, client)
    client.wait_for_ready(timeout=START_TIMEOUT)
    host_of(manager, hosts)
    assert wait_for(lambda: not os.path.exists(f"/proc/{old_launcher}"), timeout=10)
    content, _ = run(client, "x")
    assert (content["status"], content["ename"]) == ("error", "NameError")  # a new kernel
    assert manager.kernel_id == old_id

    ids = {manager.kernel_id for manager, _client in kernels}
    for manager, client in kernels:
        client.stop_channels()
        manager.shutdown_kernel()
        assert not manager.is_alive()
    assert wait_for(lambda: only_sshd_left(hosts), timeout=10), \
        [host.processes() for host in hosts.hosts]
    assert not set().union(*(kernel_processes(kernel_id) for kernel_id in ids))
    # On the hosts' disk, only the provisioner's own logs: nskernel writes nothing there.
    assert {path.name for path in hosts.logs.iterdir()} <= {
        f"kernel-{kernel_id}.log" for kernel_id in ids}


def test_curve_encryption_when_the_server_requires_it(
        hosts: Cluster, start: Callable[..., tuple[KernelManager, Any]]) -> None:
    manager, client = start(transport_encryption="required")
    assert len(manager.provisioner.connection_info["curve_publickey"]) == 40
    assert run(client, "print(1 + 1)")[1] == "2\n"


def test_a_host_cut_off_is_reported_dead_and_the_other_goes_on(
        hosts: Cluster, start: Callable[..., tuple[KernelManager, Any]]) -> None:
    (lost, lost_client), (kept, kept_client) = start(), start()
    cut, other = host_of(lost, hosts), host_of(kept, hosts)
    assert cut != other
    launcher, lost_id = lost.provisioner.pid, lost.kernel_id

    subprocess.run(["ip", "link", "set", cut.link, "down"], check=True)
    assert wait_for(lambda: not lost.is_alive(), timeout=10)
    assert kept.is_alive()
    assert run(kept_client, "print('still here')")[1] == "still here\n"
    lost_client.stop_channels()
    lost.shutdown_kernel(now=True)  # what a server does with a dead kernel: forget it

    # Out of the server's reach, the kernel runs on where it was: ending its launcher (as
    # whoever tends the host would) ends all of it.
    subprocess.run(["ip", "link", "set", cut.link, "up"], check=True)
    assert launcher in cut.processes()
    os.kill(launcher, signal.SIGTERM)
    assert wait_for(lambda: not kernel_processes(lost_id), timeout=10)
    assert run(kept_client, "print('and still')")[1] == "and still\n"


def test_a_host_killed_is_reported_dead_and_the_other_goes_on(
        hosts: Cluster, start: Callable[..., tuple[KernelManager, Any]]) -> None:
    (lost, lost_client), (kept, kept_client) = start(), start()
    killed, other = host_of(lost, hosts), host_of(kept, hosts)
    assert killed != other
    lost_id = lost.kernel_id

    killed.kill_everything()  # its sshd, the launcher, the kernel's supervisor
    assert wait_for(lambda: not lost.is_alive(), timeout=10)
    assert wait_for(lambda: not kernel_processes(lost_id), timeout=10)  # the kernel went too
    assert run(kept_client, "print('still here')")[1] == "still here\n"
    lost_client.stop_channels()
    lost.shutdown_kernel(now=True)
    assert kept.is_alive()


@pytest.fixture
def ssh_user(hosts: Cluster) -> Iterator[str]:
    """A user of the hosts with a shell and a home of their own (conftest's unprivileged user
    has neither: sshd runs a command through the user's shell), who reaches the venv."""
    name = f"nskr-{RUN_PREFIX}"
    home = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    # Password "*": none to log in with, and not locked ("!"), which sshd without PAM refuses.
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(home), "-p", "*",
                    "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        with others_may_traverse([REPO, Path(sys.prefix), Path(sys.executable).resolve()]), \
                pytest.MonkeyPatch.context() as patch:
            patch.setenv("GP_REMOTE_USER", name)  # whom the provisioner logs in as
            yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_a_users_kernel_on_a_host_is_rootless(
        hosts: Cluster, ssh_user: str, start: Callable[..., tuple[KernelManager, Any]]) -> None:
    manager, client = start()
    host = host_of(manager, hosts)
    content, printed = run(client, "import os; print(os.getuid(), os.getpid())")
    assert content["status"] == "ok"
    assert printed.split() == ["0", "2"]  # root of its own user namespace, PID 2
    # ... and on the host, every process of it (launcher, supervisor, init, kernel) is the
    # ssh user's.
    uid = pwd.getpwnam(ssh_user).pw_uid
    processes = kernel_processes(manager.kernel_id)
    assert len(processes) >= 4
    assert {host_uid(pid) for pid in processes} == {uid}
    interrupted = interrupt_a_sleep(manager, client)
    assert interrupted["ename"] == "KeyboardInterrupt"
    client.stop_channels()
    launcher = manager.provisioner.pid
    manager.shutdown_kernel()
    assert wait_for(lambda: launcher not in host.processes(), timeout=10)
