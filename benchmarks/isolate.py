"""Per-cell cost of ``%%isolate``, with and without locks, against what a user would reach
for instead, measured in one run.

    python benchmarks/isolate.py [--cells 200] [--commands 40]

Three tables:

1. **Inside the kernel** (stock python3 with ``%load_ext nskernel``, and Isolated Python):
   the median cost of a trivial cell under ``%%isolate --pid --net --mount --uts --ipc``,
   under ``--all`` and under the locks (``--all --memory 64M --pids 32 --readonly
   --seccomp``, ``--jail``), beside the same body without isolation. Goal: the locks add
   <= 2 ms to ``--all``.
2. **From the client**, as a user waits (execute_request to idle): a plain cell, the real
   floor of any cell that forks (``os.fork()`` + ``os._exit(0)`` + ``waitpid``), and the
   cells above, each after the same plain cell, not counted (see SETTLE). Goal:
   ``%%isolate``'s overhead over a plain cell <= 1.2x the bare fork's.
3. **The tools** with the real interpreter (``sys.executable`` resolved, never a launcher
   shim): ``unshare ... python -c``, ``unshare ... prlimit ... python -c`` and ``bwrap
   --unshare-all --ro-bind / / --tmpfs /tmp --seccomp FD ... python -c`` (Debian's
   bubblewrap: apt-get install bubblewrap). Run as a user would reach for them instead of
   ``%%isolate``: from a cell (``subprocess.run``), timed from the client, against the
   matching ``%%isolate`` cell. Goal: >= 3x faster. Also from this process, bare.

Variants are measured in interleaved rounds, so that a noisy neighbour hits all alike, with
a pause (not counted) before each, as cells are run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from kernels import execute, start, stop  # noqa: E402

FLAGS = "--pid --net --mount --uts --ipc"
LOCKED = "--all --memory 64M --pids 32 --readonly --seccomp"
VARIANTS = (FLAGS, "--all", LOCKED, "--jail")
BODY = "x = 1"
#: Seconds between two measured cells (not counted): as a person runs them, far apart, so
#: that no cell finds the kernel warm from the one before (its cgroup locks, say).
GAP = 0.02
#: Run, not counted, before each cell timed from the client. The first cell after any fork
#: takes page faults wherever it writes to the kernel's memory (the fork left all of it
#: copy-on-write), a cost of the fork before it: run in a row, the plain cell would pay for
#: the ``%%isolate`` cell before it, and the bare fork cell for nothing (the plain one
#: before it paid). After this cell, each timed cell pays for itself alone.
SETTLE = "y = 1"
BARE_FORK = "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)"
IN_KERNEL = f"""
import statistics, time
_ip = get_ipython()
_runs = [lambda f=f: _ip.run_cell_magic('isolate', f, {BODY!r}) for f in {VARIANTS!r}]
_runs.append(lambda: exec({BODY!r}, _ip.user_ns))
_samples = [[] for _ in _runs]
for _ in range({{n}}):
    for _run, _into in zip(_runs, _samples):
        time.sleep({GAP})  # cells are apart in time: nothing of the last one lingers
        _begin = time.perf_counter(); _run(); _into.append(time.perf_counter() - _begin)
