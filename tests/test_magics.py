"""The namespace magics, through real kernels: Isolated Python, and stock python3 + %load_ext."""

from __future__ import annotations

import os
import re
import socket
import subprocess

import pytest
from conftest import IS_ROOT, ROOT_ONLY, RUN_PREFIX, wait_for
from kernels import execute
from test_kernel_isolation import sysv_keys

from nskernel.kernel import identity

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cell(client, code: str, **kwargs):
    return execute(client, code, **kwargs)


def still_answers(kernel) -> None:
    """After whatever a cell did, the kernel answers at once."""
    assert execute(kernel, "1 + 1", timeout=5).value == 2


def one_line_error(done) -> str:
    """The text of a UsageError as IPython shows it: one line on stderr, no traceback."""
    assert done.status == "error" and done.error is None, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), done.stderr
    return lines[0]


# ---------------------------------------------------------------------------- loading
def test_magics_are_loaded_and_document_themselves(kernel):
    assert {"isolate", "uts", "netns"} <= set(cell(kernel, "sorted(get_ipython().magics_manager"
                                                           ".magics['cell'])").value)
    usage = cell(kernel, "%%isolate?").payload
    for flag in ("--pid", "--net", "--no-lo", "--timeout", "--export", "--sh", "--all"):
        assert flag in usage
    assert "%nsinfo [pid]" in cell(kernel, "%nsinfo?").payload
    assert "A[:ADDR/PREFIX] B[:ADDR/PREFIX]" in cell(kernel, "%veth?").payload


# ---------------------------------------------------------------------------- cell semantics
def test_the_cell_sees_notebook_variables_and_keeps_its_own(kernel):
    cell(kernel, "seen = 20; kept = 'outside'")
    done = cell(kernel, "%%isolate --pid\nkept = 'inside'\nnew = 1\nseen * 2 + 2")
    assert done.value == 42
    assert cell(kernel, "(kept, 'new' in dir())").value == ("outside", False)


def test_export_brings_names_back(kernel):
    cell(kernel, "%%isolate --net --export a,b\na = [1, 2]\nb = {'k': a}\nc = 3")
    assert cell(kernel, "(a, b, 'c' in dir())").value == ([1, 2], {"k": [1, 2]}, False)
    missing = cell(kernel, "%%isolate --export zz\nq = 1")
    assert missing.error == ("NameError", "--export: the cell did not define zz")


def test_cells_that_run_cells_of_their_own_one_after_another(kernel):
    """Cells run in a loop (no turn of the event loop between them), each running a cell of
    its own: a cell starts with none of the kernel's children to reap (it once tried to
    reap the cell before it, which is not its child, and failed)."""
    done = execute(kernel, """
inner = "get_ipython().run_cell_magic('isolate', '--pid --uts', 'import os\\\\nos.getpid()')"
[get_ipython().run_cell_magic('isolate', '--pid --net --mount --uts --ipc', inner)
 for _ in range(4)]
""", timeout=120)
    assert done.value == [1, 1, 1, 1], done


def test_an_exception_inside_is_raised_with_the_childs_traceback(kernel):
    done = cell(kernel, "%%isolate --pid\ndef inner():\n    return 1 / 0\ninner()")
    assert done.error == ("ZeroDivisionError", "division by zero")
    text = ANSI.sub("", done.traceback)
    assert "<isolated cell>" in text and "return 1 / 0" in text and "inner()" in text


def test_rich_display_inside_reaches_the_notebook(kernel):
    done = cell(kernel, "%%isolate\nfrom IPython.display import HTML, display\n"
                        "display(HTML('<b>from inside</b>'))")
    assert any(d.get("text/html") == "<b>from inside</b>" for d in done.displays)


def test_output_of_every_kind_streams_in(kernel):
    done = cell(kernel, "%%isolate --pid --net\nimport os, subprocess, sys\n"
                        "print('print')\nprint('stderr', file=sys.stderr)\n!echo bang\n"
                        "os.system('echo system')\nsubprocess.run(['echo', 'subprocess'])")
    for text in ("print", "bang", "system", "subprocess"):
        assert text in done.stdout
    assert "stderr" in done.stderr


