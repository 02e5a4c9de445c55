"""The escape battery: every known route out of an Isolated Python kernel, tried for real.

Each attempt is a cell that a hostile user could type. It runs in the default Isolated Python
kernel of whoever runs the suite and, when that is root, also in a rootless kernel of an
unprivileged user: the two build their walls differently (a root kernel is nobody on the
host; a rootless one is its user). Bait on the host side, made by the test: a process with
a secret in its command line and environment, and a listener on the host's loopback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import kernels
import pytest
from conftest import IS_ROOT, RUN_PREFIX, as_user

PROBE = str(Path(__file__).with_name("kernel_probe.py"))

#: name -> cell. The cell's value says what the attempt reached; placeholders come from the
#: bait. ``libc`` and ``os`` are defined by PRELUDE.
PRELUDE = "import ctypes, errno, fcntl, os, socket, subprocess\n" \
          "libc = ctypes.CDLL(None, use_errno=True)\n" \
          "def pids(root='/proc'): return [int(p) for p in os.listdir(root) if p.isdigit()]\n" \
          "def attempt(call):\n" \
          "    try:\n" \
          "        return call()\n" \
          "    except OSError as exc:\n" \
          "        return errno.errorcode[exc.errno]\n" \
          "def read(path):\n" \
          "    data = attempt(lambda: open(path, 'rb').read())\n" \
          "    return data if isinstance(data, bytes) else b''\n"

ATTEMPTS = {
    # Uncover the host's procfs beneath the kernel's own.
    "umount /proc": "(libc.umount2(b'/proc', 2), len(pids()))",
    "umount -l /proc (the command)":
        "subprocess.run(['umount', '-l', '/proc'], capture_output=True).returncode != 0 "
        "and len(pids())",
    "mount a new /proc over it": "libc.mount(b'proc', b'/proc', b'proc', 0, None)",
    "mount a proc elsewhere":
        "os.makedirs('/tmp/escape-proc', exist_ok=True) or "
        "(libc.mount(b'proc', b'/tmp/escape-proc', b'proc', 0, None), "
        " os.rmdir('/tmp/escape-proc'))[0]",
    "/proc/1/root/proc": "len(pids('/proc/1/root/proc')) if os.access('/proc/1/root/proc', "
                         "os.R_OK) else 0",
    # Look for the host's bait process by what it carries.
    "the bait's secret in any /proc/*/cmdline or environ":
        "any(SECRET.encode() in read(f'/proc/{p}/{f}') "
        "    for p in pids() for f in ('cmdline', 'environ'))",
    "signal the bait by its host pid": "attempt(lambda: os.kill(BAIT_PID, 0))",
    "ptrace the bait by its host pid": "libc.ptrace(16, BAIT_PID, 0, 0) == 0",
    # Reach the host's network namespace.
    "SIOCGSKNS on every open fd": "[os.fstat(ns).st_ino for fd in map(int, "
                                  "os.listdir('/proc/self/fd')) "
                                  "for ns in [libc.ioctl(fd, 0x894C)] if ns >= 0]",
    "a netns of any visible process": "[os.stat(f'/proc/{p}/ns/net').st_ino for p in pids() "
                                      "if os.access(f'/proc/{p}/ns/net', os.R_OK)]",
    "the host's loopback listener":
        "socket.socket().connect_ex(('127.0.0.1', HOST_PORT)) == 0",
    "/proc/1/net shows host sockets": "str(HOST_PORT_HEX) in open('/proc/1/net/tcp').read() "
                                      "if os.access('/proc/1/net/tcp', os.R_OK) else False",
    # Change the machine.
    "write a global sysctl":
        "(lambda v: open('/proc/sys/kernel/printk_ratelimit', 'w').write(v))"
        "(open('/proc/sys/kernel/printk_ratelimit').read()) if os.access("
        "'/proc/sys/kernel/printk_ratelimit', os.W_OK) else 'refused'",
    "open a raw block device": "[d for d in os.listdir('/sys/block') if os.path.exists("
                               "f'/dev/{d}') and os.access(f'/dev/{d}', os.R_OK)]",
    "make a device node": "libc.mknod(b'/tmp/escape-node', 0o60600, os.makedev(8, 0)) == 0",
    "unload a kernel module": "(libc.delete_module(b'nskernel_no_such_module', 0), "
                              "ctypes.get_errno())[1]",
    "set the machine's clock": "libc.clock_settime(0, (ctypes.c_long * 2)(0, 0))",
    # What root inside is outside.
    "its own uid map": "open('/proc/self/uid_map').read().split()",
}


@pytest.fixture(scope="module")
def bait() -> Iterator[dict]:
    """A host process with a secret, and a listener on the host's 127.0.0.1."""
    secret = f"nskernel-secret-{secrets.token_hex(8)}"
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", secret],
        env={**os.environ, "NSKERNEL_ESCAPE_SECRET": secret})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        port = listener.getsockname()[1]
        yield {"SECRET": secret, "BAIT_PID": process.pid, "HOST_PORT": port,
               "HOST_PORT_HEX": f"{port:04X}",
               "host_netns": os.stat("/proc/self/ns/net").st_ino}
    finally:
        listener.close()
        process.kill()
        process.wait()


