"""Namespaces entered ahead of time (nskernel.cell.spare): a cell forked by a spare thread sees
exactly what any cell sees (its own fresh namespaces, the kernel's working directory and
umask as they are now), and nothing of the cell before it; a cell with other flags is run
as before. In both kernels; where cells get a user namespace of their own (a stock kernel run
by a user), no spare is made and the cells are the same."""

from __future__ import annotations

from conftest import wait_for
from kernels import execute

FLAGS_LINE = "--pid --net --mount --uts --ipc --hostname cell"  # FLAGS in the kernel

#: Run in the kernel: count the spares taken, and have each cell report what it sees.
SETUP = """
import os, tempfile
from nskernel.cell import spare
from nskernel.isolation import Isolation
_take = spare.take
taken = []
def _counting(isolation):
    found = _take(isolation)
    taken.append(found is not None)
    return found
spare.take = _counting
PROBE = '''import os, socket
(os.getpid(), socket.gethostname(), os.readlink('/proc/self/ns/net'),
 os.readlink('/proc/self/ns/mnt'), os.readlink('/proc/self/ns/uts'), os.getcwd(),
 oct(os.umask(0o22)), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
 sorted(os.listdir('/run/netns')), sorted(os.listdir('/dev/shm')))'''
PLANT = '''import os, socket
socket.sethostname('planted')
open('/dev/shm/planted', 'w').close()
open('/run/netns/planted', 'w').close()
os.system('ip link add planted type dummy')
'''
FLAGS = '--pid --net --mount --uts --ipc --hostname cell'
def ready_spare(timeout=10.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        starter = spare._starters.get(os.getpid())
        if starter is not None and starter._spare is not None and starter._spare.ready.is_set():
            return True
        time.sleep(0.01)
    return False
expected = spare.may_enter_ahead(Isolation(pid=True, net=True, mount=True, uts=True,
                                              ipc=True, hostname='cell'))
"""


def test_a_cell_forked_by_a_spare_sees_its_own_fresh_namespaces(kernel):
    assert execute(kernel, SETUP).status == "ok"
    done = execute(kernel, """
get_ipython().run_cell_magic('isolate', FLAGS, PLANT)  # makes the spare for the next one
made = ready_spare()
workdir = tempfile.mkdtemp(prefix='spare-')
back = os.getcwd()
os.chdir(workdir)
old = os.umask(0o027)
try:
    seen = get_ipython().run_cell_magic('isolate', FLAGS, PROBE)
finally:
    os.umask(old)
    os.chdir(back)
    os.rmdir(workdir)
kernel_ns = [os.readlink(f'/proc/self/ns/{n}') for n in ('net', 'mnt', 'uts')]
(expected, made, bool(taken) and taken[-1], seen, workdir, kernel_ns)
""", timeout=60)
    expected, made, taken, seen, workdir, kernel_ns = done.value
    assert (made, taken) == (expected, expected), done
    pid, hostname, net, mnt, uts, cwd, umask, pids, run_netns, shm = seen
    assert (pid, hostname, pids) == (1, "cell", [1])
    assert {net, mnt, uts}.isdisjoint(kernel_ns)
    assert (cwd, umask) == (workdir, "0o27")  # the kernel's, as they were at the cell
    assert (run_netns, shm) == ([], [])  # nothing the cell before planted


#: Run in the kernel: three cells in a row, each looking for the marks of the one before.
LOOK_AND_PLANT = """
LOOK = (
    "import os, socket, subprocess\\n"
    "found = (socket.gethostname(), sorted(os.listdir('/dev/shm')),\\n"
    "         sorted(os.listdir('/run/netns')),\\n"
    "         subprocess.run(['ip', '-o', 'link', 'show', 'planted'],\\n"
    "                        capture_output=True).returncode,\\n"
    "         subprocess.run(['ipcs', '-q'], capture_output=True, text=True)\\n"
    "         .stdout.count('0x'))\\n")
seen = []
for _ in range(3):
    ready_spare()
    seen.append(get_ipython().run_cell_magic(
        'isolate', FLAGS, LOOK + PLANT + "os.system('ipcmk -Q >/dev/null')\\nfound"))
(expected, ([False] * 3 + taken)[-3:], seen)
"""


def test_cells_forked_by_spares_one_after_another_find_nothing_of_each_other(kernel):
    """Three cells in a row, each forked by a spare (where spares are made), each leaving
    marks in its namespaces (hostname, /dev/shm, /run/netns, a link, a SysV queue) and
    looking for those of the one before."""
    done = execute(kernel, LOOK_AND_PLANT, timeout=60)
    expected, taken, seen = done.value
    assert taken == [expected] * 3, done
    assert seen == [("cell", [], [], 1, 0)] * 3, seen


