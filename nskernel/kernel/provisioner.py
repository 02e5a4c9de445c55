"""A jupyter_client kernel provisioner that starts Isolated Python (``nskernel-provisioner``).

A kernelspec names it in ``metadata.kernel_provisioner`` and says in its ``config`` what the
kernel gets, in the words of ``nskernel install``::

    {"provisioner_name": "nskernel-provisioner",
     "config": {"namespaces": ["pid", "net", "mount", "uts", "ipc"], "memory": "2G",
                "pids": 512, "readonly": true, "seccomp": true}}

Any Jupyter Server, nbclient, papermill or Enterprise Gateway then starts the kernel through
it: the provisioner turns the config into the launcher's command line (the same flags, so
the same checks and the same one-line errors as ``nskernel install``) and leaves the rest
(ports, signals, restarts, clean-up) to jupyter_client's :class:`LocalProvisioner`, whose
process is the same launcher as the argv kernelspec's.

With ``pool_size`` N (server configuration, default 0), N kernels of each kernelspec are kept
started ahead (:class:`WarmPool`), so that a notebook's kernel is ready at once: each is
isolated and started, and waits, before it serves, for the notebook's working directory and
environment, which it takes as its own. A pooled kernel is handed out once and never
reused, and the pool refills in the background. It is started in the server's working
directory (the notebooks' root), so it serves only notebooks at or below it (elsewhere, a
kernel starts afresh). Variables that Python and IPython read only as they start
(PYTHONPATH, PYTHONHASHSEED, IPYTHONDIR, ...) come from the server's environment.

The server's configuration has the last word: ``max_memory``, ``max_pids``, ``max_cpus``,
``max_fsize`` and ``max_nofile`` cap what a kernelspec asks for (and apply when it asks for
nothing), ``force_readonly``, ``force_visible_only`` and ``force_seccomp`` turn those locks
on whatever it says, and ``force_hide`` hides paths beside those it hides. A
kernelspec cannot set them: jupyter_client passes the kernelspec's config to the
provisioner as keyword arguments, which would otherwise override the server's.

``max_kernels`` caps how many kernels of this provisioner one server runs at once: on a hub,
where each student has a server of their own, the limits above then hold per student
(``max_kernels`` times each kernel's), not per kernel. Jupyter Server has no such cap of its
own; the next start is refused in one line, saying how to free one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import threading
import weakref
from typing import Any, ClassVar

from jupyter_client.connect import write_connection_file
from jupyter_client.launcher import launch_kernel
from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.paths import jupyter_runtime_dir
from tornado.web import HTTPError
from traitlets import Bool, Float, Int, List, Unicode

from nskernel import isolation, limits
from nskernel.isolation import Isolation, IsolationError
from nskernel.kernel.argv import make_argv
from nskernel.limits import LimitError, Limits

NAME = "nskernel-provisioner"
#: What a kernelspec's ``config`` may ask for, and the ``nskernel install`` flag for each.
REQUEST_KEYS = ("namespaces", "hostname", "memory", "pids", "cpus", "fsize", "nofile",
                "readonly", "bind", "tmpfs_size", "seccomp", "visible_only", "workdir", "hide")
CAPS = ("max_memory", "max_pids", "max_cpus", "max_fsize", "max_nofile", "force_readonly",
        "force_seccomp", "force_visible_only", "force_hide", "max_kernels")
#: What jupyter_client itself passes to every provisioner.
_OWN_KEYWORDS = ("kernel_id", "kernel_spec", "parent", "config", "log")


class KernelCapError(LimitError, HTTPError):
    """A start beyond ``max_kernels``. Also tornado's HTTPError, so that Jupyter Server
    answers with this message (JupyterLab shows it), not with "Unhandled error"."""

    def __init__(self, message: str) -> None:
        HTTPError.__init__(self, 403, message)  # no "%" in it: tornado logs it as a format
        self.message = message

    def __str__(self) -> str:
        return self.message


def request_flags(request: dict[str, Any]) -> list[str]:
    """The ``nskernel install`` flags that a kernelspec's provisioner config stands for."""
    flags: list[str] = []
    for key, value in request.items():
        if key not in REQUEST_KEYS:
            raise IsolationError(f"kernel_provisioner config: unknown key {key!r}; known: "
                                 f"{', '.join(REQUEST_KEYS)}")
        if key == "namespaces":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise IsolationError("kernel_provisioner config: namespaces must be a list "
                                     'of names, as ["pid", "net"]')
            unknown = [name for name in value if name not in isolation.NAMESPACES]
            if unknown:
                raise IsolationError(f"kernel_provisioner config: unknown namespace "
                                     f"{unknown[0]!r}; known: {', '.join(isolation.NAMESPACES)}")
            flags += [f"--{name}" for name in value]
        elif key in ("readonly", "seccomp", "visible_only"):
            if not isinstance(value, bool):
                raise IsolationError(f"kernel_provisioner config: {key} must be true or false")
            flags += [f"--{key.replace('_', '-')}"] if value else []
        elif key in ("bind", "hide"):
            paths = value if isinstance(value, list) else [value]
            for path in paths:
                flags += [f"--{key}", str(path)]
        else:
            flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


