"""Checkers of the exercises of notebooks 4, 8, 9 and 10: hostnames, IPC, which kinds a kernel
has of its own, time and cgroup namespaces, capabilities and Landlock."""

from __future__ import annotations

import errno
import os
import socket
import subprocess

from nskernel.exercises._check import NotYet, answer, checker


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
