"""Kernels on other hosts: start-to-ready of a remote Isolated Python kernel against a remote
stock ipykernel, both started by gateway-provisioners' DistributedProvisioner over ssh; then
10 kernels at once over 2 hosts.

    python benchmarks/hosts.py [--starts 10] [--kernels 10] [--poll-interval SECONDS]

As root (the hosts are tests/hosts.py's: network namespaces with an sshd each, on a bridge).
The stock kernel is gateway-provisioners' own ssh kernelspec (``jupyter-ssh-spec install``:
its launch_ipykernel.py), the isolated one ``nskernel install --remote``'s; starts alternate,
one at a time, each timed from start_kernel until the first kernel_info reply (as a Jupyter
server counts a kernel ready). Reports the median and p95 of each, and the ratio of the
medians (goal: <= 1.15). The provisioner looks for the launcher's answer every
``GP_POLL_INTERVAL`` (0.5 s by default), which rounds every start up to that step for both
kinds: ``--poll-interval`` sets it lower to see what lies below. Then ``--kernels`` Isolated
Python kernels started at once: each one's start-to-ready, the whole batch's, and how they
spread over the hosts. Nothing is left after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from hosts import Cluster, cluster  # noqa: E402

STEP_TIMEOUT = 60
KINDS = {"stock-remote": "stock ipykernel (launch_ipykernel.py)",
         "isolated-remote": "Isolated Python (nskernel.kernel.remote)"}


def install_kernelspecs(the_cluster: Cluster, prefix: Path) -> Path:
    addresses = [host.address for host in the_cluster.hosts]
    subprocess.run([sys.executable, "-m", "nskernel", "install", "--prefix", str(prefix),
                    "--name", "isolated-remote", "--remote", ",".join(addresses)],
                   check=True, capture_output=True)
    hosts = [word for address in addresses for word in ("--remote-hosts", address)]
    subprocess.run([str(Path(sys.executable).with_name("jupyter-ssh-spec")), "install",
                    "--prefix", str(prefix), "--kernel-name", "stock-remote", *hosts],
                   check=True, capture_output=True)
    kernels = prefix / "share" / "jupyter" / "kernels"
    stock = kernels / "stock-remote" / "kernel.json"
    spec = json.loads(stock.read_text())
    spec["argv"][0] = sys.executable  # its "python": the same interpreter as ours
    stock.write_text(json.dumps(spec))
    return kernels


async def start_one(name: str, kernels: Path):
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from traitlets.config import Config

    manager = AsyncKernelManager(
        kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]),
        config=Config({"DistributedProvisioner": {"unauthorized_users": set()}}))
    began = time.perf_counter()
    await asyncio.wait_for(manager.start_kernel(), STEP_TIMEOUT)
    client = manager.client()
    client.start_channels()
    try:
        while True:
            try:
                await client.kernel_info(reply=True, timeout=1)
                break
            except TimeoutError:
                if time.perf_counter() - began > STEP_TIMEOUT:
                    raise RuntimeError(f"a {name} kernel did not answer") from None
        ready = time.perf_counter() - began
        reply = await client.execute("sum(range(1000))", reply=True, timeout=STEP_TIMEOUT)
        assert reply["content"]["status"] == "ok", reply
    finally:
        client.stop_channels()
    return manager, ready


async def shut_down(manager) -> None:
    try:
        await asyncio.wait_for(manager.shutdown_kernel(), STEP_TIMEOUT)
    except TimeoutError:
        await manager.shutdown_kernel(now=True)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def measure(the_cluster: Cluster, kernels: Path, starts: int, count: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in KINDS}
    for name in KINDS:  # one of each first, not counted: the page cache, the ssh host keys
        manager, _ready = await start_one(name, kernels)
        await shut_down(manager)
    for number in range(starts):
        # Reversed every other round: round-robin then puts each kind on every host.
        for name in list(KINDS)[::-1 if number % 2 else 1]:
            manager, ready = await start_one(name, kernels)
            times[name].append(ready)
            await shut_down(manager)
    for name, label in KINDS.items():
        print(f"{label}: start-to-ready median {statistics.median(times[name]):.3f} s, "
              f"p95 {p95(times[name]):.3f} s ({starts} starts)")
    ratio = statistics.median(times["isolated-remote"]) / statistics.median(times["stock-remote"])
    print(f"ratio of medians, isolated / stock: {ratio:.2f} (goal <= 1.15)")

    began = time.perf_counter()
    started = await asyncio.gather(*(start_one("isolated-remote", kernels)
                                     for _ in range(count)))
    batch = time.perf_counter() - began
    spread = Counter(manager.provisioner.assigned_ip for manager, _ready in started)
    readies = [ready for _manager, ready in started]
    await asyncio.gather(*(shut_down(manager) for manager, _ready in started))
    print(f"{count} Isolated Python kernels at once over {len(the_cluster.hosts)} hosts: "
          f"all ready in {batch:.2f} s; each: median {statistics.median(readies):.2f} s, "
          f"p95 {p95(readies):.2f} s; per host: "
          + ", ".join(f"{address} {n}" for address, n in sorted(spread.items())))


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "(gone)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10, help="starts of each kind")
    parser.add_argument("--kernels", type=int, default=10, help="kernels started at once")
    parser.add_argument("--poll-interval", type=float,
                        help="GP_POLL_INTERVAL for the provisioner (default: its own, 0.5 s)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.exit(2, "benchmarks/hosts.py: needs root (network namespaces, sshd)\n")
    if args.poll_interval is not None:
        os.environ["GP_POLL_INTERVAL"] = str(args.poll_interval)  # read as it is imported
    from gateway_provisioners import distributed, response_manager

    scratch = Path(tempfile.mkdtemp(prefix="nskernel-hosts-bench-"))
    try:
        with cluster(f"b{os.getpid() % 10000:04d}", "NSKERNEL_BENCH=hosts") as the_cluster:
            response_manager.response_ip = the_cluster.bridge_address
            distributed.kernel_log_dir = str(the_cluster.logs)
            kernels = install_kernelspecs(the_cluster, scratch)
            try:
                asyncio.run(measure(the_cluster, kernels, args.starts, args.kernels))
            finally:
                if response_manager.ResponseManager.initialized():
                    response_manager.ResponseManager.instance().stop_response_manager()
                    response_manager.ResponseManager.clear_instance()
            deadline = time.monotonic() + 10
            while True:  # a launcher exits a moment after its kernel
                left = [host.processes() - {host.sshd.pid} for host in the_cluster.hosts]
                if not any(left) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            print("left on the hosts:", "nothing" if not any(left) else [
                {pid: _command(pid) for pid in pids} for pids in left])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