def parse_request(request: dict[str, Any]) -> tuple[Isolation, Limits]:
    """The kernel a config asks for; IsolationError or LimitError (one line) if it is bad."""
    parser = argparse.ArgumentParser(prog=NAME, exit_on_error=False, add_help=False)
    from nskernel.kernel.setup import add_kernel_arguments

    add_kernel_arguments(parser)
    try:
        args = parser.parse_args(request_flags(request))
    except argparse.ArgumentError as exc:
        raise IsolationError(f"kernel_provisioner config: {exc}") from None
    spec = isolation.from_args(args, isolation.KERNEL_DEFAULT, isolation.DEFAULT_HOSTNAME)
    return spec, limits.from_args(args, for_kernel=True)


def request_for(spec: Isolation, kernel_limits: Limits) -> dict[str, Any]:
    """The provisioner config that asks for ``spec`` and ``kernel_limits`` (what
    ``nskernel install --provisioner`` writes): :func:`parse_request` reads it back."""
    request: dict[str, Any] = {"namespaces": list(spec.namespaces), "hostname": spec.hostname}
    if spec.readonly:
        request["readonly"] = True
        request["bind"] = [path + (":rw" if writable else "") for path, writable in spec.binds]
    if spec.visible_only:
        request["visible_only"] = True
        if not spec.workdir_writable:
            request["workdir"] = "ro"
    if spec.hide:
        request["hide"] = list(spec.hide)
    if spec.tmpfs_size != isolation.KERNEL_TMP_SIZE:
        request["tmpfs_size"] = spec.tmpfs_size
    if spec.seccomp:
        request["seccomp"] = True
    for name, value in vars(kernel_limits).items():
        if value is not None:
            request[name] = limits.size_flag(value) if name in ("memory", "fsize") else value
    return request


def capped(asked: Limits, cap: Limits) -> Limits:
    """Each limit as asked, but never above the cap (the cap where nothing was asked)."""
    values = {}
    for name, wanted in vars(asked).items():
        most = getattr(cap, name)
        values[name] = wanted if most is None else most if wanted is None else min(wanted, most)
    return Limits(**values)


