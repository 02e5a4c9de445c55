"""nskernel: Linux namespaces, first-class in Jupyter.

Kept import-light on purpose: the launcher's supervisor imports this package without ``site``
and keeps whatever it pulls in for the kernel's whole life; the magics load what they need.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the launcher's supervisor imports this package bare
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from nskernel.netlab.net import Lab

    T = TypeVar("T")

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nskernel`: register the namespace magics and the network lab's."""
    from nskernel.magics.lab import LabMagics
    from nskernel.magics.namespaces import NamespaceMagics

    ipython.register_magics(NamespaceMagics)
    ipython.register_magics(LabMagics)
    from nskernel.cell import tracebacks
    from nskernel.magics import completion

    completion.register(ipython)
    tracebacks.register(ipython)


def isolate(function: Callable[..., T], *args: Any, **settings: Any) -> T:
    """Call ``function(*args)`` in a child inside new namespaces and return its value.

    ``settings``: ``pid``, ``net``, ``mount``, ``uts``, ``ipc``, ``user`` (booleans; with no
    namespace named: pid, net, mount, uts, ipc), ``hostname``, ``loopback_up``, ``timeout``
    (seconds), ``readonly``, ``tmpfs_size``, ``binds``, ``seccomp``, and the limits
    ``cpu_time``, ``memory`` ("64M"), ``fsize``, ``nofile``, ``pids``, ``cpus`` (see
    nskernel.limits). Output is written to this process's stdout/stderr as it comes; an
    exception raised inside is raised here, with the child's traceback as its cause. The
    child inherits none of this process's descriptors but ``pass_fds`` (numbers, as
    subprocess takes them). ``untrusted=True``: the function's code may be hostile, so what
    comes back must be plain data (builtin types and exceptions), decoded without running
    anything the child chose; else the value is unpickled as it is.

    ``stats=True``: return a :class:`nskernel.locks.usage.Ran` (``.value``, ``.usage``: wall and
    CPU time, peak memory, most processes at once); an exception raised here then carries
    the usage as its ``usage`` attribute.
    """
    from nskernel.cell.runner import run
    from nskernel.isolation import NAMESPACES, Isolation
    from nskernel.limits import Limits, parse_size
    from nskernel.locks.usage import Ran

    timeout = settings.pop("timeout", None)
    stats = settings.pop("stats", False)
    pass_fds = settings.pop("pass_fds", ())
    untrusted = settings.pop("untrusted", False)
    limits = {name: settings.pop(name) for name in ("cpu_time", "memory", "fsize", "nofile",
                                                    "pids", "cpus") if name in settings}
    for name in ("memory", "fsize"):
        if isinstance(limits.get(name), str):
            limits[name] = parse_size(limits[name], name)
    if limits.get("pids") is not None:
        settings["user"] = True  # processes are counted per user namespace
    if not any(settings.get(name) for name in NAMESPACES):
        settings.update({name: True for name in NAMESPACES if name not in settings})
    used = []
    try:
        value = run(Isolation(**settings), lambda: function(*args), timeout=timeout,
                    limits=Limits(**limits), on_usage=used.append if stats else None,
                    pass_fds=pass_fds, untrusted=untrusted)
    except Exception as exc:
        if used:
            exc.usage = used[0]  # type: ignore[attr-defined]
        raise
    return Ran(value, used[0]) if stats else value


def __getattr__(name: str) -> Any:
    """``nskernel.probe``: the lab's reachability checks (:mod:`nskernel.netlab.probe`), a
    public name since before the package had subpackages; loaded when first asked for."""
    if name == "probe":
        import importlib

        return importlib.import_module("nskernel.netlab.probe")
    raise AttributeError(f"module 'nskernel' has no attribute {name!r}")


def lab() -> Lab:
    """This kernel's network lab (a :class:`nskernel.netlab.net.Lab`), the one the magics use.

    One per kernel, made on first use and removed (with everything it made) at the kernel's
    shutdown or restart; not available inside an isolated cell, whose lab would die with it.
    """
    from nskernel.magics.lab import current_lab

    return current_lab()
