"""Checkers of the exercises of notebooks 1, 5 and 6: PID namespaces, init and orphans, a
judge's sandbox."""

from __future__ import annotations

import ast
import os
import random
import subprocess
from typing import Any

from nskernel.exercises._check import NotYet, answer, checker


# ---------------------------------------------------------------------------- 01
@checker
def pid1_view(name: str = "pid_and_parent") -> None:
    """01: ``(os.getpid(), os.getppid())`` read in a ``%%isolate --pid`` cell and exported."""
    import nskernel

    value = answer(name, "run (os.getpid(), os.getppid()) in a %%isolate --pid cell and "
                         f"bring it back with --export {name}")
    value = tuple(value) if isinstance(value, (list, tuple)) else value
    if value == (os.getpid(), os.getppid()):
        raise NotYet(f"{value} is what the kernel itself sees: ask inside a %%isolate --pid cell")
    truth = nskernel.isolate(lambda: (os.getpid(), os.getppid()), pid=True)
    if value != truth:
        raise NotYet(f"`{name}` is {value!r}, not what the first process of a new PID namespace "
                     "sees: a pair (its PID, its parent's PID), read inside the cell")


def _ps_listing(path: str) -> dict[int, str]:
    try:
        text = open(path).read()
    except FileNotFoundError:
        raise NotYet(f"no {path} yet: save `ps -e -o pid=,comm=` there from the cell") from None
    listing = {}
    for line in text.splitlines():
        pid, _, command = line.strip().partition(" ")
        if pid.isdigit():
            listing[int(pid)] = command.strip()
    return listing


def _processes_running(argv: list[str]) -> list[int]:
    """PIDs in this /proc whose command line is ``argv`` (zombies have none)."""
    found = []
    wanted = ("\0".join(argv) + "\0").encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if handle.read() == wanted:
                        found.append(int(entry))
            except OSError:
                continue
    return found


@checker
def sleeper_gone(path: str = "/tmp/ps-inside") -> None:
    """01: ``sleep 60 &`` started in a ``%%isolate --pid --sh`` cell, the cell's processes
    saved to ``path``, and the sleep gone with the cell's namespace."""
    listing = _ps_listing(path)
    if listing.get(1) != "sh":
        raise NotYet(f"PID 1 in {path} is {listing.get(1) or 'missing'!s}, not the cell's shell: "
                     "run ps inside the %%isolate --pid --sh cell")
    # A job that ps caught before it ran sleep still shows as a copy of the shell.
    if "sleep" not in listing.values() and list(listing.values()).count("sh") < 2:
        raise NotYet(f"no sleep in {path}: start `sleep 60 &` before ps")
    alive = _processes_running(["sleep", "60"])
    if alive:
        raise NotYet(f"a `sleep 60` still runs in the kernel's namespace (PID {alive[0]}): it was "
                     "started out here; kill it, and start yours in the isolated cell")


# ---------------------------------------------------------------------------- 05
@checker
def pid1_of_unshare(name: str = "pid1_command") -> None:
    """05: the command of PID 1 in ``unshare --pid --fork --mount-proc ps -ef``'s output."""
    given = answer(name, f"set {name} to the command ps -ef lists for PID 1")
    truth = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "ps", "-o", "comm=",
                            "-p", "1"], capture_output=True, text=True, check=True).stdout.strip()
    words = str(given).split()
    if not words or os.path.basename(words[0]) != truth:
        raise NotYet(f"{given!r} is not PID 1 of the namespace that unshare makes: read the "
                     "line whose PID is 1 in ps -ef's own output there")


def _orphan_parent() -> int:
    """In a new PID namespace: the parent of a grandchild whose parent has exited."""
    import time

    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            time.sleep(0.2)
            os.write(writer, str(os.getppid()).encode())
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
    return int(os.read(reader, 20))


@checker
def orphan_adopted(name: str = "orphan_parent") -> None:
    """05: the parent of an orphaned grandchild in a ``%%isolate --pid`` cell, exported."""
    import nskernel

    given = answer(name, f"export the grandchild's parent PID as {name}")
    truth = nskernel.isolate(_orphan_parent, pid=True)
    if given != truth:
        raise NotYet(f"`{name}` is {given!r}: read the grandchild's parent after its own "
                     "parent has exited, in the %%isolate --pid cell")


# ---------------------------------------------------------------------------- 06
def _judged(code: str, data: list[int], timeout: float, stats: bool = False) -> Any:
    """Run a submission as notebook 6's judge does (new namespaces, read-only host, no
    network): what it printed (with ``stats``, the run and its usage)."""
    import nskernel

    def submission() -> str:
        import contextlib
        import io

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "<submission>", "exec"), {"data": list(data)})
        return printed.getvalue()

    return nskernel.isolate(submission, pid=True, net=True, mount=True, uts=True, ipc=True,
                            readonly=True, timeout=timeout, untrusted=True, stats=stats)


def _code(name: str) -> str:
    code = answer(name, f"set {name} to the submission's code, a string")
    if not isinstance(code, str):
        raise NotYet(f"`{name}` is not a string of code")
    try:
        ast.parse(code)
    except SyntaxError as error:
        raise NotYet(f"`{name}` is not Python: line {error.lineno}: {error.msg}") from None
    return code


@checker
def sums_the_data(name: str = "my_code") -> None:
    """06: a submission that prints the sum of ``data`` without calling ``sum``, judged on
    data of the checker's own."""
    code = _code(name)
    if any(isinstance(node, ast.Name) and node.id == "sum" for node in ast.walk(ast.parse(code))):
        raise NotYet("it uses sum(): add the numbers up yourself")
    data = [random.randint(-1000, 1000) for _ in range(random.randint(5, 15))]
    try:
        printed = _judged(code, data, timeout=5).strip()
    except Exception as error:  # noqa: BLE001 - a submission may fail any way: the verdict
        raise NotYet(f"it failed: {type(error).__name__}: {error}") from None
    if printed != str(sum(data)):
        raise NotYet(f"for data {data} it printed {printed[:40]!r}: print the sum of `data`")


@checker
def stopped_by_wall_clock(name: str = "lazy_code") -> None:
    """06: a submission that never ends yet uses almost no CPU time, so that only a
    wall-clock limit stops it."""
    code = _code(name)
    try:
        ran = _judged(code, [1, 2, 3], timeout=1.0, stats=True)
    except Exception as error:  # noqa: BLE001 - a submission may fail any way: the verdict
        usage = getattr(error, "usage", None)
        if "timed out" not in str(error):
            raise NotYet(f"it failed instead: {type(error).__name__}: {error}") from None
        # A wait uses next to none; a loop, all it gets of a core (less on a busy machine).
        if usage is not None and usage.cpu > 0.1:
            raise NotYet(f"it used {usage.cpu:.1f} s of CPU in its second: a CPU-time limit "
                         "would stop it too; make it wait without computing") from None
        return
    raise NotYet(f"it ended by itself (printing {ran.value.strip()[:30]!r}): it must never end")
