"""Isolated Python against the stock python3 kernel, measured in one run.

    python benchmarks/kernel.py [--starts 5] [--round-trips 300]

Reports, for each kernel, start-to-ready, the execute round trip (median), shutdown time,
interrupt latency and the memory of all the kernel's processes (RSS summed, and PSS, which
counts pages shared between processes once), then the ratios.
Goals: start <= 1.10x, round trip <= 1.05x, shutdown <= 1.5x, extra memory <= 15 MB.
Needs the isolated-python kernelspec installed (``nskernel install``), and nskernel's bytecode
compiled (``make test`` does it; or ``python -m compileall nskernel``): an editable install
has none, and compiling the sources at every start would be measured as start-up time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from jupyter_client import KernelManager

KERNELS = ("python3", "isolated-python")


def process_tree(pid: int) -> list[int]:
    tree = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            for child in handle.read().split():
                tree += process_tree(int(child))
    return tree


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over ``pid`` and its descendants."""
    rss = pss = 0
    for member in process_tree(pid):
        with open(f"/proc/{member}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


def wait_reply(client, msg_id: str) -> None:
    while True:
        reply = client.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            return


def start(name: str) -> tuple[KernelManager, object, float]:
    manager = KernelManager(kernel_name=name)
    started = time.perf_counter()
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return manager, client, time.perf_counter() - started


def round_trip(client) -> float:
    begin = time.perf_counter()
    wait_reply(client, client.execute("pass", store_history=False))
    return time.perf_counter() - begin


def measure_pair(round_trips: int) -> dict[str, dict[str, float]]:
    """One kernel of each kind, measured side by side: their round trips alternate, so the
    drift of a shared, noisy machine falls on both alike."""
    kernels = {name: start(name) for name in KERNELS}
    results: dict[str, dict[str, float]] = {name: {"start": kernels[name][2]}
                                            for name in KERNELS}
    samples: dict[str, list[float]] = {name: [] for name in KERNELS}
    for _ in range(20):  # warm up
        for name in KERNELS:
            round_trip(kernels[name][1])
    for _ in range(round_trips):
        for name in KERNELS:
            samples[name].append(round_trip(kernels[name][1]))
    for name, (manager, client, _ready) in kernels.items():
        result = results[name]
        result["round trip"] = statistics.median(samples[name])
        msg_id = client.execute("import time; time.sleep(100)")
        time.sleep(0.3)
        begin = time.perf_counter()
        manager.interrupt_kernel()
        wait_reply(client, msg_id)
        result["interrupt"] = time.perf_counter() - begin
        client.stop_channels()
        begin = time.perf_counter()
        manager.shutdown_kernel(now=False)
        result["shutdown"] = time.perf_counter() - begin
    for name in KERNELS:  # alone: two live kernels would share (and halve) their PSS
        manager, client, _ready = start(name)
        time.sleep(0.5)
        rss, pss = memory_kib(manager.provisioner.pid)
        results[name]["rss"], results[name]["pss"] = rss / 1024, pss / 1024
        client.stop_channels()
        manager.shutdown_kernel(now=False)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="kernels started per kind")
    parser.add_argument("--round-trips", type=int, default=300)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in KERNELS}
    for _ in range(args.starts):
        for name, result in measure_pair(args.round_trips).items():
            runs[name].append(result)
    medians = {name: {key: statistics.median(run[key] for run in runs[name])
                      for key in runs[name][0]} for name in KERNELS}
    stock, ours = medians["python3"], medians["isolated-python"]
    print(f"{'metric':<12} {'python3':>12} {'isolated':>12} {'ratio':>7}  goal")
    units = {"start": ("ms", 1000), "round trip": ("ms", 1000), "shutdown": ("ms", 1000),
             "interrupt": ("ms", 1000), "rss": ("MB", 1), "pss": ("MB", 1)}
    goals = {"start": "<= 1.10x", "round trip": "<= 1.05x", "shutdown": "<= 1.5x",
             "interrupt": "< 1 s", "rss": "extra <= 15 MB", "pss": "extra <= 15 MB"}
    for key, (unit, scale) in units.items():
        extra = f" (+{ours[key] - stock[key]:.1f} MB)" if unit == "MB" else ""
        print(f"{key:<12} {stock[key] * scale:>9.2f} {unit} {ours[key] * scale:>9.2f} {unit} "
              f"{ours[key] / stock[key]:>6.2f}x  {goals[key]}{extra}")
    print(f"(medians of {args.starts} kernels each; round trip: median of "
          f"{args.round_trips} executes per kernel, alternating between the two kernels)")


if __name__ == "__main__":
    main()