def test_output_arrives_while_the_cell_runs(kernel):
    done = cell(kernel, "%%isolate --pid\nimport time\nfor i in range(4):\n"
                        "    print(i, flush=True)\n    time.sleep(0.4)")
    arrivals = [(stamp, text.split()) for stamp, name, text in done.outputs if name == "stdout"]
    assert [line for _, lines in arrivals for line in lines] == ["0", "1", "2", "3"]
    # Not one message at the end: several, spread over the 1.2 s the loop took (on a loaded
    # machine two lines may come in one read, so not necessarily four).
    assert len(arrivals) >= 2 and arrivals[-1][0] - arrivals[0][0] > 0.4, arrivals


# ---------------------------------------------------------------------------- isolation
def test_pid_makes_the_cell_pid_1_with_its_own_proc(kernel):
    done = cell(kernel, "%%isolate --pid\nimport os, subprocess\n"
                        "ps = subprocess.run(['ps', '-e', '-o', 'pid='], capture_output=True,"
                        " text=True).stdout.split()\n"
                        "(os.getpid(), os.getppid(), sorted(map(int, ps)))")
    pid, ppid, ps = done.value
    assert (pid, ppid) == (1, 0) and ps[0] == 1 and len(ps) == 2  # itself and ps


def test_net_has_only_lo_up_unless_no_lo(kernel):
    flags = "%%isolate --net\nimport socket\n"
    assert cell(kernel, flags + "socket.if_nameindex()").value == [(1, "lo")]
    up = cell(kernel, flags + "open('/sys/class/net/lo/operstate').read(), "
                              "open('/sys/class/net/lo/flags').read().strip()").value
    assert int(up[1], 16) & 1
    down = cell(kernel, "%%isolate --net --no-lo\nint(open('/sys/class/net/lo/flags').read(), 16)")
    assert not down.value & 1


def test_hostname_changes_do_not_leak(kernel):
    before = cell(kernel, "import socket; socket.gethostname()").value
    assert cell(kernel, "%%isolate --uts\nimport socket\nsocket.sethostname('inside-uts')\n"
                        "socket.gethostname()").value == "inside-uts"
    assert cell(kernel, "%%isolate --hostname given\nsocket.gethostname()").value == "given"
    assert cell(kernel, "%%uts short\nsocket.gethostname()").value == "short"
    assert cell(kernel, "socket.gethostname()").value == before


def test_mounts_inside_are_invisible_outside(kernel):
    point = f"/tmp/{RUN_PREFIX}-magic-mnt"
    cell(kernel, f"import os; os.makedirs({point!r}, exist_ok=True)")
    try:
        inside = cell(kernel, "%%isolate --mount\nimport subprocess, os\n"
                              f"subprocess.run(['mount', '-t', 'tmpfs', 'none', {point!r}], "
                              f"check=True)\nopen({point!r} + '/f', 'w').close()\n"
                              f"os.listdir({point!r})").value
        assert inside == ["f"]
        assert cell(kernel, f"os.listdir({point!r})").value == []
        assert point not in cell(kernel, "open('/proc/self/mountinfo').read()").value
    finally:
        cell(kernel, f"os.rmdir({point!r})")


def test_ipc_objects_are_private(kernel):
    inside = cell(kernel, "%%isolate --ipc\nimport subprocess\n"
                          "subprocess.run(['ipcmk', '-M', '4096'], capture_output=True)\n"
                          f"open('/dev/shm/{RUN_PREFIX}-magic', 'w').write('x')\n"
                          "open('/proc/sysvipc/shm').read()").value
    keys_inside = sysv_keys(inside)
    assert len(keys_inside) == 1  # ours alone: a new ipc namespace has nobody else's
    outside = cell(kernel, "import os; (open('/proc/sysvipc/shm').read(), "
                           f"os.path.exists('/dev/shm/{RUN_PREFIX}-magic'))").value
    assert keys_inside[0] not in sysv_keys(outside[0]) and outside[1] is False


