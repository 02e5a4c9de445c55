"""The kernelspec's argv: start an IPython kernel inside new namespaces.

Process chain (dumb-init is the init that reaps orphans)::

    jupyter server ─ launcher ┬ dumb-init (PID 1) ─ sleep (PID 3)     orphans → PID 1
                              └ kernel (PID 2) ─ user processes
                   host pids    new pid namespace ──────────────────────────────

The launcher starts in the host network namespace and listens on the connection file's
ports, and on a Unix socket per channel for the kernel. It then builds the walls
(:func:`sandbox.enter_walls`: new mount, pid and ipc namespaces, owned by a user namespace
when not root, and the mounts that must stay) and forks twice: PID 1, which drops every
capability and becomes dumb-init, and the kernel, PID 2, which imports ipykernel itself, as
a stock kernel does. The launcher stays small: a kernel forked from a launcher that had
imported ipykernel shared those pages copy-on-write, and 20 kernels started at once took
1.2x a stock kernel's time (``benchmarks/many.py``). The kernel mounts its /proc and enters
rooms of its own (:func:`sandbox.enter_rooms`: a user namespace owning new mount, net and
uts namespaces), where the walls' mounts are locked: it has every right over its own
namespaces and none over the host's. A root kernel is an id of its own on the host
(:mod:`nskernel.kernel.identity`). The kernel adopts the Unix sockets (``zmq.USE_FD``); its stdin,
stdout and stderr are pipes. The launcher then execs :mod:`nskernel.kernel.supervisor` in a bare
interpreter: it stays behind to be the process Jupyter signals and waits for, keeps the TCP
listeners and relays each connection to the kernel's Unix socket, and the kernel's output to
the server's (:mod:`nskernel.kernel.relay`: no process that runs user code holds a socket or a file
of the server's), ends the namespace when the kernel exits, and kills it if the Jupyter
server dies.

Everything beside the kernel is small: a bare Python, dumb-init and its ``sleep`` (~13 MB of
RSS together), where forks of the launcher would each count the launcher's heap again.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import signal
import sys
from typing import NoReturn

from nskernel import _syscalls, isolation, limits
from nskernel.cell import forks, sandbox
from nskernel.kernel import identity, supervisor
from nskernel.kernel.setup import (
    LaunchError,
    add_kernel_arguments,
    bind_listeners,
    find_dumb_init,
)
from nskernel.limits import Limits
from nskernel.locks import cgroups, shown
from nskernel.magics import nsinfo
from nskernel.owners import owner_id

#: glibc malloc arenas a memory-limited kernel makes (see _syscalls.limit_malloc_arenas).
MALLOC_ARENAS = 2


def run_init(dumb_init: str, go: int, dropped: int) -> NoReturn:
    """PID 1: wait until the kernel has PID 2, then become dumb-init.

    dumb-init needs a child to run; ``sleep infinity`` is the smallest. PID 1 leaves the
    launcher's process group, so Jupyter's interrupts and kills (sent to that group) reach
    the kernel and not the init; it dies with the launcher (parent-death signal) or when the
    supervisor kills it after the kernel has exited. It keeps no capability across the
    exec: a rootless kernel may trace it (same user), and must gain nothing by that. It
    leaves the host's network namespace for an empty one: /proc/1/net would show the host's
    sockets and interfaces to the kernel. ``dropped`` is closed once all that is done; the
    kernel waits for it before it runs anything of the user's.
    """
    os.setsid()
    _dev_null_as_stdio()  # the server's stdout and stderr stay outside
    _syscalls.unshare(_syscalls.CLONE_NEWNET)
    _syscalls.drop_bounding_set()
    _syscalls.set_no_new_privs()
    os.close(dropped)
    os.read(go, 1)
    os.close(go)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # ignored by the launcher; exec would keep it
    os.execv(dumb_init, [dumb_init, "--", "sleep", "infinity"])


def _dev_null_as_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def run_kernel(connection_file: str, connection: dict, spec: isolation.Isolation,
               map_root_to: int | None, launcher_fds: list[int], init_dropped: int | None,
               listeners: dict[int, tuple[int, str]], stdio: tuple[int, int, int],
               kernel_limits: Limits, group: cgroups.Group | None,
               pooled: bool = False) -> int:
    """The kernel process proper: its stdio (pipes to the supervisor), its limits, its own
    namespaces, then ipykernel with the adopted sockets (see kernelapp: ``listeners`` is
    {port: (fd, endpoint)}); ``launcher_fds`` are closed first: nothing of the host's
    that a cell could use stays open here. ``pooled``: started, it waits for
    :func:`wait_for_handout` before it serves. Its /proc is already mounted (it is PID 2 of
    the new pid namespace); entering its own user namespace now locks that mount in place.
    With ``--seccomp`` the filter lets it still make namespaces (inside its own user
    namespace they reach nothing of the host's): the lab and ``%%isolate`` work on."""
    from nskernel.kernel.kernelapp import IsolatedKernelApp  # first, with the host's privileges

    for fd in launcher_fds:
        os.close(fd)
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
        os.close(fd)
    kernel_limits.apply(inherited_fds=Limits.fds_in_use(), memory_rlimit=resource.RLIMIT_DATA)
    if kernel_limits.memory:  # before the kernel's threads: each would reserve an arena
        _syscalls.limit_malloc_arenas(MALLOC_ARENAS)
    sandbox.enter_rooms(spec, map_root_to=map_root_to, keep_cgroups=group is not None)
    if spec.seccomp:
        from nskernel.locks.seccomp import deny_dangerous_syscalls

        deny_dangerous_syscalls(allow_namespaces=True)
    if kernel_limits.memory:
        from nskernel.locks.seccomp import deny_unaccounted_memory

        deny_unaccounted_memory()
    os.mkdir(sandbox.KERNEL_SCRATCH_DIR, 0o700)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the launcher ignored it
    if init_dropped is not None:
        os.read(init_dropped, 1)  # end of file: the init has no capability left
        os.close(init_dropped)
    app = IsolatedKernelApp.instance(connection_info=connection, listeners=listeners,
                                     scratch_directory=sandbox.KERNEL_SCRATCH_DIR)
    app.initialize(["-f", connection_file])
    if pooled:
        handout = wait_for_handout()
        session = handout["env"].get("JPY_SESSION_NAME")
        if session and app.shell is not None:  # what ipykernel sets from it as it starts
            app.shell.user_ns["__session__"] = session
    kernel_limits.bound_new_mappings()  # last: before it, the kernel's own start-up
    app.start()
    return 0


def _own_comm() -> int | None:
    """This process's /proc/PID/comm, open for writing; None where /proc is not there."""
    try:
        return os.open("/proc/self/comm", os.O_WRONLY)
    except OSError:
        return None


def parse_args(argv: list[str] | None) -> tuple[isolation.Isolation, Limits, str, bool]:
    parser = argparse.ArgumentParser(prog="python -m nskernel.launch",
                                     description="Start an IPython kernel in new namespaces.")
    parser.add_argument("-f", dest="connection_file", required=True,
                        help="the Jupyter connection file")
    parser.add_argument("--pooled", action="store_true",
                        help="start, then wait for the notebook's working directory and "
                             "environment (a JSON line on stdin) before serving")
    add_kernel_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return (isolation.from_args(args), limits.from_args(args, for_kernel=True),
                args.connection_file, args.pooled)
    except (isolation.IsolationError, limits.LimitError) as exc:
        parser.exit(2, f"nskernel: cannot start the kernel: {exc}\n")


def wait_for_handout() -> dict:
    """A pooled kernel's pause, started and not yet serving: read the notebook's working
    directory and environment (JSON, one line on stdin) and take them as its own. End of
    file instead (the Jupyter server went away, or emptied its pool): exit quietly; the
    supervisor then ends the namespaces, leaving nothing."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 1 << 16)
        if not chunk:
            os._exit(0)
        data += chunk
    handout = json.loads(data)
    ours = {key: value for key, value in os.environ.items() if key.startswith("NSKERNEL_")}
    os.environ.clear()
    os.environ.update({**handout["env"], **ours})
    if handout.get("cwd") and os.path.realpath(handout["cwd"]) != os.getcwd():
        os.chdir(handout["cwd"])
    return handout


def kernel_cgroup(kernel_limits: Limits, owner: int | None) -> cgroups.Group | None:
    """The kernel's cgroup, with its limits, made below ours where we may; handed to
    ``owner`` (the kernel's uid on the host, when that is not ours) so that the kernel
    can make its cells' cgroups inside it. None where we may not: the rlimits still hold,
    but a CPU share has nothing to stand on."""
    the_plan = cgroups.plan()
    if kernel_limits.cpus is not None and "cpu" not in the_plan.places:
        raise LaunchError(f"--cpus cannot be enforced here: {the_plan.missing['cpu']}")
    if not the_plan.places:
        return None
    settings = {job: getattr(kernel_limits, job) for job in ("memory", "pids")
                if job in the_plan.places}
    try:
        group = cgroups.Group.create(f"{cgroups.PREFIX}{owner_id()}.kernel",
                                     cpus=kernel_limits.cpus, the_plan=the_plan,
                                     holds_cells=True,
                                     **settings)
    except cgroups.CgroupError as exc:
        if kernel_limits.cpus is not None:
            raise LaunchError(str(exc)) from None
        return None
    if owner is not None:
        group.hand_to(owner, owner)
    return group


KEEPER_NAME = "nskernel-cgroup"
#: The launcher's cgroup keeper: a shell (a few MB, where even a bare Python is ten) that
#: waits for the launcher, then the supervisor, to end (its stdin is a pipe they alone hold
#: open: end of file when they are gone, zombies included; the shell's own ``read`` waits,
#: no ``cat`` is started), kills what is left in the kernel's cgroups and removes them,
#: deepest first, until none is left. It runs twice, in two processes (the second a subshell
#: with the same pipe, through fd 3: sh gives a background job /dev/null for its stdin): a
#: SIGKILL of one leaves the other to do it.
CGROUP_KEEPER = r"""
keep() {
    while read -r _; do :; done
    for attempt in $(seq 50); do
        left=0
        for cgroup in "$@"; do
            [ -d "$cgroup" ] || continue
            left=1
            [ -f "$cgroup/cgroup.kill" ] && echo 1 > "$cgroup/cgroup.kill" 2>/dev/null
            find "$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null \
                | xargs -r kill -9 2>/dev/null
            find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null
        done
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
}
exec 3<&0
keep "$@" <&3 &
keep "$@"
"""


def _fork_cgroup_keeper(group: cgroups.Group) -> tuple[int, int]:
    """Start the process that removes the kernel's cgroups (with its cells') once we are
    gone, however we go: SIGKILL included, which no cleanup of ours would survive. Forked
    before the walls, so that it sees the host's cgroups and lives outside the kernel's pid
    namespace; it leaves our process group (a kill of the group must not take it along) and
    Jupyter's pipes, and becomes a small shell (see CGROUP_KEEPER: a fork of ours would keep
    the launcher's memory alive). The supervisor spares it when it ends what is left below
    it. Returns its pid and the pipe end that we (and the supervisor after us) keep open
    for as long as we live, and close in every process we fork."""
    gone, alive = os.pipe()
    keeper = os.fork()
    if keeper:
        os.close(gone)
        return keeper, alive
    try:
        os.setsid()
        os.close(alive)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(gone, 0)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.execv("/bin/sh", [KEEPER_NAME, "-c", CGROUP_KEEPER, KEEPER_NAME,
                             *dict.fromkeys(group.directories.values())])
    finally:
        os._exit(1)


def _package_directory(name: str) -> str:
    """Where package ``name`` would be imported from, without importing it."""
    found = importlib.util.find_spec(name)
    if found is None or found.origin is None:
        raise LaunchError(f"{name} is not installed for {sys.executable}: pip install {name}")
    return os.path.dirname(found.origin)


def launch(spec: isolation.Isolation, connection_file: str,
           kernel_limits: Limits | None = None, pooled: bool = False) -> NoReturn:
    """Bind, isolate, start init and kernel, then exec the supervisor (never returns).
    ``pooled``: the kernel waits for :func:`wait_for_handout` before serving."""
    server = os.pidfd_open(os.getppid())  # before anything can orphan us
    comm = _own_comm()  # on the host's /proc, for the supervisor: it names itself there
    try:
        with open(connection_file) as handle:
            connection = json.load(handle)
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot read connection file {connection_file}: {exc}") from None
    dumb_init = find_dumb_init() if spec.pid else ""
    host_root = os.geteuid() == 0
    channels = bind_listeners(connection)
    # Root, the kernel will be an id of its own on the host (see nskernel.kernel.identity).
    kernel_id, id_lock = identity.allocate() if host_root else (None, None)
    kernel_limits = kernel_limits or Limits()
    group = kernel_cgroup(kernel_limits, kernel_id)
    if kernel_limits:
        os.environ[nsinfo.LIMITS_ENV] = " ".join(kernel_limits.to_argv())  # for %nsinfo inside
    keeper, keeper_pipe = _fork_cgroup_keeper(group) if group is not None else (None, None)
    os.environ[nsinfo.HOST_NS_ENV] = nsinfo.encode_host_namespaces()  # for %nsinfo inside
    # A root kernel is no user of the host's; it must still reach its Python and the notebooks.
    # nskernel's parent (a checkout, for an editable install), or with --visible-only the
    # package alone: a checkout holds more than code, and the view shows code only.
    package = os.path.dirname(os.path.abspath(__file__))
    code = [sys.prefix, sys.base_prefix, os.path.dirname(os.__file__),
            package if spec.visible_only else os.path.dirname(package),
            _package_directory("ipykernel"), os.getcwd()]
    if spec.readonly:
        shown.note_python_directories(*code)  # shown again where a scratch tmpfs hides them
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts are for the kernel alone
    # Rootless, the first step's root is the user; root, the kernel will be kernel_id.
    sandbox.enter_walls(spec, user_namespace=not host_root, expose=code if host_root else (),
                        private_run=True, run_dirs_owner=kernel_id if host_root else 0,
                        private_tmp=code,
                        cgroups=list(group.directories.values()) if group else ())
    init = ready = init_dropped = None
    if spec.pid:
        go, ready = os.pipe()
        init_dropped, dropped = os.pipe()
        init = forks.fork_child(lambda: run_init(dumb_init, go, dropped))
        os.close(go)
        os.close(dropped)
    else:
        _syscalls.set_child_subreaper()  # no init: orphans come to us
    (stdout_r, stdout_w), (stderr_r, stderr_w) = os.pipe(), os.pipe()
    stdin_r, stdin_w = os.pipe() if pooled else (os.open(os.devnull, os.O_RDONLY), None)
    relay_ends = [fd for fd in (stdout_r, stderr_r, stdin_w) if fd is not None]
    ours = [fd for fd in (server, comm, ready, keeper_pipe, id_lock) if fd is not None]
    ours += [sock.fileno() for sock in channels.outside.values()] + relay_ends
    map_root_to = kernel_id
    kernel = forks.fork_child(
        lambda: run_kernel(connection_file, connection, spec, map_root_to, ours, init_dropped,
                           {port: (sock.fileno(), endpoint)
                            for port, (sock, endpoint) in channels.inside.items()},
                           (stdin_r, stdout_w, stderr_w), kernel_limits, group, pooled),
        new_proc=spec.pid)
    for fd in (stdin_r, stdout_w, stderr_w):
        os.close(fd)
    if group is not None:
        # Here, not in the kernel: a move waits for an RCU grace period, which the kernel
        # spends starting up meanwhile; it runs no code of the user's for a long while yet
        # (not before it has answered kernel_info), and the move takes all its threads.
        group.join(kernel)
    if init_dropped is not None:
        os.close(init_dropped)
    if ready is not None:
        os.write(ready, b"1")  # the kernel is PID 2: the init may start its own child now
        os.close(ready)
    relayed = channels.relayed()
    for sock, _endpoint in channels.inside.values():
        sock.close()  # the kernel owns them now
    for fd in [server, *relayed, *relay_ends, *(fd for fd in (id_lock, comm) if fd is not None)]:
        os.set_inheritable(fd, True)  # id_lock: the supervisor holds the kernel's id
    if keeper_pipe is not None:
        os.set_inheritable(keeper_pipe, True)  # the keeper waits for the supervisor too
    argv = supervisor.command(server, kernel, init=init, spare=keeper, listeners=relayed,
                              outputs=[(stdout_r, 1), (stderr_r, 2)],
                              stdin=(0, stdin_w) if stdin_w is not None else None,
                              comm_fd=comm)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.execve(argv[0], argv, {**os.environ, "PYTHONPATH": package_parent})


def main(argv: list[str] | None = None) -> int:
    spec, kernel_limits, connection_file, pooled = parse_args(argv)
    try:
        launch(spec, connection_file, kernel_limits, pooled)
    except (LaunchError, _syscalls.NamespaceError, identity.IdentityError) as exc:
        print(f"nskernel: cannot start the kernel: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
