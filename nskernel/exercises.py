"""Checkers for the exercises at the end of each tutorial notebook (notebooks/NN-*.ipynb).

Each checker looks at the real thing the exercise asks the learner to make or find out — the
network lab, a namespace, a file, a process, a value a cell brought back with ``--export`` —
and prints one line: ``correct``, or ``not yet:`` and what is still wrong. It returns the
verdict as a bool, so a test (or a teacher's notebook) can use it too. A value a cell brought
back is read from the notebook by its name (the exercise says which), and is judged against
what the checker measures itself where it can, so that a number copied from the notebook's
text does not pass for one the learner's own cell found.

    from nskernel import exercises
    exercises.pid1_view()

Checkers never change what they inspect: what an exercise builds, the learner removes.
"""

from __future__ import annotations

import ast
import errno
import functools
import ipaddress
import os
import random
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "pid1_view", "sleeper_gone",                                # 01
    "two_hops", "cut_off",                                      # 02
    "covered_by_tmpfs", "readonly_cell",                        # 03
    "hostname_inside", "queue_inside",                          # 04
    "pid1_of_unshare", "orphan_adopted",                        # 05
    "sums_the_data", "stopped_by_wall_clock",                   # 06
    "third_lan", "no_way_back",                                 # 07
    "cell_interfaces", "shared_namespaces",                     # 08
    "uptime_command", "cgroup_namespaces",                      # 09
    "sethostname_capability", "landlock_read",                  # 10
    "published_port", "plain_routing",                          # 11
    "image_runs", "overlay_order",                              # 12
    "two_loops", "threads_counted",                             # 13
    "bomb_stopped", "overlay_container",                        # 14
]


class NotYet(Exception):
    """What is still wrong, in one line: the checker prints it after ``not yet:``."""


def checker(function: Callable[..., None]) -> Callable[..., bool]:
    """A checker: the wrapped function raises :class:`NotYet` for what is wrong; the
    checker prints ``correct`` or ``not yet: ...`` and returns the verdict."""

    @functools.wraps(function)
    def check(*args: Any, **kwargs: Any) -> bool:
        try:
            function(*args, **kwargs)
        except NotYet as wrong:
            verdict = f"not yet: {wrong}"
        else:
            verdict = "correct"
        sys.stdout.write(verdict + "\n")  # one write: one stream output in the notebook
        return verdict == "correct"

    return check


_MISSING = object()


def answer(name: str, how: str) -> Any:
    """The notebook's variable ``name`` (what the learner's cell set or exported); NotYet
    saying ``how`` to make it when there is none."""
    from IPython import get_ipython

    shell = get_ipython()
    value = shell.user_ns.get(name, _MISSING) if shell is not None else _MISSING
    if value is _MISSING:
        raise NotYet(f"no `{name}` in the notebook yet: {how}")
    return value


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
    if "sleep" not in listing.values():
        raise NotYet(f"no sleep in {path}: start `sleep 60 &` before ps")
    alive = _processes_running(["sleep", "60"])
    if alive:
        raise NotYet(f"a `sleep 60` still runs in the kernel's namespace (PID {alive[0]}): it was "
                     "started out here; kill it, and start yours in the isolated cell")


# ---------------------------------------------------------------------------- 02
def _lab() -> Any:
    import nskernel

    return nskernel.lab()


def _need_namespaces(*names: str) -> None:
    from nskernel.netlab.netns import named_namespaces

    there = named_namespaces()
    missing = [name for name in names if name not in there]
    if missing:
        raise NotYet(f"no network namespace {missing[0]!r} yet (%netns add {' '.join(missing)})")


