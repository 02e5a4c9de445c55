"""Terminals and devices: a kernel's /dev holds what a notebook needs and nothing of the host's.

The host's /dev/pts holds every terminal of the machine (ssh sessions, Jupyter's terminals);
a rootless kernel is their user, and could read keystrokes from them or type into them. The
kernel gets a /dev of its own, as bubblewrap's --dev builds one: null, zero, full, random,
urandom and tty bound from the host, a devpts instance of its own with /dev/ptmx pointing
into it, /dev/shm; no /dev/fuse. Bait on the host side: a terminal made by the test, open to
the kernel's user. Each attempt runs in the suite's user's kernel and, when that is root, in
an unprivileged user's rootless kernel; ptys made inside must still work.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import sys
from collections.abc import Iterator
from pathlib import Path

import kernels
import pytest
from conftest import IS_ROOT, RUN_PREFIX, as_user, write_kernel

from nskernel.isolation import Isolation

PROBE = str(Path(__file__).with_name("kernel_probe.py"))

PRELUDE = """\
import ctypes, errno, os, pty, select, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def attempt(call):
    try:
        return call()
    except OSError as exc:
        return errno.errorcode[exc.errno]
def type_into(path):
    def write():
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
        try:
            return os.write(fd, b'INJECTED\\n')
        finally:
            os.close(fd)
    return attempt(write)
def pty_round_trip():
    master, slave = os.openpty()
    try:
        os.write(slave, b'ping\\n')
        echoed = b''
        while not echoed.endswith(b'\\n') and select.select([master], [], [], 5)[0]:
            echoed += os.read(master, 100)  # the line discipline may pass it in pieces
        return (os.ttyname(slave), echoed,
                os.stat(os.ttyname(slave)).st_dev == os.stat('/dev/pts').st_dev)
    finally:
        os.close(master)
        os.close(slave)
