"""Two routes past the walls, kept as hostile cells: the session keyring a kernel inherits,
and what the seccomp filters let through (clone with namespace flags, clone3, io_uring).

The session keyring survives fork, setsid, a new user namespace and a change of uid: a
kernel started from a login session (root's, for a root Jupyter) possessed that session's
keys. The kernel and each isolated cell get a fresh session keyring of their own, and the
filters refuse the keyring calls, as Docker's default profile does.

A jailed cell's filter refuses unshare; it must refuse clone with CLONE_NEW* flags too
(clone3, whose flags the filter cannot read, gets ENOSYS, so that the C library falls back to
clone, as under Docker), and io_uring. Threads, subprocesses and multiprocessing still work.

Each route runs in the suite's user's kernel and, when that is root, in an unprivileged
user's rootless kernel too.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import kernels
import pytest
from conftest import IS_ROOT, as_user, write_kernel

from nskernel.cell.sandbox import KEY_QUOTA_WAIT
from nskernel.isolation import Isolation

HERE = Path(__file__).parent
KEYRING_PROBE = str(HERE / "keyring_probe.py")
KERNEL_PROBE = str(HERE / "kernel_probe.py")
KEY_QUOTA_PROBE = str(HERE / "key_quota_probe.py")
WHO = ["kernel", "rootless"] if IS_ROOT else ["kernel"]

#: A kernel with the kernel-wide filter (namespaces allowed: the lab and %%isolate work).
SECCOMP_KERNEL = write_kernel("isolated-seccomp",
                              dataclasses.replace(Isolation.kernel_default(), seccomp=True))


def run_probe(who: str, user, argv: list[str]) -> dict:
    """Run a probe (keyring_probe.py or kernel_probe.py) as the suite's user or, for
    "rootless", as the unprivileged user; its JSON report."""
    command = [sys.executable, *argv]
    done = (subprocess.run(command, capture_output=True, text=True, timeout=240)
            if who == "kernel" else as_user(user, command, timeout=240))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def values(report: dict) -> list:
    """Each cell's value, read back as a Python literal (None for a cell with none)."""
    found = []
    for result in report["results"]:
        assert result["status"] == "ok", (result["error"], result["traceback"][-2000:])
        found.append(kernels.Execution(**result).value if result["result"] else None)
    return found


# ---------------------------------------------------------------------------- keyring
KEYRING_PRELUDE = """\
import ctypes, errno, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
KEYCTL, ADD_KEY = {'x86_64': (250, 248), 'aarch64': (219, 217)}[platform.machine()]
SESSION = -3
def keyctl(*args):
    result = libc.syscall(KEYCTL, *[ctypes.c_long(a) if isinstance(a, int) else a
                                    for a in args])
    return result if result >= 0 else errno.errorcode[ctypes.get_errno()]
def payload(key):
    buffer = ctypes.create_string_buffer(4096)
    size = keyctl(11, key, buffer, 4096)
    return buffer.raw[:size] if isinstance(size, int) else size
def ring_name():
    buffer = ctypes.create_string_buffer(4096)
    size = keyctl(6, SESSION, buffer, 4096)
    return buffer.value.decode().rsplit(';', 1)[-1] if isinstance(size, int) else size
def search(description):
    return keyctl(10, SESSION, b'user', description, 0)
def add_key(description, data):
    result = libc.syscall(ADD_KEY, b'user', description, data, ctypes.c_size_t(len(data)),
                          ctypes.c_long(SESSION))
    return result if result >= 0 else errno.errorcode[ctypes.get_errno()]
def attempts():
    return {'session keyring': ring_name(),
            'search it': search(KEY_DESCRIPTION),
            'read it by id': payload(KEY_ID),
            'overwrite it by id': keyctl(2, KEY_ID, b'forged', 6),
            'add_key over it': add_key(KEY_DESCRIPTION, b'forged') == KEY_ID}
"""

#: (label, cell) of the isolated kernel; the stock kernel runs those that start with %%.
KEYRING_CELLS = [
    ("the kernel", "attempts()"),
    ("a --pid cell", "%%isolate --pid\nattempts()"),
    ("a --user --pid cell", "%%isolate --user --pid\nattempts()"),
    ("a jailed cell", "%%isolate --jail\nattempts()"),
    ("the kernel adds a key of its own",
     "KERNEL_KEY = add_key(b'nskernel-kernel-key', b'kernel-secret')\nKERNEL_KEY > 0"),
    ("... a --pid cell looks for it",
     "%%isolate --pid\n(search(b'nskernel-kernel-key'), payload(KERNEL_KEY))"),
    ("... a --user --pid cell looks for it",
     "%%isolate --user --pid\n(search(b'nskernel-kernel-key'), payload(KERNEL_KEY))"),
    ("join the session's keyring by name",
     "(keyctl(1, KEYRING_NAME.encode()) != 'EPERM', search(KEY_DESCRIPTION), payload(KEY_ID))"),
]