def _addresses(ns: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses of a namespace, loopback's left out."""
    found = [ipaddress.IPv4Interface(a["address"]) for a in _lab().state(ns)["addresses"]
             if a["family"] == socket.AF_INET]
    return [a for a in found if not a.ip.is_loopback]


def _forwards(ns: str) -> bool:
    return _lab().run_in(ns, lambda: open("/proc/sys/net/ipv4/ip_forward").read().strip()) == "1"


def _pings(source: str, address: str) -> bool:
    from nskernel import probe

    # Two tries: the first echo of a path just built may be lost while its ends learn
    # each other's addresses (ARP) and a new bridge's ports settle.
    return probe.ping(_lab(), source, address, count=2, timeout=0.5).ok


@checker
def two_hops(left: str = "left", middle: str = "middle", right: str = "right") -> None:
    """02: three namespaces in a row, linked left–middle–right, and ``left`` reaches
    ``right`` through ``middle``, which forwards."""
    _need_namespaces(left, middle, right)
    far = _addresses(right)
    if not far:
        raise NotYet(f"{right} has no IPv4 address yet: link it to {middle} with %veth")
    if not _addresses(left):
        raise NotYet(f"{left} has no IPv4 address yet: link it to {middle} with %veth")
    if any(far[0].ip in near.network for near in _addresses(left)):
        raise NotYet(f"{left} and {right} are on one LAN ({far[0].network}): give each link "
                     f"its own network, so that packets must cross {middle}")
    if not _forwards(middle):
        raise NotYet(f"{middle} does not forward packets yet (%forward {middle} on)")
    if not _pings(left, str(far[0].ip)):
        raise NotYet(f"{left} gets no reply from {far[0].ip}: does {left} have a route to it "
                     f"through {middle}, and {right} one back?")


@checker
def cut_off(ns: str = "left", far: str = "right") -> None:
    """02: every interface of ``ns`` (but lo) set down with ``ip``, so ``far`` is out of reach."""
    _need_namespaces(ns, far)
    up = [link["ifname"] for link in _lab().state(ns)["links"]
          if link["ifname"] != "lo" and link["state"] == "up"]
    if up:
        raise NotYet(f"{up[0]} in {ns} is still up (ip -n {ns} link set {up[0]} down)")
    targets = _addresses(far)
    if targets and _pings(ns, str(targets[0].ip)):
        raise NotYet(f"{ns} still reaches {targets[0].ip}")


# ---------------------------------------------------------------------------- 03
@checker
def covered_by_tmpfs(path: str = "/tmp/covered", listing: str = "/tmp/listing-inside") -> None:
    """03: a tmpfs mounted over ``path`` in a ``%%isolate --mount`` cell, its listing there
    saved to ``listing``; the kernel still sees the files below."""
    if not os.path.isdir(path):
        raise NotYet(f"no {path}: run the cell above that makes it")
    if os.path.ismount(path):
        raise NotYet(f"{path} is a mount point in the kernel: mount it in a %%isolate --mount "
                     f"cell, not here (umount {path})")
    below = sorted(os.listdir(path))
    if not below:
        raise NotYet(f"the kernel's {path} is empty: run the cell above that fills it")
    try:
        inside = open(listing).read().split()
    except FileNotFoundError:
        raise NotYet(f"no {listing} yet: save `ls {path}` there from inside the cell") from None
    if set(inside) & set(below):
        raise NotYet(f"{listing} shows the files below the mount ({below[0]}): list {path} "
                     "after mounting the tmpfs over it")


@checker
def readonly_cell(error_name: str = "etc_error", file_name: str = "tmp_file") -> None:
    """03: in a ``%%isolate --pid --readonly`` cell, the error a write to /etc met and the
    path of a file written in /tmp, both exported."""
    etc_error = answer(error_name, f"export the strerror of a write to /etc as {error_name}")
    tmp_file = answer(file_name, f"export the path of the file you wrote in /tmp as {file_name}")
    if etc_error != os.strerror(errno.EROFS):
        raise NotYet(f"`{error_name}` is {etc_error!r}: was the cell --readonly, and is it the "
                     "error's strerror?")
    if not isinstance(tmp_file, str) or not tmp_file.startswith("/tmp/"):
        raise NotYet(f"`{file_name}` is {tmp_file!r}, not a path in /tmp")
    if os.path.exists(tmp_file):
        raise NotYet(f"{tmp_file} is in the kernel's /tmp: write it from the --readonly cell, "
                     "whose /tmp is a fresh one of its own")


# ---------------------------------------------------------------------------- 04
@checker
def hostname_inside(name: str = "inside_name", hostname: str = "box") -> None:
    """04: the hostname a ``%%isolate --hostname box`` cell saw, exported; the kernel's
    unchanged."""
    if socket.gethostname() == hostname:
        raise NotYet(f"the kernel itself is now called {hostname}: name only the cell "
                     "(socket.sethostname('isolated') puts the kernel's name back)")
    seen = answer(name, f"export socket.gethostname() from a %%isolate --hostname {hostname} "
                        f"cell as {name}")
    if seen != hostname:
        raise NotYet(f"`{name}` is {seen!r}: read it inside a %%isolate --hostname {hostname} "
                     "cell")


def _message_queues() -> list[str]:
    """Keys of the System V message queues of this IPC namespace."""
    with open("/proc/sysvipc/msg") as table:
        return [line.split()[0] for line in table.read().splitlines()[1:] if line.strip()]


@checker
def queue_inside(listing: str = "/tmp/queues-inside") -> None:
    """04: a queue made with ``ipcmk -Q`` in a ``%%isolate --ipc`` cell, listed there with
    ``ipcs -q`` into ``listing``; none in the kernel's IPC namespace."""
    here = _message_queues()
    if here:
        raise NotYet(f"the kernel's own IPC namespace has {len(here)} queue(s): that ipcmk ran "
                     "here, not in a %%isolate --ipc cell (ipcrm --all=msg removes them)")
    try:
        text = open(listing).read()
    except FileNotFoundError:
        raise NotYet(f"no {listing} yet: save `ipcs -q` there from inside the cell") from None
    if not any(line.startswith("0x") for line in text.splitlines()):
        raise NotYet(f"no queue in {listing}: run ipcmk -Q before ipcs -q")


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
        if usage is not None and usage.cpu > 0.5:
            raise NotYet(f"it used {usage.cpu:.1f} s of CPU in its second: a CPU-time limit "
                         "would stop it too; make it wait without computing") from None
        return
    raise NotYet(f"it ended by itself (printing {ran.value.strip()[:30]!r}): it must never end")


# ---------------------------------------------------------------------------- 07
def _has_bridge(ns: str, name: str) -> bool:
    return any(link["ifname"] == name and link["kind"] == "bridge"
               for link in _lab().state(ns)["links"])


def _default_route(ns: str) -> bool:
    return any(route["dst"] == "default" for route in _lab().state(ns)["routes"])


@checker
def third_lan(host: str = "pc", address: str = "10.10.3.31", bridge: str = "lab",
              switch: str = "sw", router: str = "gw", source: str = "alice") -> None:
    """07: a third LAN, bridge ``bridge`` in ``switch`` with ``host`` at ``address`` and the
    router on it, reached from the office LAN."""
    _need_namespaces(source, switch, router, host)
    if not _has_bridge(switch, bridge):
        raise NotYet(f"no bridge {bridge!r} in {switch} yet (%bridge {bridge} ... --in {switch})")
    if ipaddress.IPv4Address(address) not in [a.ip for a in _addresses(host)]:
        raise NotYet(f"{host} does not have the address {address} yet")
    lan = next(a.network for a in _addresses(host) if str(a.ip) == address)
    if not any(a.ip in lan for a in _addresses(router)):
        raise NotYet(f"{router} has no address in {lan}: plug it into {bridge} too")
    if not _pings(source, address):
        raise NotYet(f"{source} gets no reply from {address}: does {host} have a default route "
                     f"through {router}'s address on its LAN?")


@checker
def no_way_back(host: str = "db", source: str = "alice", neighbour: str = "web") -> None:
    """07: ``host`` without its default route: ``source``'s ping gets no answer, while
    ``host`` still answers its own LAN."""
    _need_namespaces(host, source, neighbour)
    if _default_route(host):
        raise NotYet(f"{host} still has a default route (ip -n {host} route del default)")
    if not _default_route(source):
        raise NotYet(f"{source} has no default route: its pings must still reach {host}")
    target = str(_addresses(host)[0].ip)
    if _pings(source, target):
        raise NotYet(f"{source} still gets replies from {target}")
    if not _pings(neighbour, target):
        raise NotYet(f"{neighbour} gets no reply from {host} either: only its way to other "
                     "LANs should be gone")


# ---------------------------------------------------------------------------- 08
@checker
def cell_interfaces(name: str = "cell_interfaces") -> None:
    """08: the interface names a ``%%isolate --net`` cell sees, exported from the stock kernel."""
    import nskernel

    given = answer(name, f"export the names from socket.if_nameindex() in a %%isolate --net "
                         f"cell as {name}")
    if list(given) == [n for _, n in socket.if_nameindex()] and len(given) > 1:
        raise NotYet("those are this kernel's own interfaces: list them inside the cell")
    truth = nskernel.isolate(lambda: [n for _, n in socket.if_nameindex()], net=True)
    if sorted(given) != sorted(truth):
        raise NotYet(f"`{name}` is {given!r}: not what a new network namespace holds")


#: The eight kinds, as /proc/PID/ns names them, and the launcher flag of each.
_FLAGS = {"cgroup": None, "ipc": "--ipc", "mnt": "--mount", "net": "--net", "pid": "--pid",
         "time": None, "user": None, "uts": "--uts"}


@checker
def shared_namespaces(name: str = "shared", kernel: str = "isolated-python") -> None:
    """08: the kinds of namespace the Isolated Python kernel shares with the machine, judged
    from its installed kernelspec (a user namespace it always has of its own)."""
    from jupyter_client.kernelspec import KernelSpecManager

    given = answer(name, f"set {name} to a set of names, such as {{'uts'}}")
    given = {"mnt" if kind == "mount" else kind for kind in given}
    argv = KernelSpecManager().get_kernel_spec(kernel).argv
    truth = {kind for kind, flag in _FLAGS.items() if kind != "user" and flag not in argv}
    unknown = given - set(_FLAGS)
    if unknown:
        raise NotYet(f"{sorted(unknown)[0]!r} is not a kind of namespace: "
                     "see ls /proc/self/ns")
    if given - truth:
        raise NotYet(f"the kernel has its own {sorted(given - truth)[0]} namespace")
    if truth - given:
        raise NotYet(f"{len(truth - given)} more kind(s) are shared: compare the columns of "
                     "%nsinfo in the isolated kernel")


# ---------------------------------------------------------------------------- 09
def _uptime(argv: list[str] | None = None) -> float:
    run = subprocess.run(argv or ["cat", "/proc/uptime"], capture_output=True, text=True,
                         timeout=10)
    if run.returncode != 0:
        raise NotYet(f"{' '.join(argv or [])} failed: {run.stderr.strip()[:80]}")
    try:
        return float(run.stdout.split()[0])
    except (IndexError, ValueError):
        raise NotYet(f"it printed {run.stdout[:40]!r}, not /proc/uptime") from None


@checker
def uptime_command(name: str = "command", days: int = 2) -> None:
    """09: an ``unshare`` command line (a list) whose ``cat /proc/uptime`` shows an uptime
    ``days`` longer than the machine's; the checker runs it."""
    command = answer(name, f"set {name} to a list, such as ['unshare', ..., 'cat', '/proc/uptime']")
    if not (isinstance(command, list) and command and all(isinstance(w, str) for w in command)
            and command[0] == "unshare" and command[-2:] == ["cat", "/proc/uptime"]):
        raise NotYet(f"`{name}` must be a list of strings: 'unshare', its options, "
                     "'cat', '/proc/uptime'")
    ahead = _uptime(command) - _uptime()
    if abs(ahead - days * 86400) > 60:
        raise NotYet(f"inside, the uptime is {ahead / 3600:.1f} hours longer, not {days * 24}")


@checker
def cgroup_namespaces(cell: str = "cell_cgroup_ns", new: str = "new_cgroup_ns") -> None:
    """09: the cgroup namespace (readlink /proc/self/ns/cgroup) of a ``%%isolate --pid --net``
    cell, and of a process ``unshare --cgroup --fork`` started."""
    import nskernel

    kernel = os.readlink("/proc/self/ns/cgroup")
    in_cell = answer(cell, f"export os.readlink('/proc/self/ns/cgroup') from a %%isolate "
                           f"--pid --net cell as {cell}")
    made = answer(new, f"set {new} to what `unshare --cgroup --fork readlink "
                       "/proc/self/ns/cgroup` prints")
    truth = nskernel.isolate(os.readlink, "/proc/self/ns/cgroup", pid=True, net=True)
    if str(in_cell).strip() != truth:
        raise NotYet(f"`{cell}` is {in_cell!r}: read it inside the %%isolate --pid --net cell")
    if not str(made).strip().startswith("cgroup:["):
        raise NotYet(f"`{new}` is {made!r}, not a namespace (cgroup:[NUMBER])")
    if str(made).strip() == kernel:
        raise NotYet(f"`{new}` is the kernel's own cgroup namespace: was it unshare --cgroup?")


# ---------------------------------------------------------------------------- 10
@checker
def sethostname_capability(without: str = "without_caps", with_uts: str = "with_uts",
                           needed: str = "needed") -> None:
    """10: ``socket.sethostname`` in ``%%isolate --pid --caps none`` and in ``%%isolate
    --pid --uts`` (each outcome exported: 'done' or the error's strerror), and the
    capability it needs."""
    first = answer(without, f"export the outcome in the --caps none cell as {without}")
    second = answer(with_uts, f"export the outcome in the --uts cell as {with_uts}")
    capability = answer(needed, f"set {needed} to the capability's name, such as 'net_admin'")
    if first != os.strerror(errno.EPERM):
        raise NotYet(f"`{without}` is {first!r}: without capabilities, sethostname is refused "
                     "(export the strerror of the error)")
    if second != "done":
        raise NotYet(f"`{with_uts}` is {second!r}: in a UTS namespace of its own the cell "
                     "may rename itself (export 'done' when it worked)")
    if str(capability).lower().removeprefix("cap_") != "sys_admin":
        raise NotYet(f"{capability!r} is not the capability sethostname checks (man 2 "
                     "sethostname, ERRORS)")


@checker
def landlock_read(name: str = "read_error") -> None:
    """10: the error reading /etc/hostname met after a Landlock ruleset that handles
    READ_FILE and allows it only beneath /tmp (exported strerror)."""
    given = answer(name, f"export the strerror of the read as {name}")
    if given == "done":
        raise NotYet("the read worked: is READ_FILE (1 << 2) in the handled access, and "
                     "/etc outside the one allowed directory?")
    if given != os.strerror(errno.EACCES):
        raise NotYet(f"`{name}` is {given!r}: export the strerror of the error Landlock gives")


# ---------------------------------------------------------------------------- 11
def _connect(client_ns: str, server_ns: str, listen: tuple[str, int],
             target: tuple[str, int] | None = None) -> str | None:
    """A TCP connection from ``client_ns`` to ``target`` (the server's own address when
    None), accepted by a server in ``server_ns`` on ``listen``: the client's address as the
    server saw it, or None."""
    lab = _lab()
    try:
        server = lab.run_in(server_ns, lambda: socket.create_server(listen))
    except OSError as error:
        raise NotYet(f"cannot serve on {listen[0]}:{listen[1]} in {server_ns}: "
                     f"{error.strerror}") from None
    client = lab.run_in(client_ns, socket.socket)
    try:
        server.settimeout(1)
        client.settimeout(1)
        client.connect(target or server.getsockname())
        connection, peer = server.accept()
        connection.close()
        return peer[0]
    except OSError:
        return None
    finally:
        client.close()
        server.close()


@checker
def published_port(service: str = "c2", address: str = "172.18.0.3", port: int = 80,
                   published: int = 8081, outside: str = "world",
                   machine: str = "198.51.100.1") -> None:
    """11: ``service``'s port published on the machine's ``published`` port: a connection
    from ``outside`` to it lands in ``service``."""
    _need_namespaces(service, outside, "host")
    if _connect(outside, service, (address, port), (machine, published)) is None:
        raise NotYet(f"{outside} cannot reach {service} at {machine}:{published}: a dnat rule "
                     f"in host's prerouting chain to {address}:{port}?")


@checker
def plain_routing(outside: str = "world", container: str = "c1",
                  container_address: str = "172.18.0.2", gateway: str = "198.51.100.1") -> None:
    """11: ``outside`` routes to the containers' network through the machine, and sees a
    container's own address: no masquerade left."""
    _need_namespaces(outside, container, "host")
    lan = ipaddress.IPv4Network(f"{container_address}/24", strict=False)
    if not any(r["dst"] == str(lan) and r["gateway"] == gateway
               for r in _lab().state(outside)["routes"]):
        raise NotYet(f"{outside} has no route to {lan} via {gateway} yet")
    peer = _connect(container, outside, (str(_addresses(outside)[0].ip), 0))
    if peer is None:
        raise NotYet(f"{container} cannot connect to {outside} any more")
    if peer != container_address:
        raise NotYet(f"{outside} sees the connection come from {peer}: the masquerade rule "
                     "still rewrites it (nft flush chain ip nat postrouting, in host)")


# ---------------------------------------------------------------------------- 12
@checker
def image_runs(root: str = "/tmp/tiny-root", made: str = "/made-inside") -> None:
    """12: the image at ``root`` runs its own ``mkdir`` and ``echo``, and holds ``made``,
    a directory made from inside it."""
    for program in ("mkdir", "echo"):
        if not os.path.exists(f"{root}/bin/{program}"):
            raise NotYet(f"the image has no /bin/{program} yet (copy_with_libraries)")
    run = subprocess.run(["chroot", root, "/bin/echo", "ok"], capture_output=True, text=True)
    if run.stdout.strip() != "ok":
        raise NotYet(f"the image's /bin/echo does not run: {run.stderr.strip()[:80]}")
    if not os.path.isdir(root + made):
        raise NotYet(f"no {made} in the image yet: make it from inside, after pivot_root, "
                     "with the image's own mkdir")


@checker
def overlay_order(name: str = "read_from", top: str = "/tmp/layers/top",
                  base: str = "/tmp/layers/base", file: str = "which") -> None:
    """12: what ``file`` reads in an overlay of two lower layers, ``lowerdir=top:base``."""
    try:
        contents = {layer: open(f"{layer}/{file}").read().strip() for layer in (top, base)}
    except FileNotFoundError as error:
        raise NotYet(f"no {error.filename} yet: give both layers a {file} file") from None
    if contents[top] == contents[base]:
        raise NotYet(f"both layers' {file} say {contents[top]!r}: make them differ")
    given = answer(name, f"export what merged/{file} reads as {name}")
    if str(given).strip() == contents[base]:
        raise NotYet(f"that is {base}'s: was lowerdir {top}:{base}, and read through merged?")
    if str(given).strip() != contents[top]:
        raise NotYet(f"`{name}` is {given!r}: neither layer's {file}")


# ---------------------------------------------------------------------------- 13
@checker
def two_loops(name: str = "each") -> None:
    """13: the CPU seconds each of two busy loops got in one second, both in one cgroup
    held to half a CPU."""
    given = answer(name, f"set {name} to the two loops' CPU seconds, a list of two numbers")
    if not (isinstance(given, (list, tuple)) and len(given) == 2
            and all(isinstance(x, (int, float)) for x in given)):
        raise NotYet(f"`{name}` must be a list of two numbers")
    if min(given) <= 0:
        raise NotYet("one loop got no CPU at all: did both run?")
    if sum(given) > 0.65:
        raise NotYet(f"together they used {sum(given):.2f} s in one second, more than half a "
                     "CPU: were both in the half-a-CPU cgroup?")


def _own_cgroup_children(name: str) -> list[str]:
    from nskernel.locks import cgroups

    found = []
    for hierarchy in cgroups.hierarchies():
        if os.path.isdir(os.path.join(hierarchy.own, name)):
            found.append(os.path.join(hierarchy.own, name))
    return found


@checker
def threads_counted(name: str = "threads_started", pids_max: int = 4,
                    cgroup: str = "threads") -> None:
    """13: how many threads one process started in a cgroup with ``pids.max`` ``pids_max``;
    the cgroup removed afterwards."""
    given = answer(name, f"set {name} to the number of threads the process started")
    if given != pids_max - 1:
        raise NotYet(f"`{name}` is {given!r}: with pids.max {pids_max}, count what the process "
                     "itself takes, and what each thread does")
    left = _own_cgroup_children(cgroup)
    if left:
        raise NotYet(f"{left[0]} is still there: rmdir it once its process has ended")


# ---------------------------------------------------------------------------- 14
@checker
def bomb_stopped(name: str = "bomb_output", cgroup: str = "my-container") -> None:
    """14: the output of the image's sh starting processes in run() with a small ``pids``
    limit: a fork refused, and the container's cgroups removed."""
    output = answer(name, f"set {name} to the text run() returned")
    if "fork" not in str(output).lower():
        raise NotYet(f"no refused fork in `{name}`: start more processes than the pids limit "
                     "allows")
    left = _own_cgroup_children(cgroup)
    if left:
        raise NotYet(f"{left[0]} is still there: run() removes it when the container ends")


@checker
def overlay_container(image: str = "/tmp/box-image", upper: str = "/tmp/box-layers/upper",
                      file: str = "note") -> None:
    """14: the container ran on an overlay of the image: the ``file`` it wrote at its root
    is in the upper layer, not in the image."""
    if os.path.exists(f"{image}/{file}"):
        raise NotYet(f"the image itself has /{file}: the container wrote to the bare image "
                     f"(rm {image}/{file}, and run it on the overlay's merged directory)")
    if not os.path.exists(f"{upper}/{file}"):
        raise NotYet(f"no {file} in {upper} yet: let the container write /{file}")
