"""`nskernel clean` removes only what a dead lab made: a namespace is known by its cookie
(its inode is reused by the next one made), a record's names are names and never paths,
and a zombie is dead. On the host as root (a lab in a process of its own, and a stock
kernel's), and inside Isolated Python kernels, whose /run is their own: root and rootless.
The scenarios themselves are in clean_scenarios.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IS_ROOT, RUN_PREFIX, as_user, needs_root, one_run_at_a_time, wait_for
from kernels import execute, start, stop

from nskernel.netlab import netns

SCENARIOS = str(Path(__file__).with_name("clean_scenarios.py"))
PROBE = str(Path(__file__).with_name("kernel_probe.py"))
#: The cell that runs the scenarios inside a kernel.
CELL = f"import subprocess, sys\nsubprocess.run([sys.executable, {SCENARIOS!r}, " \
       f"{RUN_PREFIX!r}], capture_output=True, text=True, timeout=300).stdout"


def check(found: dict) -> None:
    recycled, path, zombie = found["recycled"], found["path"], found["zombie"]
    name = RUN_PREFIX
    # The new namespace has the dead lab's name and inode: what clean once removed.
    assert recycled["still there"] and "removed netns" not in recycled["stdout"], recycled
    assert path["still there"] and path["record kept"], path
    assert path["stderr"].startswith(f"refused record /run/nskernel/labs/{name}pt.json (left "
                                     f"as it is): bad namespace name '../netns/{name}pt'"), path
    assert "removed netns" not in path["stdout"], path
    assert zombie["state"] == "Z", zombie
    assert zombie["gone"] and f"removed netns {name}zb" in zombie["stdout"], zombie


@needs_root
def test_on_the_host_clean_knows_a_namespace_by_its_cookie_a_name_and_a_zombie():
    with one_run_at_a_time():  # clean acts on the whole machine: one run's clean at a time
        done = subprocess.run([sys.executable, SCENARIOS, RUN_PREFIX], capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    check(json.loads(done.stdout))


@needs_root
def test_a_stock_kernel_killed_and_not_reaped_is_dead_to_clean():
    """Issue: a stock kernel with a lab, SIGKILLed while its parent (here, us: the
    jupyter_client that started it) lives on and has not reaped it."""
    name = f"{RUN_PREFIX}stz"
    with one_run_at_a_time():
        manager, client = start("python3")
        try:
            assert execute(client, "%load_ext nskernel").status == "ok"
            assert execute(client, f"%netns add {name}").status == "ok"
            pid = manager.provisioner.pid
            os.kill(pid, signal.SIGKILL)  # not polled: it stays a zombie of ours
            assert wait_for(lambda: Path(f"/proc/{pid}/stat").read_text()
                            .rsplit(")", 1)[1].split()[0] == "Z", timeout=10)
            done = subprocess.run([sys.executable, "-m", "nskernel", "clean"],
                                  capture_output=True, text=True, timeout=60)
            assert f"removed netns {name}" in done.stdout, done
            assert netns.netns_inode(name) is None
        finally:
            stop(manager, client)
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.mark.parametrize("who", ["root", "rootless"] if IS_ROOT else ["rootless"])
def test_inside_isolated_python_clean_knows_the_same(who, unprivileged_user):
    if who == "root":
        manager, client = start("isolated-python")
        try:
            done = execute(client, CELL, timeout=300)
        finally:
            stop(manager, client)
        assert done.status == "ok", done
        found = done.value
    else:
        ran = as_user(unprivileged_user, [sys.executable, PROBE, "isolated-python", CELL],
                      timeout=300)
        assert ran.returncode == 0, ran.stderr
        result = json.loads(ran.stdout.splitlines()[-1])["results"][0]
        assert result["status"] == "ok", result
        found = eval(result["result"])  # noqa: S307 - the repr of a str, from our own cell
    check(json.loads(found))