#: What a fresh session keyring leaves of the key: not found, not readable, not writable.
NOT_REACHED = {"session keyring": "_ses", "search it": "ENOKEY", "read it by id": "EACCES",
               "overwrite it by id": "EACCES", "add_key over it": False}
#: Under a seccomp filter every keyring call is refused.
REFUSED = {"session keyring": "EPERM", "search it": "EPERM", "read it by id": "EPERM",
           "overwrite it by id": "EPERM", "add_key over it": False}


@pytest.fixture(scope="module", params=[(who, kernel) for who in WHO
                                        for kernel in ("isolated-python", "python3")],
                ids=lambda param: "-".join(param))
def keyring_run(request: pytest.FixtureRequest, unprivileged_user) -> tuple[str, dict]:
    """The kernel's name and the probe's report: the cells above, run in a kernel started
    from a session keyring that holds a key."""
    who, kernel = request.param
    chosen = [(label, cell) for label, cell in KEYRING_CELLS
              if kernel == "isolated-python" or label != "the kernel"]
    setup = [] if kernel == "isolated-python" else ["%load_ext nskernel"]
    report = run_probe(who, unprivileged_user, [KEYRING_PROBE, kernel, *setup, KEYRING_PRELUDE,
                                                *(cell for _label, cell in chosen)])
    found = values(report)[len(setup) + 1:]
    return kernel, {**dict(zip((label for label, _cell in chosen), found, strict=True)),
                    "secret_seen": report["secret_seen"], "key_unchanged": report["key_unchanged"]}


def test_the_sessions_key_is_out_of_reach_and_unchanged(keyring_run):
    """Neither the kernel nor a cell finds, reads or overwrites the key of the session the
    kernel was started from; the key is as it was when the kernel has gone."""
    kernel, reached = keyring_run
    if kernel == "isolated-python":
        assert reached["the kernel"] == NOT_REACHED, reached
    for label in ("a --pid cell", "a --user --pid cell"):
        assert reached[label] == NOT_REACHED, (label, reached)
    assert reached["a jailed cell"] == REFUSED, reached
    assert reached["join the session's keyring by name"][1:] == ("ENOKEY", "EACCES"), reached
    assert reached["secret_seen"] is False
    assert reached["key_unchanged"] is True


def test_each_cell_has_a_keyring_of_its_own(keyring_run):
    """A key the kernel keeps in its session keyring is not a cell's to find or read."""
    _kernel, reached = keyring_run
    assert reached["the kernel adds a key of its own"] is True
    assert reached["... a --pid cell looks for it"] == ("ENOKEY", "EACCES"), reached
    assert reached["... a --user --pid cell looks for it"] == ("ENOKEY", "EACCES"), reached


