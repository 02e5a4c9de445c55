"""What the code inside an Isolated Python kernel sees: each isolation property, from inside."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

from conftest import IS_ROOT, RUN_PREFIX
from kernels import execute

from nskernel import launch
from nskernel.kernel import identity


def test_pid_namespace_kernel_is_small_pid_under_an_init(isolated):
    _manager, client = isolated
    pid, ppid, init = execute(client, "import os; (os.getpid(), os.getppid(), "
                                      "open('/proc/1/comm').read().strip())").value
    assert (pid, ppid, init) == (2, 0, "dumb-init")  # the launcher, its parent, is outside


def test_proc_and_ps_show_only_the_kernels_processes(isolated):
    _manager, client = isolated
    pids = execute(client, "sorted(int(p) for p in os.listdir('/proc') if p.isdigit())").value
    # init, kernel, init's sleep, maybe a short-lived helper
    assert pids[:2] == [1, 2] and len(pids) <= 4, pids
    ps = execute(client, "!ps -e -o pid=,comm=").stdout.splitlines()
    commands = [line.split(None, 1)[1].strip() for line in ps if line.strip()]
    assert [commands[0], commands[1][:6], commands[2]] == ["dumb-init", "python", "sleep"], ps
    assert "ps" in commands, ps
    assert len(commands) <= 5, ps


def test_hostname_is_the_specs_and_does_not_leak(isolated):
    _manager, client = isolated
    assert execute(client, "import socket; socket.gethostname()").value == "isolated"
    execute(client, "!hostname changed-inside")
    assert execute(client, "socket.gethostname()").value == "changed-inside"
    assert socket.gethostname() != "changed-inside"
    execute(client, "!hostname isolated")


def test_network_has_only_loopback_and_it_is_up(isolated):
    _manager, client = isolated
    links = execute(client, "sorted(os.listdir('/sys/class/net'))").value
    assert links == ["lo"]
    assert "UP" in execute(client, "!ip -o link show lo").stdout
    # lo works: a TCP round trip inside the kernel's namespace
    code = ("s = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection("
            "s.getsockname()); a, _ = s.accept(); c.sendall(b'hi'); a.recv(2)")
    assert execute(client, code).value == b"hi"


def test_kernel_ports_are_not_reachable_from_inside(isolated):
    manager, client = isolated
    port = manager.shell_port
    code = f"socket.socket().connect_ex(('127.0.0.1', {port}))"
    assert execute(client, code).value != 0  # refused: its own lo, not the host's


def test_mounts_inside_do_not_leak(isolated):
    _manager, client = isolated
    # Below the working directory, which the kernel sees as the host's (/tmp and /var/tmp
    # are its own).
    point = Path(tempfile.mkdtemp(dir=os.getcwd(), prefix=f".{RUN_PREFIX}-mnt-"))
    try:
        execute(client, f"!mount -t tmpfs none {point} && touch {point}/inside")
        assert execute(client, f"os.listdir({str(point)!r})").value == ["inside"]
        assert os.listdir(point) == []
        assert str(point) not in Path("/proc/self/mountinfo").read_text()
    finally:
        execute(client, f"!umount {point}")
        point.rmdir()


def test_each_kernel_has_a_tmp_of_its_own(isolated, start_kernel):
    """Every isolated kernel is PID 2: in a shared /tmp, a root kernel's
    /tmp/ipykernel_2 (mode 0700) would break the debugger of every other kernel."""
    _manager, client = isolated
    _other_manager, other = start_kernel()
    name = f"/tmp/{RUN_PREFIX}-own-tmp"
    assert execute(client, f"open({name!r}, 'w').write('first')").value == 5
    assert execute(other, f"import os; os.path.exists({name!r})").value is False
    assert not os.path.exists(name)
    host_file = Path(f"/tmp/{RUN_PREFIX}-host-tmp")
    host_file.write_text("the host's")
    try:
        assert execute(other, f"os.path.exists({str(host_file)!r})").value is False
    finally:
        host_file.unlink()
    assert "tmpfs" in execute(other, "!grep ' /tmp ' /proc/self/mounts").stdout


def sysv_keys(table: str) -> list[str]:
    """The keys in a /proc/sysvipc table's text (its first column, after the header)."""
    return [line.split()[0] for line in table.splitlines()[1:]]


def test_system_v_and_posix_ipc_are_private(isolated):
    _manager, client = isolated
    code = ("import subprocess; subprocess.run(['ipcmk', '-Q'], capture_output=True); "
            f"open('/dev/shm/{RUN_PREFIX}-shm', 'w').write('x'); "
            "open('/proc/sysvipc/msg').read()")
    inside = sysv_keys(execute(client, code).value)
    assert len(inside) == 1  # ours alone: the kernel's namespace has nobody else's
    assert inside[0] not in sysv_keys(Path("/proc/sysvipc/msg").read_text())
    assert not os.path.exists(f"/dev/shm/{RUN_PREFIX}-shm")


def test_namespaces_differ_from_the_host(isolated):
    _manager, client = isolated
    code = "{n: os.readlink(f'/proc/self/ns/{n}') for n in ('pid', 'net', 'mnt', 'uts', 'ipc')}"
    inside = execute(client, code).value
    for name, link in inside.items():
        assert link != os.readlink(f"/proc/self/ns/{name}"), name


def test_the_kernel_always_has_a_user_namespace_of_its_own(isolated):
    _manager, client = isolated
    uid_map = execute(client, "open('/proc/self/uid_map').read().split()").value
    if IS_ROOT:  # a root kernel is an id of its own on the host, from the reserved range
        first, last = identity.DEFAULT_RANGE
        assert uid_map[0::2] == ["0", "1"] and first <= int(uid_map[1]) <= last, uid_map
    else:
        # Relative to the launcher's user namespace, whose root is the user (a rootless
        # kernel's namespaces are owned by a user namespace nested in that one).
        assert uid_map == ["0", "0", "1"]


def test_ipc_transport_works(start_kernel):
    _manager, client = start_kernel(transport="ipc")
    assert execute(client, "import os; os.getpid()").value == 2


def test_subprocess_output_and_fork_reach_the_notebook(isolated):
    _manager, client = isolated
    done = execute(client, "import subprocess; subprocess.run(['echo', 'from child'])\n"
                           "!echo from bang\nos.system('echo from system')\n"
                           "if os.fork() == 0: print('from fork', flush=True); os._exit(0)\n"
                           "os.wait(); print('from kernel')")
    assert done.error is None
    for text in ("from child", "from bang", "from system", "from fork", "from kernel"):
        assert text in done.stdout


def test_kernel_launcher_processes_outside(isolated):
    manager, _client = isolated
    launcher = manager.provisioner.pid
    comm = Path(f"/proc/{launcher}/comm").read_text().strip()
    assert comm == "nskernel-launch"
    children = subprocess.run(["ps", "--ppid", str(launcher), "-o", "args="],
                              capture_output=True, text=True).stdout.splitlines()
    names = sorted(Path(line.split()[0]).name for line in children)
    # As root, beside init and kernel: the keeper that removes the kernel's cgroup at the end.
    keeper = [launch.KEEPER_NAME] if IS_ROOT else []
    assert [name[:6] for name in names] == sorted(
        name[:6] for name in ["dumb-init", "python", *keeper]), children