def cells(bait: dict) -> list[str]:
    """PRELUDE with the bait's values, then one cell per attempt."""
    values = "".join(f"{key} = {value!r}\n" for key, value in bait.items())
    return [values + PRELUDE, *ATTEMPTS.values()]


@pytest.fixture(scope="module", params=["kernel", "rootless"] if IS_ROOT else ["kernel"])
def reached(request: pytest.FixtureRequest, bait: dict, unprivileged_user) -> dict:
    """{attempt: its cell's value} from a kernel of the suite's user or, as root, a rootless
    kernel of an unprivileged user."""
    if request.param == "kernel":
        manager, client = kernels.start("isolated-python")
        try:
            values = [kernels.execute(client, code).result for code in cells(bait)]
        finally:
            kernels.stop(manager, client)
    else:
        done = as_user(unprivileged_user, [sys.executable, PROBE, "isolated-python",
                                           *cells(bait)])
        assert done.returncode == 0, done.stderr
        values = [result["result"] for result in json.loads(done.stdout.splitlines()[-1])
                  ["results"]]
    answers = dict(zip(ATTEMPTS, values[1:], strict=True))
    assert None not in answers.values(), answers  # every attempt ran to a value
    return {name: eval(value) for name, value in answers.items()}  # noqa: S307


def test_the_host_procfs_stays_covered(reached: dict):
    assert reached["umount /proc"][0] == -1
    assert reached["umount /proc"][1] < 10  # the kernel's own few processes
    assert reached["umount -l /proc (the command)"] < 10
    assert reached["mount a new /proc over it"] == -1
    assert reached["mount a proc elsewhere"] == -1
    assert reached["/proc/1/root/proc"] < 10


def test_no_host_process_can_be_found_or_touched(reached: dict):
    assert reached["the bait's secret in any /proc/*/cmdline or environ"] is False
    assert reached["signal the bait by its host pid"] == "ESRCH"
    assert reached["ptrace the bait by its host pid"] is False


def test_the_host_network_is_out_of_reach(reached: dict, bait: dict):
    assert bait["host_netns"] not in reached["SIOCGSKNS on every open fd"]
    assert bait["host_netns"] not in reached["a netns of any visible process"]
    assert reached["the host's loopback listener"] is False
    assert reached["/proc/1/net shows host sockets"] is False


def test_the_machine_cannot_be_changed(reached: dict):
    assert reached["write a global sysctl"] == "refused"
    assert reached["open a raw block device"] == []
    assert reached["make a device node"] is False
    # EPERM, or ENOSYS where the machine has no modules; ENOENT would mean "allowed".
    assert reached["unload a kernel module"] in (1, 38)
    assert reached["set the machine's clock"] == -1


def test_root_inside_is_nobody_or_the_user_outside(reached: dict):
    """One id mapped, never the host's whole range (which would make root inside root)."""
    inside, _outside, count = reached["its own uid map"]
    assert (inside, count) == ("0", "1")


@pytest.fixture
def var_tmp_path() -> Iterator[Path]:
    """A fresh directory outside /tmp and /var/tmp (which an isolated kernel has of its own):
    below the working directory."""
    made = Path(tempfile.mkdtemp(dir=os.getcwd(), prefix=f".{RUN_PREFIX}-"))
    try:
        yield made
    finally:
        shutil.rmtree(made)


