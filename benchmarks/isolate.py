"""Per-cell cost of ``%%isolate`` against the tools a user would reach for instead.

    python benchmarks/isolate.py [--cells 300] [--commands 40]

In one run, inside a real kernel (stock python3 with ``%load_ext nskernel``, and Isolated
Python), the median cost of a trivial cell under ``%%isolate --pid --net --mount --uts --ipc``
and of the same body run without isolation; then, from this process, the median of
``unshare --pid --fork --mount-proc --net --uts --ipc python3 -c ...`` and of
``bwrap --unshare-all ... python3 -c ...`` (Debian's bubblewrap: apt-get install bubblewrap).
Also the locks: ``--all``, ``--all --memory 64M --pids 32 --readonly --seccomp`` and
``--jail``, against plain ``--all`` (locks to add little per cell).
Goals: <= 10 ms median per isolated cell, >= 5x faster than both tools.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from kernels import execute, start, stop  # noqa: E402

FLAGS = "--pid --net --mount --uts --ipc"
LOCKED = ("--all", "--all --memory 64M --pids 32 --readonly --seccomp", "--jail")
BODY = "x = 1"
IN_KERNEL = f"""
import statistics, time
def _cost(run, n):
    samples = []
    for _ in range(n):
        begin = time.perf_counter(); run(); samples.append(time.perf_counter() - begin)
    return statistics.median(samples)
_ip = get_ipython()
_isolated = [_cost(lambda: _ip.run_cell_magic('isolate', flags, {BODY!r}), {{n}})
             for flags in {(FLAGS, *LOCKED)!r}]
_plain = _cost(lambda: exec({BODY!r}, _ip.user_ns), {{n}})
(_isolated, _plain)
"""


def in_kernel(name: str, cells: int) -> tuple[float, float]:
    manager, client = start(name)
    try:
        if name == "python3":
            execute(client, "%load_ext nskernel")
        execute(client, IN_KERNEL.format(n=20))  # warm up
        return execute(client, IN_KERNEL.format(n=cells), timeout=600).value
    finally:
        stop(manager, client)


def command_cost(argv: list[str], runs: int) -> float:
    subprocess.run(argv, check=True)
    samples = []
    for _ in range(runs):
        begin = time.perf_counter()
        subprocess.run(argv, check=True)
        samples.append(time.perf_counter() - begin)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--commands", type=int, default=40)
    args = parser.parse_args()
    python = shutil.which("python3") or sys.executable
    code = [python, "-c", BODY]
    rows = []
    locks = []
    for name in ("python3", "isolated-python"):
        isolated, plain = in_kernel(name, args.cells)
        rows += [(f"%%isolate {FLAGS} ({name} kernel)", isolated[0]),
                 (f"same body, no isolation ({name} kernel)", plain)]
        locks += [(f"%%isolate {flags} ({name} kernel)", cost, cost - isolated[1])
                  for flags, cost in zip(LOCKED, isolated[1:], strict=True)]
    ours = rows[0][1]
    unshare = command_cost(["unshare", "--pid", "--fork", "--mount-proc", "--net", "--uts",
                            "--ipc", *code], args.commands)
    rows.append(("unshare --pid --fork --mount-proc --net --uts --ipc python3 -c", unshare))
    if shutil.which("bwrap"):
        bwrap = command_cost(["bwrap", "--unshare-all", "--dev-bind", "/", "/", "--proc",
                              "/proc", *code], args.commands)
        rows.append(("bwrap --unshare-all --dev-bind / / --proc /proc python3 -c", bwrap))
    else:
        print("bwrap not found: apt-get install bubblewrap to compare with it")
    width = max(len(label) for label, _ in rows)
    for label, seconds in rows:
        print(f"{label:<{width}}  {seconds * 1000:8.2f} ms  {seconds / ours:6.2f}x of %%isolate")
    print(f"(medians: {args.cells} cells in each kernel, {args.commands} runs of each command;"
          " goals: %%isolate <= 10 ms, tools >= 5x)")
    width = max(len(label) for label, _, _ in locks)
    for label, seconds, extra in locks:
        print(f"{label:<{width}}  {seconds * 1000:8.2f} ms  {extra * 1000:+6.2f} ms over --all")


if __name__ == "__main__":
    main()