def test_a_cell_with_other_flags_ends_the_spare_and_runs_as_before(kernel):
    done = execute(kernel, """
ready_spare()
other = get_ipython().run_cell_magic('isolate', '--pid --uts --hostname other',
                                     "import socket, os\\n(socket.gethostname(), os.getpid())")
(bool(taken) and taken[-1], other)
""", timeout=60)
    taken, other = done.value
    assert (taken, other) == (False, ("other", 1)), done

    def one_spare_left() -> bool:
        names = execute(kernel, "import threading\n[t.name for t in threading.enumerate()]")
        return names.value.count("nskernel-spare") <= 1
    assert wait_for(one_spare_left, timeout=10)


def test_cells_back_to_back_with_changing_flags_all_run(kernel):
    """As Run All runs a notebook: cells one after the other, and flags that change now and
    then, so that a cell takes a spare while the next one is being started (a spare given
    both a cell's work and its end used to end first, and the cell waited forever). Every
    other cell comes after a pause of 10 ms, so that its spare is being made or is ready
    (a spare is made once the cell before it is over); the others come at once."""
    done = execute(kernel, """
import time
flags = ['--pid --net', '--pid --net', '--pid --uts', '--pid --net', '--pid']
results = []
for i in range(300):
    time.sleep(0.01 * (i % 2))
    results.append(get_ipython().run_cell_magic('isolate', flags[i % len(flags)],
                                                 'import os\\nos.getpid()'))
(set(results), sum(taken[-300:]) > 0 or not expected)
""", timeout=240)
    assert done.value == ({1}, True), done


def test_a_shell_cell_forked_by_a_spare_can_name_its_directory(kernel):
    """The working directory a spare gives its cell is in the cell's own mount namespace:
    the shell's getcwd works (followed through /proc's link instead, it was the kernel's
    namespace's directory, and `sh` said "getcwd() failed")."""
    execute(kernel, "ready_spare()")
    execute(kernel, "get_ipython().run_cell_magic('isolate', '--pid --mount --sh', 'true')")
    execute(kernel, "ready_spare()")
    done = execute(kernel, "%%isolate --pid --mount --sh\n/bin/pwd")
    assert done.stderr == "" and done.stdout.strip() == execute(
        kernel, "import os\nos.getcwd()").value, done


HOSTILE = {
    "closes every fd": "import os\nos.closerange(0, 4096)",
    "leaves a daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
                       "    if os.fork() == 0:\n        time.sleep(600)\n    os._exit(0)\n'left'",
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                 "        break",
}


def test_hostile_cells_forked_by_spares_leave_the_kernel_answering(kernel):
    """Each hostile cell is forked by a spare (where spares are made): a fork bomb under
    --pids and a cell with a memory limit too (those run as before, with a user namespace
    or a cgroup); after each, the kernel answers and the next spare's cell runs."""
    for name, body in HOSTILE.items():
        flags = "--pid --net --timeout 30" + (" --pids 16 --memory 256M"
                                              if name == "fork bomb" else "")
        execute(kernel, "ready_spare()")
        done = execute(kernel, f"%%isolate {flags}\n{body}", timeout=60)
        assert done.status in ("ok", "error"), (name, done)
        assert execute(kernel, "1 + 1", timeout=5).value == 2, name
        execute(kernel, "ready_spare()")
        after = execute(kernel, "get_ipython().run_cell_magic('isolate', FLAGS, "
                                "'import os\\nos.getpid()')", timeout=30)
        assert after.value == 1, (name, after)


#: A cell's session keyring (its id) and whether it finds the key the cell before it added.
KEYRING = '''import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
KEYCTL, ADD_KEY = {'x86_64': (250, 248), 'aarch64': (219, 217)}[platform.machine()]
SESSION, SEARCH = -3, 10
mine = libc.syscall(KEYCTL, 0, SESSION, 0)
found = libc.syscall(KEYCTL, SEARCH, SESSION, b'user', b'left-by-the-cell-before', 0)
libc.syscall(ADD_KEY, b'user', b'left-by-the-cell-before', b'x', 1, SESSION)
(mine, found)'''


