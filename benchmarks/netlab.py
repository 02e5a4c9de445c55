"""Build and tear down a star of N namespaces around a bridge: the lab API against `ip`.

    python benchmarks/netlab.py [--sizes 100 1000] [--samples 20] [--repeats 3]

For each N, in one run: the API (``Lab.add`` + ``Lab.bridge`` with addresses, then
``Lab.close``), and the same topology with one ``ip`` command per step, as Mininet-style
tools do. After each build, sampled pairs of hosts must reach each other (ICMP, in the
namespaces built here only); after each teardown nothing may be left. Prints times, the
ratio, and the cost per namespace at each N.
Goals: >= 5x faster than the ip loop; per-namespace cost at N=1000 within 1.3x of
N=100; teardown leaves nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

from nskernel import probe
from nskernel.netlab import netns
from nskernel.netlab.net import Lab

PREFIX = f"bn{os.getpid() % 1000}"


def host(i: int) -> str:
    return f"{PREFIX}h{i}"


def address(i: int) -> str:
    return f"10.50.{i // 250}.{i % 250 + 1}"


def build_api(lab: Lab, n: int) -> None:
    lab.add(f"{PREFIX}sw", *(host(i) for i in range(n)))
    lab.bridge("br0", [f"{host(i)}:{address(i)}/16" for i in range(n)], ns=f"{PREFIX}sw")


def build_ip(n: int) -> None:
    switch = f"{PREFIX}sw"
    commands = [f"ip netns add {switch}", f"ip -n {switch} link add br0 type bridge",
                f"ip -n {switch} link set br0 up"]
    for i in range(n):
        commands += [f"ip netns add {host(i)}",
                     f"ip -n {switch} link add p{i} type veth peer name eth0 netns {host(i)}",
                     f"ip -n {switch} link set p{i} master br0",
                     f"ip -n {switch} link set p{i} up",
                     f"ip -n {host(i)} addr add {address(i)}/16 dev eth0",
                     f"ip -n {host(i)} link set eth0 up",
                     f"ip -n {host(i)} link set lo up"]
    for command in commands:
        subprocess.run(command.split(), check=True)


def teardown_ip(n: int) -> None:
    for name in [f"{PREFIX}sw", *(host(i) for i in range(n))]:
        if os.path.exists(os.path.join(netns.NETNS_DIR, name)):
            subprocess.run(["ip", "netns", "del", name], check=True)


def check_reachability(lab: Lab, n: int, samples: int) -> None:
    pairs = [(random.randrange(n), random.randrange(n)) for _ in range(samples)]
    for a, b in pairs:
        if a != b and not probe.ping(lab, host(a), address(b), count=3, timeout=2).ok:
            sys.exit(f"{host(a)} cannot reach {address(b)}")


def leftovers() -> list[str]:
    return [name for name in netns.named_namespaces() if name.startswith(PREFIX)]


def settle(previous: int) -> None:
    """Let the kernel finish destroying the namespaces of the previous phase.

    It does that asynchronously, after `ip netns del` or Lab.close() have returned, and a
    build measured meanwhile competes with it: seen here, 12 ms per new namespace instead of
    1 ms right after a thousand were removed. Both sides get the same quiet start.
    """
    time.sleep(0.5 + previous / 250)


def measure(n: int, samples: int, previous: int, repeats: int) -> dict[str, float]:
    """The API's build and teardown ``repeats`` times (their median: at N=100 one build
    takes a tenth of a second, which one noisy moment doubles), then the ip loop once."""
    lab = Lab()
    try:
        api_runs = []
        for run in range(repeats):
            settle(previous if run == 0 else n)
            begin = time.perf_counter()
            build_api(lab, n)
            api_build = time.perf_counter() - begin
            check_reachability(lab, n, samples)
            begin = time.perf_counter()
            lab.close()
            api_runs.append((api_build + time.perf_counter() - begin, api_build))
        api_total, api_build = statistics.median(api_runs)

        settle(n)
        begin = time.perf_counter()
        try:
            build_ip(n)
            ip_build = time.perf_counter() - begin
            check_reachability(lab, n, samples)
        finally:
            begin = time.perf_counter()
            teardown_ip(n)
            ip_teardown = time.perf_counter() - begin
    finally:
        lab.shutdown()
    if leftovers():
        sys.exit(f"teardown left {leftovers()[:5]}...")
    return {"api": api_total, "ip": ip_build + ip_teardown,
            "api build": api_build, "ip build": ip_build}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--samples", type=int, default=20, help="host pairs pinged per build")
    parser.add_argument("--repeats", type=int, default=3,
                        help="API builds per size (their median counts); the ip loop runs once")
    args = parser.parse_args()
    results, previous = {}, 0
    for n in args.sizes:
        results[n] = measure(n, args.samples, previous, args.repeats)
        previous = n
    print(f"{'N':>6} {'API build+teardown':>20} {'ip loop':>10} {'ratio':>7} "
          f"{'API per ns':>11} {'ip per ns':>10}")
    for n, r in results.items():
        print(f"{n:>6} {r['api']:>18.2f} s {r['ip']:>8.2f} s {r['ip'] / r['api']:>6.1f}x "
              f"{r['api'] / n * 1000:>8.2f} ms {r['ip'] / n * 1000:>7.2f} ms")
    if len(results) > 1:
        small, large = min(results), max(results)
        growth = (results[large]["api"] / large) / (results[small]["api"] / small)
        print(f"API cost per namespace at N={large} is {growth:.2f}x that at N={small} "
              "(goal <= 1.3x)")
    print(f"teardown left nothing; {args.samples} sampled pings passed after each build")


if __name__ == "__main__":
    main()