@dataclasses.dataclass
class PooledKernel:
    """A launcher started ahead, waiting on its stdin (see ``nskernel.launch --pooled``)."""

    process: subprocess.Popen
    connection_info: dict[str, Any]
    connection_file: str

    def hand_out(self, cwd: str | None, env: dict[str, str]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cwd": cwd, "env": env}).encode() + b"\n")
        self.process.stdin.close()

    def discard(self) -> None:
        """Its stdin closed: it exits at once, having made nothing yet."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        with contextlib.suppress(OSError):
            os.unlink(self.connection_file)


class WarmPool:
    """``size`` launchers of one kernel command, started ahead, each handed out once."""

    def __init__(self, argv: list[str], size: int, root: str) -> None:
        self.argv = argv  # without "-f CONNECTION_FILE"
        self.size = size
        self.root = root  # the kernels' working directory as they start
        self.idle: list[PooledKernel] = []
        self.lock = threading.Lock()  # fill runs on a timer's thread
        self.emptied = 0  # how many times empty() ran: a refill asked for before is void

    def fill_soon(self, delay: float = 0.5) -> None:
        """Refill once the start that just took a kernel is under way, not in its way."""
        timer = threading.Timer(delay, self.fill, kwargs={"asked_at": self.emptied})
        timer.daemon = True
        timer.start()

    def fill(self, asked_at: int | None = None) -> None:
        """Start launchers until ``size`` wait (a fork and exec each: they warm up on their
        own, in the background). One that died meanwhile is dropped. ``asked_at``: the
        emptied count when a refill was asked for; emptied since, the pool stays empty
        (a server that is shutting down must not get new launchers after it ended them)."""
        with self.lock:
            if asked_at is not None and asked_at != self.emptied:
                return
            for kernel in [k for k in self.idle if k.process.poll() is not None]:
                self.idle.remove(kernel)
                kernel.discard()
            while len(self.idle) < self.size:
                runtime = jupyter_runtime_dir()
                os.makedirs(runtime, exist_ok=True)
                name, info = write_connection_file(
                    os.path.join(runtime, f"kernel-pooled-{os.urandom(8).hex()}.json"),
                    ip="127.0.0.1", transport="tcp")
                info = {**info, "key": info["key"].encode()}
                process = launch_kernel([*self.argv, "--pooled", "-f", name],
                                        env=dict(os.environ), cwd=self.root,
                                        stdin=subprocess.PIPE)  # kept: the handout goes there
                self.idle.append(PooledKernel(process, info, name))

    def serves(self, cwd: str | None) -> bool:
        """Whether a kernel of ours sees ``cwd``: the root, kept visible inside (private
        /tmp, read-only host) since the kernel started there, and what lies below it; for a
        root kernel, which is nobody on the host, only where others may enter."""
        if self.root == "/":
            return False
        path = os.path.realpath(cwd or os.getcwd())
        if path != self.root and not path.startswith(self.root + os.sep):
            return False
        if os.geteuid() == 0 and path != self.root:
            below = os.path.relpath(path, self.root).split(os.sep)
            for depth in range(len(below) + 1):
                step = os.path.join(self.root, *below[:depth])
                if not os.stat(step).st_mode & 0o001:
                    return False
        return True

    def take(self) -> PooledKernel | None:
        with self.lock:
            while self.idle:
                kernel = self.idle.pop(0)
                if kernel.process.poll() is None:
                    return kernel
                kernel.discard()
        return None

    def empty(self) -> None:
        with self.lock:
            self.emptied += 1
            while self.idle:
                self.idle.pop().discard()


class NskernelProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Starts Isolated Python with the namespaces, locks and limits of the kernelspec's
    provisioner config, capped by the server's configuration."""

    max_memory = Unicode(None, allow_none=True, config=True,
                         help="Most memory a kernel may have (e.g. 2G); also its limit when "
                              "the kernelspec gives none.")
    max_pids = Int(None, allow_none=True, config=True, help="Most processes a kernel may have.")
    max_cpus = Float(None, allow_none=True, config=True, help="Largest share of the CPUs.")
    max_fsize = Unicode(None, allow_none=True, config=True, help="Largest file (e.g. 1G).")
    max_nofile = Int(None, allow_none=True, config=True, help="Most files open at once.")
    force_readonly = Bool(False, config=True, help="Every kernel sees the host read-only.")
    force_seccomp = Bool(False, config=True, help="Every kernel has the seccomp filter.")
    force_visible_only = Bool(False, config=True,
                              help="Every kernel sees only the system's directories, Python's "
                                   "and its working directory (implies force_readonly).")
    force_hide = List(Unicode(), config=True,
                      help="Paths absent in every kernel, beside those its kernelspec hides.")
    pool_size = Int(0, config=True, help="Kernels of each kernelspec kept started ahead, "
                                         "so that a new notebook's kernel is ready at once.")
    max_kernels = Int(None, allow_none=True, config=True,
                      help="Most kernels this server runs at once (on a hub: per student); "
                           "the next start is refused.")
    #: The pools of this server process: {(the kernel's command..., root): its pool}.
    pools: ClassVar[dict[tuple[str, ...], WarmPool]] = {}
    #: Every provisioner of this server process (a kernel's, while the server keeps it).
    everyone: ClassVar[weakref.WeakSet[NskernelProvisioner]] = weakref.WeakSet()

    def __init__(self, **kwargs: Any) -> None:
        request = {key: kwargs.pop(key) for key in list(kwargs) if key in REQUEST_KEYS}
        reserved = [key for key in kwargs if key in CAPS]
        unknown = [key for key in kwargs if key not in CAPS and key not in _OWN_KEYWORDS]
        if reserved:
            raise IsolationError(f"a kernelspec may not set {', '.join(reserved)}: only the "
                                 "server's configuration may (c.NskernelProvisioner...)")
        if unknown:
            raise IsolationError(f"kernel_provisioner config: unknown key {unknown[0]!r}; "
                                 f"known: {', '.join(REQUEST_KEYS)}")
        super().__init__(**kwargs)
        self.request = request
        self.pooled: PooledKernel | None = None
        self.everyone.add(self)

    def check_kernel_count(self) -> None:
        """Refuse a start beyond ``max_kernels``: those that count are the kernels of this
        server whose process still runs (a restart's old process is gone by now)."""
        if self.max_kernels is None:
            return
        running = sum(1 for other in list(self.everyone) if other is not self
                      and other.process is not None and other.process.poll() is None)
        if running >= self.max_kernels:
            raise KernelCapError(f"this server already runs {running} Isolated Python kernels, "
                             f"the most it may (max_kernels={self.max_kernels}): shut one "
                             "down (Kernel > Shut Down Kernel) and start again")

    def server_caps(self) -> Limits:
        def size(text: str | None, what: str) -> int | None:
            return None if text is None else limits.parse_size(text, what)

        return Limits(memory=size(self.max_memory, "max_memory"), pids=self.max_pids,
                      cpus=self.max_cpus, fsize=size(self.max_fsize, "max_fsize"),
                      nofile=self.max_nofile)

    def kernel_settings(self) -> tuple[Isolation, Limits]:
        """What this kernel gets: the kernelspec's request within the server's caps."""
        spec, asked = parse_request(self.request)
        if self.force_readonly or self.force_seccomp or self.force_visible_only or self.force_hide:
            visible_only = spec.visible_only or self.force_visible_only
            hide = tuple(dict.fromkeys([*spec.hide, *map(os.path.normpath, self.force_hide)]))
            spec = dataclasses.replace(spec, readonly=spec.readonly or self.force_readonly
                                       or visible_only, seccomp=spec.seccomp
                                       or self.force_seccomp, visible_only=visible_only,
                                       hide=hide)
        return spec, capped(asked, self.server_caps())

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self.check_kernel_count()
        spec, kernel_limits = self.kernel_settings()
        # the interpreter the kernelspec names: the one nskernel was installed with
        argv = make_argv(spec, self.kernel_spec.argv[0], kernel_limits)
        self.kernel_spec.argv = argv
        if self.pool_size > 0:
            command = tuple(argv[:-2])  # without "-f {connection_file}"
            root = os.path.realpath(os.getcwd())
            pool = self.pools.get(command + (root,))
            if pool is None:
                pool = self.pools[command + (root,)] = WarmPool(list(command), self.pool_size,
                                                               root)
            self.pooled = pool.take() if pool.serves(kwargs.get("cwd")) else None
            if len(pool.idle) < pool.size:
                pool.fill_soon()
        return await super().pre_launch(**kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict[str, Any]:
        if self.pooled is None:
            return await super().launch_kernel(cmd, **kwargs)
        self.pooled.hand_out(kwargs.get("cwd"), kwargs.get("env") or dict(os.environ))
        self.process = self.pooled.process
        self.pid = self.process.pid
        self.pgid = os.getpgid(self.pid)
        self.cwd = kwargs.get("cwd") or os.getcwd()
        self.connection_info = self.pooled.connection_info
        return self.connection_info

    @classmethod
    def empty_pools(cls) -> None:
        """End every waiting launcher (a server's exit does it too: their stdin closes)."""
        for pool in cls.pools.values():
            pool.empty()

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if self.pooled is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.pooled.connection_file)