def test_user_is_root_inside_and_nobody_outside(kernel, shared_dir):
    """Root inside maps to the kernel's own id outside: in a root Isolated Python kernel, the
    id of its own the kernel is on the host; in a root stock kernel, nobody; rootless, the
    kernel's user. Never to more than the kernel."""
    path = str(shared_dir / "made-by-root-inside")
    done = cell(kernel, f"%%isolate --user --mount\nimport os\nopen({path!r}, 'w').close()\n"
                        "(os.getuid(), os.getgid(), open('/proc/self/uid_map').read().split())")
    uid, gid, uid_map = done.value
    assert (uid, gid) == (0, 0)
    owner = (os.stat(path).st_uid, os.stat(path).st_gid)
    if not IS_ROOT:
        assert owner == (os.getuid(), os.getgid())
    elif kernel.kernel_name == "python3":
        assert owner == (65534, 65534)
    else:
        first, last = identity.DEFAULT_RANGE
        assert first <= owner[0] <= last and owner[1] == owner[0], owner
    assert uid_map[0] == "0" and uid_map[2] == "1", uid_map


def test_all_isolates_everything(kernel):
    done = cell(kernel, "%%isolate --all --hostname every\nimport os, socket\n"
                        "(os.getpid(), os.getuid(), socket.gethostname(), "
                        "[n for _, n in socket.if_nameindex()])")
    assert done.value == (1, 0, "every", ["lo"])


def test_sh_runs_a_shell_script_as_pid_1(kernel):
    done = cell(kernel, "%%isolate --sh --pid --net\necho $$\nhostname\nip -o link | wc -l")
    assert done.stdout.split()[0] == "1" and done.stdout.split()[-1] == "1"
    failed = cell(kernel, "%%isolate --sh\necho before\nexit 3")
    assert "before" in failed.stdout
    assert one_line_error(failed) == \
        "UsageError: the isolated shell script exited with status 3"


# ---------------------------------------------------------------------------- stopping
def test_timeout_stops_the_cell_and_what_it_started(kernel):
    done = cell(kernel, "%%isolate --timeout 0.5 --net\nimport subprocess, time\n"
                        f"subprocess.Popen(['sleep', '{SLEEP}'])\ntime.sleep(60)")
    assert one_line_error(done) == ("UsageError: isolated cell: timed out after 0.5 s: "
                                    "killed the cell and everything it started")
    assert cell(kernel, "1 + 1").value == 2
    assert not _sleepers()


@pytest.mark.parametrize("flags", ["--pid", "--pid --user"])
def test_interrupt_stops_the_cell_and_what_it_started(kernel, flags):
    """PID 1 is in a session of its own (see nskernel.cell.child): the kernel's own child,
    or with a user namespace its grandchild, to which the child passes the interrupt on."""
    done = cell(kernel, f"%%isolate {flags}\nimport subprocess, time\n"
                        f"subprocess.Popen(['sleep', '{SLEEP}'], start_new_session=True)\n"
                        "print('ready', flush=True)\ntime.sleep(100)",
                interrupt=(kernel.test_manager, "ready"))
    assert done.error is not None and done.error[0] == "KeyboardInterrupt", done
    assert cell(kernel, "1 + 1").value == 2
    assert wait_for(lambda: not _sleepers(), timeout=5)


#: How long this run's stray sleepers would sleep: a number no other run uses, so that
#: looking for them on the host finds only ours.
SLEEP = f"77.{RUN_PREFIX[1:]}"


def _sleepers() -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"^sleep {re.escape(SLEEP)}$"], capture_output=True,
                         text=True)
    return out.stdout.split()


def test_a_body_that_kills_itself_gets_one_line(kernel):
    done = cell(kernel, "%%isolate --net\nimport os, signal\nos.kill(os.getpid(), 9)")
    assert "was killed by signal SIGKILL" in one_line_error(done)
    # PID 1 cannot be killed from inside its own namespace: the signal is dropped
    survived = cell(kernel, "%%isolate --pid\nimport os\nos.kill(1, 9)\n'survived'")
    assert survived.value == "survived"
    done = cell(kernel, "%%isolate --net\nimport os\nos._exit(4)")
    assert "exited with status 4 before returning a result" in one_line_error(done)


