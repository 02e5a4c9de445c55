"""Isolated Python started through the kernel provisioner (``nskernel-provisioner``): by
jupyter_client as any server does, with the kernelspec's settings capped by the server's
configuration; interrupt, restart and shutdown through the provisioner; by nbclient; and
`nskernel install --provisioner` / `jupyter kernelspec provisioners`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from conftest import RUN_PREFIX, _descends_from, our_processes, wait_for, write_kernel
from kernels import execute, start, stop
from nbclient import NotebookClient
from traitlets.config import Config

from nskernel.isolation import Isolation
from nskernel.limits import Limits

KERNEL = "isolated-provisioned"
LIMITS = Limits(memory=768 << 20, pids=128)
RLIMITS = ("import resource\n"
           "(resource.getrlimit(resource.RLIMIT_DATA)[0], "
           "resource.getrlimit(resource.RLIMIT_NPROC)[0])")


@pytest.fixture(scope="module")
def provisioned_kernel() -> str:
    return write_kernel(KERNEL, Isolation.kernel_default(), LIMITS, provisioner=True)


def kernel_tree(manager) -> set[int]:
    """The kernel's processes on the host (the launcher's supervisor and what it started)."""
    root = manager.provisioner.process.pid
    return {pid for pid in our_processes() if _descends_from(pid, [root])}


def test_a_kernelspec_with_the_provisioner_starts_isolated_python(provisioned_kernel):
    manager, client = start(provisioned_kernel)
    try:
        assert type(manager.provisioner).__name__ == "NskernelProvisioner"
        assert execute(client, "import os\nos.getpid()").value == 2  # its own pid namespace
        assert execute(client, "import socket\nsocket.gethostname()").value == "isolated"
        assert execute(client, RLIMITS).value == (768 << 20, 128)
    finally:
        stop(manager, client)


def test_the_servers_configuration_caps_the_kernelspec(provisioned_kernel):
    config = Config()
    config.NskernelProvisioner.max_memory = "512M"  # below the kernelspec's 768M
    config.NskernelProvisioner.max_nofile = 300  # the kernelspec asks for none
    manager, client = start(provisioned_kernel, config=config)
    try:
        assert execute(client, RLIMITS).value == (512 << 20, 128)
        nofile = execute(client, "import resource\n"
                                 "resource.getrlimit(resource.RLIMIT_NOFILE)[0]").value
        assert nofile <= 300 + 64  # its own open files and 300 more, at most
    finally:
        stop(manager, client)


def test_interrupt_restart_and_shutdown_go_through_the_provisioner(provisioned_kernel):
    manager, client = start(provisioned_kernel)
    try:
        done = execute(client, "import time\nprint('asleep', flush=True)\ntime.sleep(60)",
                       interrupt=(manager, "asleep"))
        assert done.error and done.error[0] == "KeyboardInterrupt", done
        execute(client, "marker = 1")
        before = kernel_tree(manager)
        assert before
        manager.restart_kernel(now=False)
        assert wait_for(lambda: not before & our_processes().keys(), timeout=30), \
            "the first kernel's processes are left"
        client.wait_for_ready(timeout=60)
        assert type(manager.provisioner).__name__ == "NskernelProvisioner"
        assert execute(client, "'marker' in dir()").value is False  # a new kernel
        assert execute(client, RLIMITS).value == (768 << 20, 128)
        after = kernel_tree(manager)
    finally:
        stop(manager, client)
    assert wait_for(lambda: not after & our_processes().keys(), timeout=30)


def test_nbclient_runs_a_notebook_through_the_provisioner(provisioned_kernel, tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os, socket\nprint(os.getpid(), socket.gethostname())")
    ])
    NotebookClient(notebook, kernel_name=provisioned_kernel, timeout=60,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert notebook.cells[0].outputs[0]["text"] == "2 isolated\n"


def test_install_writes_a_provisioned_kernelspec_that_jupyter_lists(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "nskernel", "install", "--prefix", str(tmp_path), "--name",
         "prov", "--provisioner", "--pid", "--net", "--memory", "2G", "--readonly"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    spec = json.loads(Path(tmp_path, "share/jupyter/kernels/prov/kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "nskernel-provisioner",
        "config": {"namespaces": ["pid", "net", "mount"], "hostname": None, "readonly": True,
                   "bind": [], "memory": "2G"}}
    listed = subprocess.run([sys.executable, "-m", "jupyter_client.kernelspecapp",
                             "provisioners"], capture_output=True, text=True, timeout=60)
    assert "nskernel-provisioner" in listed.stdout, listed.stdout + listed.stderr


def test_a_warm_pool_hands_each_kernel_out_once_with_the_notebooks_cwd_and_env(
        provisioned_kernel, tmp_path, monkeypatch):
    from nskernel.kernel.provisioner import NskernelProvisioner

    monkeypatch.chdir(tmp_path)  # the server's root: pooled kernels start there
    tmp_path.chmod(0o755)  # a root kernel is nobody, who must enter it to reach a notebook
    config = Config()
    config.NskernelProvisioner.pool_size = 2
    started = []
    try:
        started.append(start(provisioned_kernel, config=config))  # cold: the pool fills after
        assert started[0][0].provisioner.pooled is None
        pool = next(iter(NskernelProvisioner.pools.values()))
        assert wait_for(lambda: len(pool.idle) == 2, timeout=10)
        waiting = {kernel.process.pid for kernel in pool.idle}
        for number in (1, 2):
            notebook_dir = tmp_path / f"notebook{number}"
            notebook_dir.mkdir()
            manager, client = start(provisioned_kernel, config=config, cwd=str(notebook_dir),
                                    env={**os.environ, "NOTEBOOK_MARK": f"n{number}"})
            started.append((manager, client))
            assert manager.provisioner.pooled is not None
            assert manager.provisioner.pid in waiting  # one of those started ahead
            waiting.discard(manager.provisioner.pid)
            assert execute(client, "import os\n(os.getcwd(), os.environ['NOTEBOOK_MARK'], "
                                   "os.getpid())").value == (str(notebook_dir), f"n{number}", 2)
            assert execute(client, RLIMITS).value == (768 << 20, 128)
        # the pool refilled in the background, with launchers it never handed out before
        assert wait_for(lambda: len(pool.idle) == 2, timeout=10)
        assert not {kernel.process.pid for kernel in pool.idle} & \
            {manager.provisioner.pid for manager, _ in started}
        # a notebook outside the root (which a pooled kernel may not see) starts afresh
        elsewhere = Path(tempfile.mkdtemp(dir="/var/tmp", prefix=f"{RUN_PREFIX}-nb-"))
        try:
            manager, client = start(provisioned_kernel, config=config, cwd=str(elsewhere))
            started.append((manager, client))
            assert manager.provisioner.pooled is None
            assert execute(client, "import os\nos.getcwd()").value == str(elsewhere)
        finally:
            elsewhere.rmdir()
    finally:
        for manager, client in started:
            stop(manager, client)
        NskernelProvisioner.empty_pools()
        NskernelProvisioner.pools.clear()