[statistics.median(s) for s in _samples]
"""
CLIENT_CELLS = {"plain cell": BODY, "bare fork cell": BARE_FORK,
                **{f"%%isolate {flags}": f"%%isolate {flags}\n{BODY}" for flags in VARIANTS}}


def kernel_costs(name: str, cells: int, tool_cells: dict[str, str] | None = None
                 ) -> tuple[list[float], dict[str, float]]:
    """(in-kernel medians of VARIANTS and the plain body, client-side medians by label of
    CLIENT_CELLS and ``tool_cells``)."""
    manager, client = start(name)
    try:
        if name == "python3":
            execute(client, "%load_ext nskernel")
        execute(client, IN_KERNEL.format(n=10))  # warm up
        inside = execute(client, IN_KERNEL.format(n=cells), timeout=1200).value
        cells_to_time = {**CLIENT_CELLS, **(tool_cells or {})}
        samples: dict[str, list[float]] = {label: [] for label in cells_to_time}
        for _ in range(max(cells // 4, 20)):
            for label, code in cells_to_time.items():
                execute(client, SETTLE)
                time.sleep(GAP)
                begin = time.perf_counter()
                done = execute(client, code)
                samples[label].append(time.perf_counter() - begin)
                assert done.status == "ok", done
        return inside, {label: statistics.median(s) for label, s in samples.items()}
    finally:
        stop(manager, client)


def command_costs(commands: dict[str, tuple[list[str], dict]], runs: int) -> dict[str, float]:
    """Medians of each command; ``pass_fds`` are rewound first (bwrap reads its seccomp
    program from an fd to its end)."""
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(runs + 1):  # the first round warms up
        for label, (argv, options) in commands.items():
            for fd in options.get("pass_fds", ()):
                os.lseek(fd, 0, os.SEEK_SET)
            begin = time.perf_counter()
            subprocess.run(argv, check=True, **options)
            samples[label].append(time.perf_counter() - begin)
    samples = {label: values[1:] for label, values in samples.items()}
    return {label: statistics.median(s) for label, s in samples.items()}


def tools(python: str, scratch: str) -> dict[str, tuple[list[str], dict]]:
    code = [python, "-c", BODY]
    unshare = ["unshare", "--pid", "--fork", "--mount-proc", "--net", "--uts", "--ipc"]
    found = {f"unshare {' '.join(unshare[1:])} python -c": (unshare + code, {}),
             "unshare ... prlimit --as=1G --nproc=32 python -c":
                 (unshare + ["prlimit", f"--as={1 << 30}", "--nproc=32", *code], {})}
    if shutil.which("bwrap"):
        from nskernel.locks.seccomp import compiled_filter

        filter_path = os.path.join(scratch, "seccomp.bpf")
        Path(filter_path).write_bytes(compiled_filter())
        fd = os.open(filter_path, os.O_RDONLY)
        found["bwrap --unshare-all --ro-bind / / --tmpfs /tmp --seccomp FD python -c"] = (
            ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--proc",
             "/proc", "--dev", "/dev", "--seccomp", str(fd), *code], {"pass_fds": (fd,)})
    else:
        print("bwrap not found: apt-get install bubblewrap to compare with it")
    return found


def as_cell(argv: list[str], options: dict) -> str:
    """A cell that runs ``argv`` as a notebook user would (the seccomp fd opened afresh)."""
    if not options.get("pass_fds"):
        return f"import subprocess\nsubprocess.run({argv!r}, check=True)"
    fd = options["pass_fds"][0]
    path = os.readlink(f"/proc/self/fd/{fd}")
    return (f"import os, subprocess\nfd = os.open({path!r}, os.O_RDONLY)\n"
            f"subprocess.run([a if a != {str(fd)!r} else str(fd) for a in {argv!r}], "
            "check=True, pass_fds=(fd,))\nos.close(fd)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--commands", type=int, default=40)
    args = parser.parse_args()
    python = os.path.realpath(sys.executable)
    with tempfile.TemporaryDirectory() as scratch:
        os.chmod(scratch, 0o755)
        found = tools(python, scratch)
        commands = command_costs(found, args.commands)
        tool_cells = {label: as_cell(argv, options) for label, (argv, options) in found.items()}
        results = {name: kernel_costs(name, args.cells, tool_cells if name == "python3" else None)
                   for name in ("python3", "isolated-python")}

    print("1. inside the kernel (median per cell)")
    for name, (inside, _client) in results.items():
        plain, base = inside[-1], inside[1]
        print(f"  {name} kernel: body alone {plain * 1000:.2f} ms")
        for flags, cost in zip(VARIANTS, inside, strict=False):
            extra = f"  {(cost - base) * 1000:+6.2f} ms over --all" if flags in (
                LOCKED, "--jail") else ""
            print(f"    %%isolate {flags:<50} {cost * 1000:7.2f} ms{extra}")
    print("2. from the client, execute_request to idle (median per cell)")
    for name, (_inside, client) in results.items():
        plain = client["plain cell"]
        fork_overhead = client["bare fork cell"] - plain
        print(f"  {name} kernel:")
        for label, cost in client.items():
            ratio = ("" if label in ("plain cell", "bare fork cell") else
                     f"  overhead {(cost - plain) / fork_overhead:5.2f}x the bare fork's")
            print(f"    {label:<60} {cost * 1000:7.2f} ms  +{(cost - plain) * 1000:6.2f} ms"
                  f"{ratio}")
    print(f"3. the tools with {python}: from a cell of the stock kernel, timed from the client "
          "as a user waits; and bare, from this process (medians)")
    stock = results["python3"][1]
    for label, cost in commands.items():
        cell = f"%%isolate {FLAGS}" if label.startswith("unshare --") else f"%%isolate {LOCKED}"
        if label.startswith("bwrap"):
            cell = "%%isolate --jail"
        from_cell = stock[label]
        print(f"    {label:<72} cell {from_cell * 1000:7.2f} ms = {from_cell / stock[cell]:5.2f}x "
              f"{cell}; bare {cost * 1000:7.2f} ms")
    print(f"(medians of {args.cells} rounds inside, {max(args.cells // 4, 20)} from the "
          f"client, {args.commands} runs of each command; goals: locks <= +2 ms, overhead "
          "<= 1.2x the bare fork's, tools >= 3x)")


if __name__ == "__main__":
    main()