def test_a_body_that_forks_a_thousand_processes_is_cleaned_up(kernel):
    done = cell(kernel, "%%isolate --pid --timeout 120\nimport os, time\n"
                        "for _ in range(1000):\n    if os.fork() == 0:\n"
                        "        time.sleep(30); os._exit(0)\n"
                        "len([p for p in os.listdir('/proc') if p.isdigit()])", timeout=150)
    assert done.value >= 1000
    assert cell(kernel, "1 + 1").value == 2


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("code", "message"), [
    ("%%isolate --bogus\n1", "unrecognized arguments: --bogus"),
    ("%%isolate --hostname under_score\n1", "bad hostname 'under_score'"),
    ("%%isolate --timeout -1\n1", "--timeout: give a finite number of seconds above 0"),
    ("%%isolate --timeout soon\n1", "argument --timeout: invalid float value: 'soon'"),
    ("%%isolate --export 1a\n1", "--export: 1a is not a Python name"),
    ("%%isolate --no-pid --no-net --no-mount --no-uts --no-ipc\n1", "no namespace chosen"),
    ("%%isolate\nx = (1,", "isolated cell, line 1: '(' was never closed"),
    ("%%uts\n1", "the following arguments are required: hostname"),
    ("%%isolate --hostname 'unbalanced\n1", "No closing quotation"),
    ("%nsinfo 999999", "no process 999999"),
    ("%%isolate --readonly --bind relative/dir\n1", "bind 'relative/dir': give an absolute path"),
    ("%%isolate --bind /tmp\n1", "--bind shows a directory in a read-only view: add --readonly"),
    ("%%isolate --readonly --tmpfs-size lots\n1", "bad size 'lots': give a number with k, m or g"),
    ("%%isolate --readonly --bind /nonexistent-nskernel\n1",
     "bind /nonexistent-nskernel: No such file"),
    ("%%isolate --memory lots\n1", "--memory 'lots': give a size above 0, as 64M or 2G"),
    ("%%isolate --fsize 0\n1", "--fsize '0': give a size above 0"),
    ("%%isolate --pids 0\n1", "--pids 0: give a whole number above 0"),
    ("%%isolate --cpu-time -3\n1", "--cpu-time -3: give a whole number above 0"),
    ("%%isolate --nofile many\n1", "argument --nofile: invalid int value: 'many'"),
])
def test_bad_input_gets_one_line(kernel, code, message):
    assert message in one_line_error(cell(kernel, code))
    assert cell(kernel, "1 + 1").value == 2


# ---------------------------------------------------------------------------- %%netns
def test_netns_runs_in_a_named_namespace_and_lists_the_others(kernel):
    if kernel.kernel_name == "python3" and not IS_ROOT:
        pytest.skip(ROOT_ONLY)
    name = f"{RUN_PREFIX}-magic"
    assert cell(kernel, f"!ip netns add {name}").status == "ok"
    try:
        inode = cell(kernel, f"import os; os.stat('/run/netns/{name}').st_ino").value
        inside = cell(kernel, f"%%netns {name}\nimport os\n"
                              "(os.readlink('/proc/self/ns/net'), os.listdir('/sys/class/net'))")
        assert inside.value == (f"net:[{inode}]", ["lo"])
        sh = cell(kernel, f"%%netns {name} --sh\nip -o link | wc -l")
        assert sh.stdout.strip() == "1"
        error = one_line_error(cell(kernel, "%%netns no-such-ns\n1"))
        assert "no network namespace named 'no-such-ns'" in error and name in error
    finally:
        cell(kernel, f"!ip netns del {name}")


# ---------------------------------------------------------------------------- %nsinfo
def test_nsinfo_compares_with_the_host_or_parent(kernel):
    done = cell(kernel, "%nsinfo")
    table = {row.split()[0]: row.split() for row in done.result.splitlines()[3:]}
    isolated = cell(kernel, "import os; os.getpid()").value == 2
    for name in ("pid", "net", "mnt", "uts", "ipc"):
        assert table[name][-1] == ("private" if isolated else "shared"), table
    html = cell(kernel, "%nsinfo").result
    assert html  # text form; the HTML form:
    rich = cell(kernel, "from IPython.display import display; display(_)")
    assert any("<table" in d.get("text/html", "") for d in rich.displays)