def pty_fork_tty():
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp('tty', ['tty'])
    out = b''
    while True:
        try:
            chunk = os.read(fd, 100)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(fd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out.decode().strip()
def devices():
    return {'listing': sorted(os.listdir('/dev')),
            'own devpts': os.stat('/dev/pts').st_dev != HOST_PTS_DEV,
            'ptmx': os.path.realpath('/dev/ptmx'),
            'type into the host terminal': type_into(HOST_TERMINAL),
            'open /dev/fuse': attempt(lambda: os.close(os.open('/dev/fuse', os.O_RDWR))),
            'pty': pty_round_trip(),
            'pty.fork': pty_fork_tty(),
            'null and urandom': (open('/dev/null', 'rb').read(), len(os.urandom(8)),
                                 len(open('/dev/urandom', 'rb').read(8))),
            'shm': attempt(lambda: open('/dev/shm/nskernel-x', 'w').write('x'))}
"""

#: Attempts on the kernel's own /dev (after devices(): they may change it).
ATTEMPTS = {
    "devices": "devices()",
    "umount /dev/pts, then type": "(libc.umount2(b'/dev/pts', 2), type_into(HOST_TERMINAL))",
    "umount /dev, then type": "(libc.umount2(b'/dev', 2), type_into(HOST_TERMINAL), "
                              "os.path.exists('/dev/fuse'))",
    "a devpts of its own mounting": "os.makedirs('/tmp/pts', exist_ok=True) or "
                                    "(libc.mount(b'devpts', b'/tmp/pts', b'devpts', 0, None), "
                                    " sorted(os.listdir('/tmp/pts')), "
                                    " type_into('/tmp/pts/' + HOST_TERMINAL.rsplit('/', 1)[1]))",
    "make a file in /dev": "attempt(lambda: open('/dev/escape', 'w').close())",
    "a jailed cell": "%%isolate --jail\ndevices()",
}

#: What a notebook needs; /dev/mqueue where the host has one.
NEEDED = {"fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
          "tty", "urandom", "zero", *(["mqueue"] if os.path.isdir("/dev/mqueue") else [])}


@pytest.fixture(scope="module")
def terminal(unprivileged_user) -> Iterator[dict]:
    """A terminal of the host's, open to anyone (and, as root, owned by the rootless
    kernel's user, as its own ssh session would be): only the devpts instance can keep a
    kernel out of it. What a kernel types into it shows at ``master``."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        if IS_ROOT:
            os.chown(path, unprivileged_user.pw_uid, unprivileged_user.pw_gid)
        os.chmod(path, 0o666)
        yield {"master": master, "HOST_TERMINAL": path,
               "HOST_PTS_DEV": os.stat("/dev/pts").st_dev}
    finally:
        os.close(slave)
        os.close(master)


def typed(master: int) -> bytes:
    """What reached the host's terminal so far."""
    data = b""
    while select.select([master], [], [], 0.2)[0]:
        data += os.read(master, 4096)
    return data


@pytest.fixture(scope="module", params=["kernel", "rootless"] if IS_ROOT else ["kernel"])
def reached(request: pytest.FixtureRequest, terminal: dict, unprivileged_user) -> dict:
    """{attempt: its value}, and what reached the host's terminal."""
    bait = {key: value for key, value in terminal.items() if key != "master"}
    cells = ["".join(f"{key} = {value!r}\n" for key, value in bait.items()) + PRELUDE,
             *ATTEMPTS.values()]
    typed(terminal["master"])
    if request.param == "kernel":
        manager, client = kernels.start("isolated-python")
        try:
            done = [kernels.execute(client, code) for code in cells]
        finally:
            kernels.stop(manager, client)
        results = [(d.status, d.result, d.traceback) for d in done]
    else:
        run = as_user(unprivileged_user, [sys.executable, PROBE, "isolated-python", *cells])
        assert run.returncode == 0, run.stderr
        results = [(r["status"], r["result"], r["traceback"])
                   for r in json.loads(run.stdout.splitlines()[-1])["results"]]
    for status, _result, traceback in results:
        assert status == "ok", traceback
    answers = {name: eval(result)  # noqa: S307 - our own cells' literal values
               for name, (_status, result, _tb) in zip(ATTEMPTS, results[1:], strict=True)}
    return {**answers, "typed": typed(terminal["master"])}


def test_no_host_terminal_can_be_typed_into(reached: dict):
    """The bait terminal is open to the kernel's user, yet nothing reaches it: the kernel's
    /dev/pts is an instance of its own, which neither unmounting nor mounting uncovers."""
    devices = reached["devices"]
    assert devices["own devpts"] is True
    assert devices["type into the host terminal"] == "ENOENT"
    assert reached["umount /dev/pts, then type"] == (-1, "ENOENT")
    assert reached["umount /dev, then type"] == (-1, "ENOENT", False)
    assert reached["a devpts of its own mounting"][1:] == (["ptmx"], "ENOENT")
    assert reached["a jailed cell"]["type into the host terminal"] == "ENOENT"
    assert reached["typed"] == b""


def test_only_the_devices_a_notebook_needs(reached: dict):
    for where in (reached["devices"], reached["a jailed cell"]):
        assert set(where["listing"]) == NEEDED, where["listing"]
        assert where["open /dev/fuse"] == "ENOENT"
    assert reached["make a file in /dev"] in ("EROFS", "EACCES")


def test_ptys_and_devices_work_inside(reached: dict):
    for where in (reached["devices"], reached["a jailed cell"]):
        assert where["ptmx"] == "/dev/pts/ptmx"
        name, echoed, in_own_devpts = where["pty"]
        assert name.startswith("/dev/pts/") and echoed == b"ping\r\n" and in_own_devpts
        code, tty = where["pty.fork"]
        assert code == 0 and tty.startswith("/dev/pts/"), where["pty.fork"]
        assert where["null and urandom"] == (b"", 8, 8)
        assert where["shm"] == 1


def test_a_walled_cell_gets_terminals_of_its_own(kernel, terminal: dict):
    """In either kernel, a cell behind walls (a user and a pid namespace, or a jail) gets a
    devpts of its own too: in a stock kernel the host's terminals are otherwise in reach."""
    bait = {key: value for key, value in terminal.items() if key != "master"}
    setup = "".join(f"{key} = {value!r}\n" for key, value in bait.items()) + PRELUDE
    assert kernels.execute(kernel, setup).status == "ok"
    typed(terminal["master"])
    for flags in ("--user --pid", "--jail"):
        done = kernels.execute(kernel, f"%%isolate {flags}\ndevices()")
        seen = done.value
        assert seen["own devpts"] and seen["type into the host terminal"] == "ENOENT", done
        assert set(seen["listing"]) == NEEDED and seen["pty"][1] == b"ping\r\n", done
    assert typed(terminal["master"]) == b""


def test_a_kernel_without_its_own_ipc_keeps_the_hosts_dev_shm(start_kernel):
    """--no-ipc shares the host's ipc namespace, and with it POSIX shared memory, which
    lives in /dev/shm: that is bound back into the kernel's fresh /dev."""
    name = write_kernel("isolated-no-ipc",
                        dataclasses.replace(Isolation.kernel_default(), ipc=False))
    marker = Path(f"/dev/shm/{RUN_PREFIX}-from-the-host")
    marker.write_text("host")
    try:
        marker.chmod(0o644)
        _manager, client = start_kernel(name)
        done = kernels.execute(client, f"import os\n(open({str(marker)!r}).read(), "
                                       "'fuse' in os.listdir('/dev'), os.path.realpath("
                                       "'/dev/ptmx'))")
        assert done.value == ("host", False, "/dev/pts/ptmx"), done
    finally:
        marker.unlink()
