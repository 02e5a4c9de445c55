"""Interrupt, restart, shutdown, a dying Jupyter server, zombies and the debugger."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for, write_kernel
from kernels import execute

from nskernel.isolation import Isolation

NAMESPACES = ("pid", "net", "mnt", "uts", "ipc")
NS_CODE = "import os; {n: os.readlink(f'/proc/self/ns/{n}') for n in " + repr(NAMESPACES) + "}"


def processes_in(namespaces: dict[str, str]) -> list[int]:
    """Host pids of processes in any of these namespaces (by their ns link text)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for name, link in namespaces.items():
            try:
                if os.readlink(f"/proc/{entry}/ns/{name}") == link:
                    found.append(int(entry))
                    break
            except OSError:
                break
    return found


@pytest.mark.parametrize("code", ["import time; print('ready', flush=True); time.sleep(100)",
                                  "!echo ready; sleep 100"])
def test_interrupt_stops_the_cell_and_the_kernel_lives_on(start_kernel, code):
    manager, client = start_kernel()
    done = execute(client, code, interrupt=(manager, "ready"))  # 100 s if not interrupted
    if code.startswith("!"):
        assert done.status == "ok"  # IPython's ! reports the interrupt, as in stock
    else:
        assert done.status == "error" and done.error[0] == "KeyboardInterrupt"
    assert execute(client, "1 + 1").value == 2
    assert execute(client, "!ps -e -o args= | grep -c '^sleep 100' || true").stdout.strip() == "0"


def test_restart_keeps_the_kernel_isolated(start_kernel):
    manager, client = start_kernel()
    execute(client, "x = 1")
    old_launcher = manager.provisioner.pid
    manager.restart_kernel(now=False)
    client.wait_for_ready(timeout=60)
    assert execute(client, "'x' in dir()").value is False
    assert execute(client, "import os, socket; (os.getpid(), socket.gethostname())").value == \
        (2, "isolated")
    after = execute(client, NS_CODE).value
    assert all(after[name] != os.readlink(f"/proc/self/ns/{name}") for name in NAMESPACES)
    assert not Path(f"/proc/{old_launcher}").exists()


def test_shutdown_leaves_no_process_mount_or_namespace(start_kernel):
    manager, client = start_kernel()
    namespaces = execute(client, NS_CODE).value
    execute(client, "import subprocess; subprocess.Popen(['sleep', '100'], "
                    "start_new_session=True)")  # a user process in its own session
    launcher = manager.provisioner.pid
    assert len(processes_in(namespaces)) >= 3
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    assert not processes_in(namespaces)
    assert not Path(f"/proc/{launcher}").exists()


def test_a_killed_jupyter_server_takes_the_kernel_with_it():
    probe = Path(__file__).with_name("kernel_probe.py")
    code = "import subprocess; subprocess.Popen(['sleep', '100'], start_new_session=True)\n" \
        + NS_CODE
    server = subprocess.Popen([sys.executable, str(probe), "isolated-python", code, "--hold"],
                              stdout=subprocess.PIPE, text=True)
    report = None
    try:
        line = server.stdout.readline()
        report = json.loads(line)
        namespaces = ast.literal_eval(report["results"][0]["result"])
        assert len(processes_in(namespaces)) >= 3
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert wait_for(lambda: not processes_in(namespaces), timeout=10), \
            processes_in(namespaces)
        assert wait_for(lambda: not Path(f"/proc/{report['launcher_pid']}").exists(), 10)
    finally:
        server.kill()
        server.wait()
        if report:  # the killed "server" could not remove the kernel's connection file
            Path(report["connection_file"]).unlink(missing_ok=True)


def test_orphans_are_reaped_by_init(start_kernel):
    _manager, client = start_kernel()
    execute(client, "import os, subprocess; subprocess.run(['sh', '-c', "
                    "'for i in 1 2 3 4 5; do sleep 0.1 & done; exit 0'])")
    time.sleep(1)
    states = execute(client, "[open(f'/proc/{p}/stat').read().split(')')[1].split()[0] "
                             "for p in os.listdir('/proc') if p.isdigit()]").value
    assert "Z" not in states and len(states) <= 3