def test_notebooks_in_a_private_directory_stay_readable_and_nothing_else_shows(
        start_kernel, var_tmp_path):
    """A root kernel is nobody on the host, yet notebooks (and Python) often live where only
    root may enter, such as /root: the way to them is opened for the kernel alone, and what
    else is in there stays hidden from it. A rootless kernel is its user and reads both."""
    private = var_tmp_path / "private"
    notebooks = private / "notebooks"
    notebooks.mkdir(parents=True)
    private.chmod(0o700)
    (notebooks / "data.txt").write_text("data beside the notebook")
    (private / "secret.txt").write_text("not for the kernel")
    _manager, client = start_kernel(cwd=str(notebooks))
    seen = kernels.execute(client, f"import os\n(os.getcwd(), open('data.txt').read(), "
                                   f"os.path.exists({str(private / 'secret.txt')!r}))").value
    assert seen == (str(notebooks), "data beside the notebook", not IS_ROOT)


@pytest.mark.parametrize("flags", ["--pid", "--pid --user", "--pid --net --mount"])
def test_a_cell_cannot_uncover_the_hosts_processes(kernel, flags):
    """In either kernel, as root or not: unmounting a cell's /proc (where that succeeds)
    shows no process of the host's."""
    done = kernels.execute(kernel, f"%%isolate {flags}\nimport ctypes, os\n"
                                   "ctypes.CDLL(None).umount2(b'/proc', 2)\n"
                                   "len([p for p in os.listdir('/proc') if p.isdigit()])")
    assert done.value < 10, done


#: The processes a cell sees, and those whose memory it may open (beside its own).
OPEN_OTHERS_MEMORY = """import os
def opens(pid):
    try:
        open(f'/proc/{pid}/mem', 'rb').close()
        return True
    except OSError:
        return False
pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
(len(pids), [p for p in pids if p != os.getpid() and opens(p)])"""


def test_a_cell_with_a_user_namespace_cannot_reach_its_kernel(kernel):
    """A cell of its own user namespace cannot unmount its /proc, and the processes it sees
    without a pid namespace (its kernel among them) refuse it their memory."""
    done = kernels.execute(kernel, "%%isolate --pid --user\nimport ctypes\n"
                                   "ctypes.CDLL(None).umount2(b'/proc', 2)")
    assert done.value == -1, done
    done = kernels.execute(kernel, f"%%isolate --user --mount\n{OPEN_OTHERS_MEMORY}")
    seen, opened = done.value
    assert seen > 1 and opened == [], done


# ------------------------------------------------ what the kernel holds from outside
#: A cell that tries every descriptor it holds. A socket of the host's network namespace
#: (its netns cookie, SO_NETNS_COOKIE, is HOST_COOKIE) is dissolved (``connect`` with
#: AF_UNSPEC) and re-aimed at the host's loopback listener; the kernel's own sockets are
#: left alone (breaking them would only break the kernel). Any descriptor on the server's
#: log file (LOG_ID: its device and inode) is written through. The value: what got out.
REAIM_AND_WRITE = """
import ctypes, os, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
got_out = []
for name in os.listdir('/proc/self/fd'):
    fd = int(name)
    try:
        status = os.fstat(fd)
        link = os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        continue
    if (status.st_dev, status.st_ino) == LOG_ID:
        got_out.append(('log', fd, os.write(fd, b'FORGED LINE\\n') > 0))
    if not link.startswith('socket:'):
        continue
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    try:
        cookie = struct.unpack('Q', sock.getsockopt(socket.SOL_SOCKET, 71, 8))[0]
        if cookie != HOST_COOKIE:
            continue
        if sock.family != socket.AF_UNIX:
            got_out.append(('a host socket', fd, sock.family.name))
        libc.connect(sock.fileno(), bytes(16), 16)
        sock.settimeout(2)
        sock.connect(('127.0.0.1', HOST_PORT))
        got_out.append(('host network', fd, link))
    except (OSError, TypeError):
        pass
    finally:
        sock.close()
got_out
"""


def host_netns_cookie() -> int:
    """The host's network namespace's cookie: an id never reused within a boot."""
    with socket.socket() as sock:
        return struct.unpack("Q", sock.getsockopt(socket.SOL_SOCKET, 71, 8))[0]