# ---------------------------------------------------------------------------- seccomp
SECCOMP_PRELUDE = """\
import ctypes, errno, multiprocessing, os, platform, struct, subprocess, sys, threading
from concurrent.futures import ThreadPoolExecutor
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
# clone and clone3 with the GIL held: the child, a copy of this thread alone, must have it.
held = ctypes.PyDLL(None, use_errno=True)
held.syscall.restype = ctypes.c_long
CLONE, CLONE3, IO_URING_SETUP, KEYCTL = {'x86_64': (56, 435, 425, 250),
                                         'aarch64': (220, 435, 425, 219)}[platform.machine()]
SIGCHLD = 17
NEW = {'user': 0x10000000, 'user+net': 0x50000000, 'user+mount': 0x10020000,
       'net': 0x40000000, 'mount': 0x20000, 'pid': 0x20000000, 'uts': 0x4000000,
       'ipc': 0x8000000, 'cgroup': 0x2000000}
def made(pid):
    if pid == 0:
        os._exit(0)  # the child: a copy of this process, gone at once
    if pid < 0:
        return errno.errorcode[ctypes.get_errno()]
    os.waitpid(pid, 0)
    return 'made'
def clone(flags):
    return made(held.syscall(CLONE, *[ctypes.c_ulong(a) for a in (flags | SIGCHLD, 0, 0, 0, 0)]))
def clone3(flags):
    args = ctypes.create_string_buffer(struct.pack('8Q', flags, 0, 0, 0, SIGCHLD, 0, 0, 0), 64)
    return made(held.syscall(CLONE3, args, ctypes.c_size_t(64)))
def io_uring():
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(IO_URING_SETUP, ctypes.c_uint(1), params)
    if fd < 0:
        return errno.errorcode[ctypes.get_errno()]
    os.close(fd)
    return 'made'
def keyring():
    result = libc.syscall(KEYCTL, ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0))
    return result >= 0 or errno.errorcode[ctypes.get_errno()]
def routes():
    return {'clone ' + name: clone(flag) for name, flag in NEW.items()} | {
        'clone3': clone3(0), 'clone3 user+net': clone3(NEW['user+net']),
        'io_uring_setup': io_uring(), 'keyctl': keyring()}
def everyday():
    got = []
    thread = threading.Thread(target=got.append, args=('thread',))
    thread.start()
    thread.join()
    with ThreadPoolExecutor(4) as pool:
        got += pool.map(abs, [-1, -2, -3])
    with multiprocessing.get_context('fork').Pool(2) as pool:
        got += pool.map(abs, [-4, -5])
    spawned = os.posix_spawn('/bin/true', ['true'], os.environ)
    got.append(os.waitstatus_to_exitcode(os.waitpid(spawned, 0)[1]))
    got.append(subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True,
                              text=True).stdout.strip())
    got.append(subprocess.run('echo $((6 * 7))', shell=True, capture_output=True,
                              text=True).stdout.strip())
    got.append(clone(0))
    return got
"""
EVERYDAY = ["thread", 1, 2, 3, 4, 5, 0, "42", "42", "made"]
JAILED = {**{f"clone {name}": "EPERM" for name in ("user", "user+net", "user+mount", "net",
                                                    "mount", "pid", "uts", "ipc", "cgroup")},
          "clone3": "ENOSYS", "clone3 user+net": "ENOSYS", "io_uring_setup": "EPERM",
          "keyctl": "EPERM"}

SECCOMP_CELLS = [
    ("jail: routes", "%%isolate --jail\nroutes()"),
    ("jail: everyday", "%%isolate --jail\neveryday()"),
    ("seccomp --user --pid: routes", "%%isolate --seccomp --user --pid\nroutes()"),
]


@pytest.fixture(scope="module", params=WHO)
def jail_run(request: pytest.FixtureRequest, unprivileged_user) -> dict:
    """{label: value} of SECCOMP_CELLS, in a default Isolated Python kernel."""
    report = run_probe(request.param, unprivileged_user,
                       [KERNEL_PROBE, "isolated-python", SECCOMP_PRELUDE,
                        *(cell for _label, cell in SECCOMP_CELLS)])
    return dict(zip([label for label, _cell in SECCOMP_CELLS], values(report)[1:], strict=True))


def test_a_jailed_cell_makes_no_namespace_and_no_io_uring(jail_run):
    assert jail_run["jail: routes"] == JAILED
    assert jail_run["seccomp --user --pid: routes"] == JAILED


def test_threads_subprocesses_and_multiprocessing_work_in_a_jail(jail_run):
    assert jail_run["jail: everyday"] == EVERYDAY


def test_the_same_in_a_stock_kernel(kernel):
    """The cells' filter is the same whichever kernel runs them."""
    assert kernels.execute(kernel, SECCOMP_PRELUDE).status == "ok"
    assert kernels.execute(kernel, "%%isolate --jail\nroutes()").value == JAILED
    assert kernels.execute(kernel, "%%isolate --jail\neveryday()").value == EVERYDAY


#: The kernel-wide filter: namespaces stay the kernel's to make (its lab, %%isolate); the
#: keyring and io_uring are refused; a jail inside it is as tight as anywhere.
KERNEL_FILTER_CELLS = [
    ("routes", "routes()"),
    ("everyday", "everyday()"),
    ("a --pid --net cell", "%%isolate --pid --net\nimport os\nos.getpid()"),
    ("a --user --pid cell", "%%isolate --user --pid\nimport os\nos.getpid()"),
    ("jail: routes", "%%isolate --jail\nroutes()"),
    ("jail: everyday", "%%isolate --jail\neveryday()"),
    ("the lab", "%netns add a b\n%veth a:10.9.0.1/24 b:10.9.0.2/24\n"
                "from nskernel import lab, probe\n"
                "probe.ping(lab(), 'a', '10.9.0.2', timeout=5).ok"),
]


@pytest.fixture(scope="module", params=WHO)
def kernel_filter_run(request: pytest.FixtureRequest, unprivileged_user) -> dict:
    report = run_probe(request.param, unprivileged_user,
                       [KERNEL_PROBE, SECCOMP_KERNEL, SECCOMP_PRELUDE,
                        *(cell for _label, cell in KERNEL_FILTER_CELLS)])
    labels = [label for label, _cell in KERNEL_FILTER_CELLS]
    return dict(zip(labels, values(report)[1:], strict=True))