def test_without_a_pid_namespace_the_launcher_reaps_and_cleans_up(start_kernel):
    """No init then: the launcher is the child subreaper, and kills what is left at the end."""
    manager, client = start_kernel(write_kernel("isolated-net", Isolation(net=True, mount=True)))
    launcher = manager.provisioner.pid
    assert execute(client, "import socket; [n for _, n in socket.if_nameindex()]").value == \
        ["lo"]
    assert execute(client, "import os; os.getppid()").value == launcher
    # A burst of orphans dying at once: the launcher's SIGCHLD handler runs inside itself.
    execute(client, "import subprocess; subprocess.run(['sh', '-c', "
                    "'for i in $(seq 300); do sleep 0.2 & done; exit 0'])")
    time.sleep(1.5)
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    states = [Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
              for pid in children  # but the cgroup keeper (see nskernel.launch)
              if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nskernel-cgroup")]
    assert states == ["S"] or states == ["R"], states  # the kernel alone; no zombie orphans
    sleeper = execute(client, "subprocess.Popen(['sleep', '100'], start_new_session=True).pid")
    client.stop_channels()
    manager.shutdown_kernel(now=False)
    assert wait_for(lambda: not Path(f"/proc/{sleeper.value}").exists(), timeout=5)
    assert not Path(f"/proc/{launcher}").exists()


@pytest.mark.parametrize("kernel_name", ["isolated-python", "python3"])
def test_debugger_stops_at_a_breakpoint(start_kernel, kernel_name):
    manager, client = start_kernel(kernel_name)
    seq = iter(range(1, 100))

    def debug(command: str, arguments: dict | None = None) -> dict:
        msg = client.session.msg("debug_request", {
            "type": "request", "seq": next(seq), "command": command,
            "arguments": arguments or {}})
        client.control_channel.send(msg)
        while True:
            reply = client.get_control_msg(timeout=20)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                return reply["content"]

    assert debug("initialize", {"clientID": "test", "clientName": "test", "adapterID": "",
                                "pathFormat": "path", "linesStartAt1": True,
                                "columnsStartAt1": True, "locale": "en"})["success"]
    assert debug("attach")["success"]
    code = "def f(a, b):\n    c = a + b\n    return c\n\nf(2, 3)"
    source = debug("dumpCell", {"code": code})["body"]["sourcePath"]
    breakpoints = debug("setBreakpoints", {"breakpoints": [{"line": 2}],
                                           "source": {"path": source},
                                           "sourceModified": False})
    assert breakpoints["success"] and breakpoints["body"]["breakpoints"][0]["verified"]
    assert debug("configurationDone")["success"]
    client.execute(code)
    deadline = time.monotonic() + 20
    stopped = None
    while stopped is None and time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=20)
        if msg["msg_type"] == "debug_event" and msg["content"].get("event") == "stopped":
            stopped = msg["content"]
    assert stopped is not None and stopped["body"]["reason"] == "breakpoint"
    thread = stopped["body"]["threadId"]
    frames = debug("stackTrace", {"threadId": thread})["body"]["stackFrames"]
    assert frames[0]["line"] == 2
    assert debug("continue", {"threadId": thread})["success"]
    client.get_shell_msg(timeout=20)
    debug("disconnect", {"restart": False, "terminateDebuggee": True})
    directory = os.path.dirname(source)
    if kernel_name == "python3":  # ipykernel's own /tmp/ipykernel_PID stays; this test made it
        assert os.path.isdir(directory)
        shutil.rmtree(directory)
    else:  # the isolated kernel's is in its private /run, never on the host's disk
        assert directory == "/run/nskernel/kernel"
        assert not os.path.exists(source)