@pytest.fixture
def server_log() -> Iterator[Path]:
    """The file a Jupyter server logs to (``jupyter lab >> server.log``): 0600, its owner's
    (in a directory that the rootless test's user can reach, once it is made theirs)."""
    directory = Path(tempfile.mkdtemp(dir="/var/tmp", prefix=f"{RUN_PREFIX}-"))
    try:
        log = directory / "server.log"
        log.write_bytes(b"the server's own line\n")
        log.chmod(0o600)
        yield log
    finally:
        shutil.rmtree(directory)


def _probe(user, *codes: str, log: Path) -> list[dict]:
    """Cells run in a fresh Isolated Python kernel of ``user`` (None: ours) whose stdout and
    stderr are ``log``: each cell's result."""
    if user is None:
        with open(log, "ab") as output:
            manager, client = kernels.start("isolated-python", stdout=output, stderr=output)
        try:
            return [dataclasses.asdict(kernels.execute(client, code, timeout=60))
                    for code in codes]
        finally:
            kernels.stop(manager, client)
    os.chown(log, user.pw_uid, user.pw_gid)
    os.chown(log.parent, user.pw_uid, user.pw_gid)
    done = as_user(user, [sys.executable, PROBE, "isolated-python", *codes, "--log", str(log)])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])["results"]


@pytest.mark.parametrize("who", ["kernel", "rootless"] if IS_ROOT else ["kernel"])
def test_no_descriptor_from_outside_reaches_the_host(who, bait, server_log, unprivileged_user):
    """Round three's route: the connections Jupyter opened to the kernel were accepted in the
    host's netns, so a cell could dissolve one and connect it to the host's loopback. And
    round four's: the kernel's stdout and stderr were the server's own, a writable fd on
    a root server's log. Now the kernel holds Unix sockets and pipes only; Jupyter still
    talks to it (the cells run) and what it writes to its stderr reaches the log, bounded."""
    log_status = server_log.stat()
    values = {"LOG_ID": (log_status.st_dev, log_status.st_ino), "HOST_PORT": bait["HOST_PORT"],
              "HOST_COOKIE": host_netns_cookie()}
    prelude = "".join(f"{key} = {value!r}\n" for key, value in values.items())
    flood = ("import sys\nfd = sys.stderr._original_stdstream_copy\n"
             "os.write(fd, b'MARK-FROM-THE-KERNEL\\n')\n"
             "for _ in range(48): os.write(fd, b'x' * 65536)\n")
    results = _probe(None if who == "kernel" else unprivileged_user,
                     prelude + REAIM_AND_WRITE, flood, "1 + 1", log=server_log)
    assert [result["status"] for result in results] == ["ok"] * 3, results
    assert eval(results[0]["result"]) == []  # noqa: S307
    assert results[2]["result"] == "2"  # the kernel still answers after both
    text = server_log.read_bytes()
    assert text.startswith(b"the server's own line\n")
    assert b"FORGED LINE" not in text
    assert b"MARK-FROM-THE-KERNEL" in text  # relayed by the supervisor
    assert b"the rest is dropped" in text
    assert len(text) < 2 * (1 << 20)  # 3 MiB written: at most 1 MiB per stream reaches it


@pytest.mark.parametrize("kernel_name", ["isolated-python", "python3"])
def test_a_jailed_cell_holds_only_its_own_pipes(start_kernel, kernel_name, bait):
    """A jailed cell inherits nothing of its kernel's: in a stock kernel those are the very
    TCP connections Jupyter opened (re-aimable to the host's network), in Isolated Python
    its Unix sockets and zmq's. The cell keeps its stdio and its result pipe."""
    _manager, client = start_kernel(kernel_name)
    assert kernels.execute(client, "%load_ext nskernel").status == "ok"
    prelude = (f"LOG_ID = None\nHOST_PORT = {bait['HOST_PORT']!r}\n"
               f"HOST_COOKIE = {host_netns_cookie()!r}\n")
    done = kernels.execute(client, "%%isolate --jail\n" + prelude + REAIM_AND_WRITE + """
fds = [int(name) for name in os.listdir('/proc/self/fd')]
kinds = []
for fd in fds:
    try:
        kinds.append(os.readlink(f'/proc/self/fd/{fd}').split(':')[0])
    except OSError:
        pass  # listdir's own descriptor, closed since
(got_out, kinds)
""")
    got_out, kinds = done.value
    assert got_out == []
    assert "socket" not in kinds, kinds
    assert len(kinds) <= 6, kinds  # stdin, stdout, stderr, the result pipe, listdir's own
    assert kernels.execute(client, "1 + 1").value == 2