def test_nsinfo_of_a_child_in_new_namespaces(kernel):
    done = cell(kernel, "import os, subprocess, time\np = subprocess.Popen(['unshare', '--user', "
                        "'--map-root-user', '--net', 'sleep', '30'])\n"
                        "while os.readlink(f'/proc/{p.pid}/ns/net') == "
                        "os.readlink('/proc/self/ns/net'):\n    time.sleep(0.01)\np.pid")
    try:
        table = cell(kernel, f"%nsinfo {done.value}").result
        assert f"Namespaces of process {done.value} compared with" in table
        net_row = next(row for row in table.splitlines() if row.startswith("net "))
        assert net_row.split()[-1] == "private"  # the unshare --net child
    finally:
        cell(kernel, "p.kill(); p.wait()")


# ---------------------------------------------------------------------------- many cells
def test_a_thousand_cells_leave_fds_threads_and_children_as_they_were(kernel):
    probe = ("import os, threading; (len(os.listdir('/proc/self/fd')), threading.active_count(),"
             " sum(len(open(f'/proc/self/task/{t}/children').read().split()) "
             "for t in os.listdir('/proc/self/task')))")
    # Once per kernel: the thread that starts spares, and a spare (see nskernel.cell.spare).
    cell(kernel, "get_ipython().run_cell_magic('isolate', '--pid --net', 'x = 1')")
    cell(kernel, probe)
    fds, threads, children = cell(kernel, probe).value
    done = cell(kernel, "for _ in range(1000):\n"
                        "    get_ipython().run_cell_magic('isolate', '--pid --net', 'x = 1')",
                timeout=300)
    assert done.status == "ok", done

    def settled() -> bool:  # the last child is reaped by the event loop once it has exited
        fds_after, threads_after, children_after = cell(kernel, probe).value
        return fds_after <= fds and (threads_after, children_after) == (threads, children)

    assert wait_for(settled, timeout=5, step=0.2), cell(kernel, probe).value


def test_python_api_returns_the_functions_value():
    import nskernel

    def hostname_and_pid() -> tuple:
        return socket.gethostname(), os.getpid()

    assert nskernel.isolate(hostname_and_pid, uts=True, pid=True, hostname="api") == ("api", 1)
    with pytest.raises(ZeroDivisionError):
        nskernel.isolate(lambda: 1 / 0, net=True)


def test_a_commands_exit_status_is_its_own_every_time():
    """The status of an exec'd command comes from the process between it and us (a pid
    namespace under a user namespace): it must be left to exit, not killed once the
    command's output ends (which reported SIGKILL, 137, for most runs on a loaded machine)."""
    from nskernel.cell import runner
    from nskernel.isolation import Isolation

    spec = Isolation(pid=True, user=True)
    statuses = [runner.run(spec, ["/bin/sh", "-c", "exit 3"], on_stream=lambda *_: None)
                for _ in range(50)]
    assert set(statuses) == {3}, statuses


def test_the_lab_inside_an_isolated_cell_says_where_it_works(kernel):
    done = cell(kernel, "%%isolate --net\n%ip")
    assert one_line_error(done) == (
        "UsageError: %ip: the network lab is run by the kernel itself, not from inside an "
        "isolated cell: use the lab magics in a normal cell")


def test_names_and_expressions_in_a_magic_line_are_expanded(kernel):
    execute(kernel, "box = 'expanded'")
    done = cell(kernel, "%%isolate --hostname $box --uts\nimport socket\nsocket.gethostname()")
    assert done.value == "expanded"
    done = cell(kernel, "%%isolate --hostname {box.upper()}-2 --uts\n"
                        "import socket\nsocket.gethostname()")
    assert done.value == "EXPANDED-2"


