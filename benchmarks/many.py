"""Many kernels on one machine: 20 Isolated Python kernels started at once through the
provisioner, against 20 stock python3 kernels in the same run.

    python benchmarks/many.py [--kernels 20] [--rounds 3]

Each round starts N kernels of one kind at once (as a class opening its notebooks), waits
until each answers kernel_info (when a Jupyter server counts it ready), runs a cell in
each, reads the memory of every kernel's processes while all N are alive, and shuts them
all down; the kinds alternate, round after round. Reports
start-to-ready per kernel (median and p95 over all rounds) and memory per kernel (RSS, and
PSS, which counts pages shared between processes once), then the ratios.
Goal: the median start no worse than 1.15x stock; nothing left after.

Then a warm pool (``NskernelProvisioner.pool_size``): kernels started one at a time, each
from a pool that has refilled and warmed up meanwhile, against stock kernels started one at
a time in the same run (goal: start-to-ready <= 0.2x stock), and the memory of the idle pool.
Both kernelspecs are written to a temporary JUPYTER_PATH by this script, for this
interpreter; nskernel's bytecode should be compiled (``make test`` does it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ipykernel.kernelspec import write_kernel_spec
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from traitlets.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel import memory_kib  # noqa: E402

from nskernel.isolation import Isolation  # noqa: E402
from nskernel.kernel import kernelspec  # noqa: E402

KINDS = {"python3": "stock python3", "isolated-provisioned": "Isolated Python"}


#: Seconds any one step (a start, a cell, a shutdown) may take before the run gives up on it.
STEP_TIMEOUT = 60

#: Kernels that died or never answered as they started, by kind, each started again (a port
#: that jupyter_client picked was taken by another process before the kernel bound it: a
#: race of jupyter_client's, not of ours).
DIED: dict[str, int] = {}


async def start_one(name: str, specs: KernelSpecManager, config: Config | None = None
                    ) -> tuple[AsyncKernelManager, float]:
    for _ in range(3):
        try:
            return await start_once(name, specs, config)
        except RuntimeError:
            DIED[name] = DIED.get(name, 0) + 1
    raise RuntimeError(f"three {name} kernels in a row died as they started")


async def start_once(name: str, specs: KernelSpecManager, config: Config | None
                     ) -> tuple[AsyncKernelManager, float]:
    manager = AsyncKernelManager(kernel_name=name, kernel_spec_manager=specs,
                                 config=config or Config())
    began = time.perf_counter()
    await asyncio.wait_for(manager.start_kernel(), STEP_TIMEOUT)
    client = manager.client()
    client.start_channels()
    # Ready: the first kernel_info reply, as a Jupyter server counts it (wait_for_ready adds
    # 0.2 s of waiting for IOPub to fall quiet, for every kernel alike).
    while True:
        try:
            await client.kernel_info(reply=True, timeout=1)
            break
        except TimeoutError:
            if time.perf_counter() - began > STEP_TIMEOUT:
                client.stop_channels()
                await manager.shutdown_kernel(now=True)
                raise RuntimeError(f"a {name} kernel did not answer in {STEP_TIMEOUT} s") from None
            if not await manager.is_alive():
                client.stop_channels()
                await manager.shutdown_kernel(now=True)
                raise RuntimeError(f"a {name} kernel died as it started") from None
    ready = time.perf_counter() - began
    reply = await client.execute("sum(range(1000))", reply=True, timeout=STEP_TIMEOUT)
    assert reply["content"]["status"] == "ok", reply
    client.stop_channels()
    return manager, ready


async def shut_down(manager: AsyncKernelManager) -> None:
    """Shut a kernel down as a server would; kill it if that has not ended it in time
    (a benchmark must end, whatever a kernel does)."""
    try:
        await asyncio.wait_for(manager.shutdown_kernel(now=False), STEP_TIMEOUT)
    except TimeoutError:
        print(f"a kernel did not shut down in {STEP_TIMEOUT} s: killed", file=sys.stderr)
        await manager.shutdown_kernel(now=True)


async def one_round(name: str, count: int, specs: KernelSpecManager
                    ) -> tuple[list[float], float, float]:
    """(start times, RSS MB per kernel, PSS MB per kernel) of ``count`` kernels at once."""
    started = await asyncio.gather(*(start_one(name, specs) for _ in range(count)))
    try:
        await asyncio.sleep(0.5)
        sizes = [memory_kib(manager.provisioner.pid) for manager, _ in started]
        rss = sum(size[0] for size in sizes) / 1024 / count
        pss = sum(size[1] for size in sizes) / 1024 / count
    finally:
        await asyncio.gather(*(shut_down(manager) for manager, _ in started))
    return [ready for _, ready in started], rss, pss


def warmed_up(pids: list[int]) -> bool:
    """Whether every one of ``pids`` sleeps and has stopped using CPU (it waits for its
    handout, its imports done)."""
    def cpu(pid: int) -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    before = [cpu(pid) for pid in pids]
    time.sleep(0.3)
    return before == [cpu(pid) for pid in pids]


async def warm_pool(specs: KernelSpecManager, starts: int, size: int
                    ) -> tuple[list[float], list[float], float, float]:
    """(pooled starts, stock starts, idle pool RSS MB, PSS MB), one kernel at a time."""
    from nskernel.kernel.provisioner import NskernelProvisioner

    config = Config()
    config.NskernelProvisioner.pool_size = size
    pooled, stock = [], []
    try:
        first, _ = await start_one("isolated-provisioned", specs, config)  # fills the pool
        await shut_down(first)
        pool = next(iter(NskernelProvisioner.pools.values()))
        rss = pss = 0.0
        for number in range(starts):
            while len(pool.idle) < size or not warmed_up([k.process.pid for k in pool.idle]):
                await asyncio.sleep(0.2)
            if number == 0:
                sizes = [memory_kib(kernel.process.pid) for kernel in pool.idle]
                rss = sum(size[0] for size in sizes) / 1024
                pss = sum(size[1] for size in sizes) / 1024
            manager, ready = await start_one("isolated-provisioned", specs, config)
            assert manager.provisioner.pooled is not None
            pooled.append(ready)
            await shut_down(manager)
            manager, ready = await start_one("python3", specs)
            stock.append(ready)
            await shut_down(manager)
    finally:
        NskernelProvisioner.empty_pools()
    return pooled, stock, rss, pss


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def our_leftovers(before: set[int]) -> list[int]:
    """Processes started since ``before`` that are children of this one and still alive."""
    me = str(os.getpid())
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in before:
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                left.append(int(entry))
    return left


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=20, help="kernels started at once")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per kind, alternating")
    parser.add_argument("--pool", type=int, default=2, help="warm pool size")
    parser.add_argument("--pooled-starts", type=int, default=10)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="nskernel-many-"))
    try:
        kernels = scratch / "kernels"
        kernels.mkdir()
        write_kernel_spec(str(kernels / "python3"), python_arguments=["-Xfrozen_modules=off"])
        kernelspec.write_spec(kernels / "isolated-provisioned", Isolation.kernel_default(),
                              provisioner=True)
        specs = KernelSpecManager(kernel_dirs=[str(kernels)])
        before = {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}
        starts: dict[str, list[float]] = {name: [] for name in KINDS}
        memory: dict[str, list[tuple[float, float]]] = {name: [] for name in KINDS}
        for _ in range(args.rounds):
            for name in KINDS:
                ready, rss, pss = await one_round(name, args.kernels, specs)
                starts[name] += ready
                memory[name].append((rss, pss))
        pooled, alone, pool_rss, pool_pss = await warm_pool(specs, args.pooled_starts,
                                                            args.pool)
        await asyncio.sleep(1)
        left = our_leftovers(before)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stock, ours = "python3", "isolated-provisioned"
    figures = {name: {"start median": statistics.median(starts[name]) * 1000,
                      "start p95": p95(starts[name]) * 1000,
                      "rss": statistics.median(m[0] for m in memory[name]),
                      "pss": statistics.median(m[1] for m in memory[name])} for name in KINDS}
    print(f"{args.kernels} kernels at once, {args.rounds} rounds of each kind")
    print(f"{'per kernel':<14} {'stock':>10} {'isolated':>10} {'ratio':>7}  goal")
    for key, unit in (("start median", "ms"), ("start p95", "ms"), ("rss", "MB"),
                      ("pss", "MB")):
        a, b = figures[stock][key], figures[ours][key]
        goal = "<= 1.15x" if key == "start median" else ""
        print(f"{key:<14} {a:>7.1f} {unit} {b:>7.1f} {unit} {b / a:>6.2f}x  {goal}")
    print(f"\nwarm pool of {args.pool}: {args.pooled_starts} starts one at a time, each "
          "against a stock start")
    a, b = statistics.median(alone) * 1000, statistics.median(pooled) * 1000
    print(f"{'start median':<14} {a:>7.1f} ms {b:>7.1f} ms {b / a:>6.2f}x  <= 0.2x")
    print(f"idle pool: RSS {pool_rss:.1f} MB, PSS {pool_pss:.1f} MB "
          f"({pool_pss / args.pool:.1f} MB PSS per waiting kernel)")
    if DIED:
        print(f"kernels that died as they started, and were started again: {DIED}")
    print(f"left after: {len(left)} processes" + (f" {left}" if left else ""))


if __name__ == "__main__":
    asyncio.run(main())