# ------------------------------------------------------------ what kernels share
def test_each_kernel_has_its_own_var_tmp(start_kernel):
    """Round four: kernel A kept a secret in a 0700 directory under /var/tmp and kernel B
    read and overwrote it, and it outlived both on the host's disk. Each kernel's /var/tmp
    is now its own (a tmpfs, as /tmp is)."""
    name = f"{RUN_PREFIX}-secret-{secrets.token_hex(4)}"
    _manager, first = start_kernel()
    _manager, second = start_kernel()
    keep = (f"import os\nos.makedirs('/var/tmp/{name}', mode=0o700)\n"
            f"open('/var/tmp/{name}/key', 'w').write('s3cret')\nos.chmod('/var/tmp/{name}/key', "
            "0o600)\nopen(f'/var/tmp/" + name + "/key').read()")
    assert kernels.execute(first, keep).value == "s3cret"
    assert kernels.execute(second, f"import os\nos.path.exists('/var/tmp/{name}')").value is False
    assert not os.path.exists(f"/var/tmp/{name}")


@pytest.mark.skipif(not IS_ROOT, reason="rootless kernels are all their user, by design")
def test_kernels_of_a_root_jupyter_are_strangers_to_each_other(start_kernel):
    """Each kernel of a root Jupyter is an id of its own on the host (not one shared
    nobody), so where both may write, neither can read or change what the other keeps
    private; what a kernel left can be found by its id; the id is free again once the
    kernel is gone."""
    from nskernel.kernel import identity

    shared = Path(tempfile.mkdtemp(dir=os.getcwd(), prefix=f".{RUN_PREFIX}-shared-"))
    shared.chmod(0o1777)
    try:
        first_manager, first = start_kernel()
        _manager, second = start_kernel()
        ids = [kernels.execute(client, "int(open('/proc/self/uid_map').read().split()[1])")
               .value for client in (first, second)]
        assert ids[0] != ids[1]
        assert set(ids) <= identity.in_use()
        secret = shared / "a" / "key"
        kernels.execute(first, f"import os\nos.makedirs({str(secret.parent)!r}, mode=0o700)\n"
                               f"open({str(secret)!r}, 'w').write('s3cret')\n"
                               f"os.chmod({str(secret)!r}, 0o600)")
        assert secret.stat().st_uid == ids[0]  # found by its id
        kernels.execute(second, PRELUDE)
        tries = kernels.execute(second, f"[attempt(lambda: open({str(secret)!r}).read()), "
                                        f"attempt(lambda: open({str(secret)!r}, 'w').close()), "
                                        f"attempt(lambda: os.rename({str(secret.parent)!r}, "
                                        f"{str(shared / 'b')!r}))]").value
        assert tries == ["EACCES", "EACCES", "EPERM"], tries
        kernels.stop(first_manager, first)
        assert ids[0] not in identity.in_use()
    finally:
        shutil.rmtree(shared)


class _Crafted:
    """A value whose unpickling runs a command: what a hostile submission would return."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("untrusted", [False, True])
def test_an_untrusted_function_cannot_run_code_in_its_caller(tmp_path, untrusted):
    """A judge calls hostile code with nskernel.isolate(untrusted=True): what comes back is
    decoded as plain data, so a crafted value runs nothing here. (Trusted, it is unpickled
    as it is, and the command runs: the control.)"""
    import nskernel
    from nskernel.cell.runner import IsolatedRunError

    marker = tmp_path / "ran-in-the-caller"
    if untrusted:
        with pytest.raises(IsolatedRunError, match="plain data"):
            nskernel.isolate(lambda: _Crafted(marker), pid=True, untrusted=True)
    else:
        nskernel.isolate(lambda: _Crafted(marker), pid=True)
    assert marker.exists() is not untrusted
