"""A judge's cost per submission: nskernel against the tools, for code with real imports.

    python benchmarks/judge.py [--submissions 20] [--batch 200] [--workers 2]

A contest judge or an autograder runs submissions that import numpy and pandas. Measured
from one judge process that has them loaded already (as a judge would):

- ``nskernel.isolate(...)`` with the locks a judge wants (``readonly``, ``seccomp``,
  ``memory``, ``pids``): a fork of the warm judge, nothing imported again;
- ``bwrap --unshare-all --ro-bind / / ... python -c`` (Debian's bubblewrap);
- ``unshare ... prlimit ... python -c`` (util-linux);

each in interleaved rounds, so that a noisy neighbour hits all alike: the median and p95 per
submission, then the throughput of a batch on ``--workers`` workers (submissions per
second, each way). Goal: >= 10x the tools, per submission and per batch. Then what each lock
adds, in this (100 MB) process, to bare ``--all``: pid, net, mount, uts, ipc and user, the
user namespace that any judge needs (its root has no capability over the host) and
that ``pids`` brings anyway (the kernel counts processes per user namespace). Goal: all four
locks together <= +5 ms. Needs numpy and pandas
(``pip install numpy pandas``) and bubblewrap (``apt-get install bubblewrap``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy  # noqa: F401 - the judge has them loaded, as a real one would
import pandas  # noqa: F401

import nskernel

#: A submission: real imports, a small DataFrame, one number printed.
SUBMISSION = ("import numpy as np, pandas as pd\n"
              "frame = pd.DataFrame({'x': np.arange(1000), 'y': np.arange(1000) % 7})\n"
              "print(int(frame.groupby('y').x.sum().sum()))\n")
EXPECTED = str(sum(range(1000)))
#: The locks a judge asks for.
LOCKS = {"readonly": True, "seccomp": True, "memory": "512M", "pids": 64}
PYTHON = os.path.realpath(sys.executable)


def run_here() -> str:
    """The submission, in the isolated child: its output, as the judge reads it."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(SUBMISSION, "<submission>", "exec"), {"__name__": "__main__"})
    return out.getvalue().strip()


def with_nskernel(**locks: object) -> str:
    return nskernel.isolate(run_here, **locks)


def tool_argv(tool: str) -> list[str]:
    """The command line a judge would run for the submission with ``tool``."""
    env_path = [f"PYTHONPATH={os.pathsep.join(p for p in sys.path if p)}"]
    python = ["env", "-i", *env_path, PYTHON, "-c", SUBMISSION]
    if tool == "bwrap":
        return ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/",
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", *python]
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--pid", "--fork", "--net", "--mount", "--uts", "--ipc",
            "--mount-proc", "prlimit", "--as=1073741824", "--nproc=64", *python]


def with_tool(tool: str) -> str:
    done = subprocess.run(tool_argv(tool), capture_output=True, text=True, check=True)
    return done.stdout.strip()


def timed(call: Callable[[], str]) -> float:
    begin = time.perf_counter()
    output = call()
    elapsed = time.perf_counter() - begin
    if output != EXPECTED:
        sys.exit(f"a submission printed {output!r}, not {EXPECTED}")
    return elapsed


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def one_worker(count: int) -> None:
    """A judge's worker process: ``count`` locked submissions, one after another."""
    for _ in range(count):
        with_nskernel(**LOCKS)


def batch_nskernel(size: int, workers: int) -> float:
    """Submissions per second: ``workers`` forked judge processes share the batch."""
    context = multiprocessing.get_context("fork")
    shares = [size // workers + (i < size % workers) for i in range(workers)]
    begin = time.perf_counter()
    processes = [context.Process(target=one_worker, args=(share,)) for share in shares]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            sys.exit(f"a judge worker failed ({process.exitcode})")
    return size / (time.perf_counter() - begin)


def batch_tool(tool: str, size: int, workers: int) -> float:
    begin = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: with_tool(tool), range(size)))
    return size / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=20, help="per way, interleaved")
    parser.add_argument("--batch", type=int, default=200, help="submissions per batch")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if shutil.which("bwrap") is None:
        sys.exit("needs bubblewrap: apt-get install bubblewrap")
    ways: dict[str, Callable[[], str]] = {
        "nskernel": lambda: with_nskernel(**LOCKS),
        "bwrap": lambda: with_tool("bwrap"),
        "unshare+prlimit": lambda: with_tool("unshare"),
    }
    for call in ways.values():
        timed(call)  # one each first: page cache, the filter compiled
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.submissions):
        for name, call in ways.items():
            times[name].append(timed(call))
    ours = statistics.median(times["nskernel"])
    print(f"{args.submissions} submissions each (numpy + pandas), locks {LOCKS}")
    print(f"{'per submission':<16} {'median':>10} {'p95':>10} {'nskernel is':>12}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<16} {median * 1000:>7.1f} ms {p95(values) * 1000:>7.1f} ms "
              f"{median / ours:>10.1f}x")

    rates = {"nskernel": batch_nskernel(args.batch, args.workers),
             "bwrap": batch_tool("bwrap", args.batch, args.workers),
             "unshare+prlimit": batch_tool("unshare", args.batch, args.workers)}
    print(f"\na batch of {args.batch} on {args.workers} workers")
    for name, rate in rates.items():
        print(f"{name:<16} {rate:>7.1f} submissions/s {rates['nskernel'] / rate:>10.1f}x")
    print("goal: nskernel >= 10x both tools, per submission and per batch")

    bare = {"pid": True, "net": True, "mount": True, "uts": True, "ipc": True, "user": True}
    variants = {"bare": bare, **{name: {**bare, name: value} for name, value in LOCKS.items()},
                "all locks": {**bare, **LOCKS},
                # A grader's view: the system and the working directory alone.
                "visible_only": {**bare, "visible_only": True},
                "all + visible_only": {**bare, **LOCKS, "visible_only": True}}
    costs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.submissions):
        for name, settings in variants.items():
            costs[name].append(timed(lambda settings=settings: with_nskernel(**settings)))
    floor = statistics.median(costs["bare"])
    print(f"\nwhat each lock adds to bare --all ({', '.join(bare)}; median of "
          f"{args.submissions})")
    for name, values in costs.items():
        median = statistics.median(values)
        print(f"{name:<16} {median * 1000:>7.1f} ms {(median - floor) * 1000:>+8.1f} ms")
    print("goal: all locks together <= +5 ms")


if __name__ == "__main__":
    main()