def test_cells_forked_by_spares_each_have_a_session_keyring_of_their_own(kernel):
    """The spare joins the cell's fresh session keyring ahead of time (a thread's own, as
    its namespaces are): the cell's is neither the kernel's nor the one of the cell before,
    and the key that cell added is not found."""
    done = execute(kernel, f"""
import ctypes, platform
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
kernels = _libc.syscall({{'x86_64': 250, 'aarch64': 219}}[platform.machine()], 0, -3, 0)
rings = []
for _ in range(3):
    ready_spare()
    rings.append(get_ipython().run_cell_magic('isolate', FLAGS, {KEYRING!r}))
(expected, ([False] * 3 + taken)[-3:], kernels, rings)
""", timeout=60)
    expected, taken, kernels, rings = done.value
    assert taken == [expected] * 3, done
    ids = [mine for mine, _found in rings]
    assert all(ring > 0 for ring in ids) and len({kernels, *ids}) == 4, done
    assert [found for _mine, found in rings] == [-1] * 3, done  # ENOKEY: not there


STREAMS = '''import sys
print('out'); print('err', file=sys.stderr)
[(s.fileno(), s.seekable(), s.writable(), s.line_buffering, s.closed)
 for s in (sys.stdin, sys.stdout, sys.stderr)] + [sys.stdin.read()]'''


def test_standard_streams_made_ahead_are_the_cells_own(kernel):
    """Where a spare made the cell's stream objects ahead of time, they are what the cell
    would have made: over descriptors 0-2, stdin /dev/null (seekable, empty), stdout and
    stderr its pipes (not seekable, line-buffered), and its output reaches the notebook."""
    expected_streams = [(0, True, False, False, False), (1, False, True, True, False),
                        (2, False, True, True, False), ""]
    execute(kernel, "ready_spare()")
    served = execute(kernel, f"%%isolate {FLAGS_LINE}\n{STREAMS}", timeout=30)
    alone = execute(kernel, f"%%isolate --pid --uts\n{STREAMS}", timeout=30)  # no spare
    for done in (served, alone):
        assert (done.stdout, done.stderr) == ("out\n", "err\n"), done
        assert done.value == expected_streams, done
    # Where cells get a user namespace, no spare is made and none is looked for.
    made = execute(kernel, "expected").value
    assert execute(kernel, "taken[-2:]").value == ([True, False] if made else [])


PROC_BENEATH = '''import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
gone = libc.umount2(b'/proc', 2) == 0  # MNT_DETACH
(gone, sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))'''


def test_a_cell_that_unmounts_its_proc_finds_nothing_beneath(kernel):
    """A spare detaches the kernel's /proc from its mount namespace ahead of the cell (the
    cell's PID 1 then only mounts its own); a cell that takes its /proc away finds an empty
    directory there, never the host's processes (or, where it may not, keeps its own). In
    the Isolated Python kernel the kernel's own /proc is locked in place beneath (a mount
    made in a user namespace above): a cell may see the kernel's few processes there, as
    the kernel itself does, and never the host's."""
    execute(kernel, "get_ipython().run_cell_magic('isolate', FLAGS, 'pass')\nready_spare()")
    served = execute(kernel, f"%%isolate {FLAGS_LINE}\n{PROC_BENEATH}", timeout=30)
    alone = execute(kernel, f"%%isolate --pid --uts\n{PROC_BENEATH}", timeout=30)
    for done in (served, alone):
        gone, pids = done.value
        if kernel.kernel_name == "isolated-python" and gone and pids:
            assert 1 in pids and len(pids) < 10, done  # the kernel's jail, not the host
        else:
            assert (gone, pids) in ((True, []), (False, [1])), done
    made = execute(kernel, "expected").value
    assert execute(kernel, "taken[-2:]").value == ([True, False] if made else [])


LAST_WORDS = '''import sys
sys.stdout.write('x' * 300000)
sys.stderr.write('no newline at the end')
42'''


def test_all_output_written_before_the_result_arrives(kernel):
    """The kernel stops at a cell's result once its streams have ended: output written
    just before the result (more than a pipe holds, a line without its end) is all there."""
    execute(kernel, "get_ipython().run_cell_magic('isolate', FLAGS, 'pass')\nready_spare()")
    served = execute(kernel, f"%%isolate {FLAGS_LINE}\n{LAST_WORDS}", timeout=30)
    alone = execute(kernel, f"%%isolate --pid --uts\n{LAST_WORDS}", timeout=30)
    for done in (served, alone):
        assert (done.stdout, done.stderr, done.value) == ("x" * 300000,
                                                          "no newline at the end", 42), (
            done.stdout[-20:], done.stderr, done.value)