def completions(client, code: str) -> list[str]:
    """What Tab offers at the end of ``code``'s first line (a complete_request)."""
    msg_id = client.complete(code, len(code.splitlines()[0]))
    while True:
        reply = client.get_shell_msg(timeout=10)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]["matches"]


def test_tab_offers_a_magics_options_and_nothing_else(kernel):
    assert completions(kernel, "%%isolate --mem\n1") == ["--memory"]
    offered = completions(kernel, "%%isolate --")
    assert {"--pid", "--jail", "--readonly", "--cpus", "--stats"} <= set(offered)
    assert all(option.startswith("--") for option in offered), offered
    assert completions(kernel, "%%uts --time") == ["--timeout"]
    # Elsewhere, Python as before.
    assert "os" in completions(kernel, "import o")


def test_tab_offers_the_labs_namespace_names(start_kernel):
    _manager, client = start_kernel("isolated-python")
    execute(client, "%netns add alpha beta")
    try:
        assert completions(client, "%netns ") == ["add", "del", "list", "reset"]
        assert completions(client, "%netns del a") == ["alpha"]
        assert completions(client, "%%netns b\n1") == ["beta"]
        assert completions(client, "%veth al") == ["alpha:"]
        assert completions(client, "%veth alpha:10.0.0.1/24 b") == ["beta:"]
    finally:
        execute(client, "%netns reset")


@pytest.mark.parametrize("kernel_name", ["isolated-python", "python3"])
def test_an_interrupted_or_failing_cell_shows_no_frame_of_ours(start_kernel, kernel_name):
    """As a stock kernel shows them: the user's line, the child's traceback of the user's
    own code, never nskernel's frames."""
    import re
    import threading

    manager, client = start_kernel(kernel_name)
    cell(client, "%load_ext nskernel")
    timer = threading.Timer(1.0, manager.interrupt_kernel)
    timer.start()
    try:
        done = cell(client, "%%isolate --pid\nimport time\ntime.sleep(30)", timeout=30)
    finally:
        timer.cancel()
    shown = re.sub(r"\x1b\[[0-9;]*m", "", done.traceback)
    assert done.error[0] == "KeyboardInterrupt", done
    assert "nskernel/" not in shown and len(shown.splitlines()) <= 8, shown
    done = cell(client, "%%isolate --uts\ndef f():\n    raise ValueError('inside')\nf()")
    shown = re.sub(r"\x1b\[[0-9;]*m", "", done.traceback)
    assert done.error == ("ValueError", "inside")
    assert "raise ValueError('inside')" in shown and "nskernel/" not in shown, shown
    still_answers(client)


def test_a_cell_keeps_only_the_descriptors_handed_to_it(kernel):
    """A cell inherits none of the kernel's descriptors, but those named with --pass-fd."""
    cell(kernel, "import socket\nkernel_end, cell_end = socket.socketpair()\n"
                 "kernel_end.sendall(b'over the pair')")
    kept = cell(kernel, "%%isolate --all --pass-fd cell_end\ncell_end.recv(100)")
    assert kept.value == b"over the pair"
    closed = cell(kernel, "%%isolate --all\nimport errno\ntry:\n    cell_end.recv(1)\n"
                          "except OSError as exc:\n    result = errno.errorcode[exc.errno]\n"
                          "result")
    assert closed.value == "EBADF"
    as_number = cell(kernel, "%%isolate --pid --sh --pass-fd {}\nls /proc/self/fd".format(
        cell(kernel, "cell_end.fileno()").value))
    assert as_number.status == "ok"


@pytest.mark.parametrize(("flag", "says"), [
    ("--pass-fd nothing_here", "the notebook has no variable 'nothing_here'"),
    ("--pass-fd not_a_file", "not an open socket or file"),
    ("--pass-fd 1", "give a descriptor above 2"),
    ("--pass-fd 987654", "descriptor 987654 is not open"),
])
def test_a_bad_pass_fd_is_one_line(kernel, flag, says):
    cell(kernel, "not_a_file = 'text'")
    done = cell(kernel, f"%%isolate --pid {flag}\n1")
    assert done.status == "error" and says in done.stderr and "Traceback" not in done.stderr