def test_under_the_kernels_filter_namespaces_stay_and_keyring_and_io_uring_go(
        kernel_filter_run):
    routes = kernel_filter_run["routes"]
    assert {name: value for name, value in routes.items() if name.startswith("clone")} == {
        name: "made" for name in routes if name.startswith("clone")}, routes
    assert (routes["io_uring_setup"], routes["keyctl"]) == ("EPERM", "EPERM")
    assert kernel_filter_run["everyday"] == EVERYDAY


def test_under_the_kernels_filter_isolate_the_jail_and_the_lab_work(kernel_filter_run):
    assert kernel_filter_run["a --pid --net cell"] == 1
    assert kernel_filter_run["a --user --pid cell"] == 1
    assert kernel_filter_run["jail: routes"] == JAILED
    assert kernel_filter_run["jail: everyday"] == EVERYDAY
    assert kernel_filter_run["the lab"] is True


#: A cell that fills its user's key quota (all kernels of a root Jupyter share one: nobody's),
#: then what the kernel's next cells meet; last, the kernel frees the keys again. The quota
#: is filled until it has stayed full for as long as a cell waits for room (KEY_QUOTA_WAIT):
#: the keyrings of the user's processes that ended just before (the suite's own kernels and
#: cells, when it runs as that user) are freed seconds later, and a slot freed so would let
#: the next cell through (CI saw it once).
QUOTA_CELLS = [
    ("fill the quota", "import time\nfilled, full_since = 0, time.monotonic()\n"
                       f"while time.monotonic() - full_since < {KEY_QUOTA_WAIT}:\n"
                       "    if isinstance(add_key(b'filler-%d' % filled, b'x'), int):\n"
                       "        filled, full_since = filled + 1, time.monotonic()\n"
                       "    else:\n        time.sleep(0.01)\n"
                       "(filled > 0, add_key(b'one more', b'x'))"),
    ("a --user --pid cell", "%%isolate --user --pid\n1"),
    ("a jailed cell", "%%isolate --jail\nattempts()"),
    ("a --seccomp --pid cell", "%%isolate --seccomp --pid\n1"),
    # The keys' quota comes back when the kernel's collector has freed them: wait for that.
    ("free them", "import time\ncleared = keyctl(7, SESSION)\nfor _ in range(200):\n"
                  "    if isinstance(add_key(b'room again', b'x'), int):\n        break\n"
                  "    time.sleep(0.05)\n(cleared, search(b'room again') > 0)"),
    ("a --user --pid cell again", "%%isolate --user --pid\nattempts()"),
]


def test_with_the_key_quota_full_a_cell_says_why_and_a_filtered_one_runs(unprivileged_user):
    """The fresh keyring counts in the user's key quota, which a cell can fill. Then a cell
    that would keep the kernel's keyring within reach says why it cannot start, in one line;
    one under the filter, which refuses it every keyring call, runs. Only rootless here: as
    root it would fill nobody's quota, which every root kernel on the machine shares."""
    report = run_probe("rootless", unprivileged_user,
                       [KEYRING_PROBE, "isolated-python", KEYRING_PRELUDE,
                        *(cell for _label, cell in QUOTA_CELLS)])
    done = dict(zip([label for label, _cell in QUOTA_CELLS], report["results"][1:], strict=True))

    def value(label: str):
        assert done[label]["status"] == "ok", done[label]
        return kernels.Execution(**done[label]).value

    assert value("fill the quota") == (True, "EDQUOT")
    refused = done["a --user --pid cell"]
    assert refused["status"] == "error", refused
    line, = refused["stderr"].strip().splitlines()  # one line, no traceback
    assert line.startswith("UsageError: ") and "Disk quota exceeded" in line, line
    assert "maxkeys" in line and "--seccomp" in line, line
    assert value("a jailed cell") == REFUSED
    assert value("a --seccomp --pid cell") == 1
    assert value("free them") == (0, True)
    assert value("a --user --pid cell again") == NOT_REACHED
    assert report["key_unchanged"] is True


def test_a_cell_waits_for_the_keys_of_processes_that_ended(unprivileged_user):
    """The kernel frees the keyring of a process that ended in the background, a second or
    two after its end (after its namespaces): a loop of fast cells filled the quota with the
    keyrings of cells that had ended, and the next one failed. A cell that finds the quota
    full waits for it: here a process of the user's fills it and ends half a second later."""
    report = run_probe("rootless", unprivileged_user, [KEY_QUOTA_PROBE, "0.5"])
    assert report["keys_added"] > 0 and report["filler_stopped_by"] == "EDQUOT", report
    assert report.get("value") == "ran", report
