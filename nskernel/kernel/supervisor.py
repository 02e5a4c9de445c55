"""The kernel's supervisor: what the launcher ends as. It waits for the kernel while watching
the Jupyter server (:func:`nskernel.children.supervise`) and relays the kernel's connections
(:mod:`nskernel.kernel.relay`). The launcher ends by exec'ing a ``python -S`` that runs
:func:`main`, so that what stays alive beside the kernel for its whole life is a bare
interpreter (~9 MB of RSS)
rather than the launcher with everything it imported to set the namespaces up.

Kept to the standard library, :mod:`nskernel._syscalls` and :mod:`nskernel.children`, so it
runs without ``site``.
"""

from __future__ import annotations

import _signal
import os
import sys

from nskernel.children import kill_descendants, supervise
from nskernel.kernel.relay import Relay


def command(parent_fd: int, child: int, *, init: int | None,
            spare: int | None = None, listeners: dict[int, bytes] | None = None,
            outputs: list[tuple[int, int]] = (), stdin: tuple[int, int] | None = None,
            comm_fd: int | None = None) -> list[str]:
    """The argv the launcher execs into: this module in a site-less interpreter.

    ``init``: PID 1 of the kernel's pid namespace, killed (taking the namespace with it)
    once the kernel has exited. Without one, we are the child subreaper: orphans are reaped
    as they die and whatever is left is killed at the end, but ``spare``. ``listeners``,
    ``outputs``, ``stdin``: what :class:`~nskernel.kernel.relay.Relay` carries for the kernel.
    ``comm_fd``: the launcher's own /proc/PID/comm, open for writing (see :func:`main`).

    ``-c``, not ``-m``: runpy's imports (importlib.util, contextlib) would add 1-2 ms to
    this interpreter's start-up (16 ms of CPU), which every kernel start pays.
    """
    relayed = [f"listen:{fd}:{address.hex()}" for fd, address in (listeners or {}).items()]
    relayed += [f"out:{source}:{sink}" for source, sink in outputs]
    relayed += [f"in:{stdin[0]}:{stdin[1]}"] if stdin else []
    relayed += [f"comm:{comm_fd}:{PROCESS_NAME}"] if comm_fd is not None else []
    return [sys.executable, "-S", "-c", _MAIN, str(parent_fd), str(child),
            str(-1 if init is None else init), str(-1 if spare is None else spare), *relayed]


_MAIN = f"import sys; from {__name__} import main; sys.exit(main(sys.argv[1:]))"
#: What ``ps -o comm`` and ``top`` show for us (at most 15 bytes).
PROCESS_NAME = "nskernel-launch"


def main(argv: list[str]) -> int:
    """``PARENT_PIDFD CHILD_PID INIT_PID SPARE_PID`` (-1: none), then what is relayed, as
    :func:`command` writes."""
    parent_fd, child, init_pid, spare_pid = (int(word) for word in argv[:4])
    init = None if init_pid < 0 else init_pid
    spare = None if spare_pid < 0 else spare_pid
    listeners: dict[int, bytes] = {}
    outputs: list[tuple[int, int]] = []
    stdin = None
    for word in argv[4:]:
        kind, first, second = word.split(":")
        if kind == "listen":
            listeners[int(first)] = bytes.fromhex(second)
        elif kind == "out":
            outputs.append((int(first), int(second)))
        elif kind == "comm":
            _set_process_name(int(first), second)
        else:
            stdin = (int(first), int(second))
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # interrupts are for the kernel alone
    relay = Relay(listeners, outputs, stdin) if listeners or outputs or stdin else None
    try:
        return supervise(child, parent_fd=parent_fd, reap_orphans=init is None, relay=relay)
    finally:
        if relay is not None:
            relay.close()
        if init is None:
            kill_descendants(os.getpid(), spare=spare)
        else:
            os.kill(init, _signal.SIGKILL)
            os.waitpid(init, 0)


def _set_process_name(comm_fd: int, name: str) -> None:
    """Name this process through ``comm_fd``, its /proc/PID/comm that the launcher opened on
    the host's /proc: not prctl (ctypes, and nskernel._syscalls with it, would be a sixth of
    this process's memory), nor /proc/self, which here is the kernel's /proc (the launcher
    mounted it), where we have no pid."""
    try:
        os.write(comm_fd, name.encode()[:15])
    except OSError:
        pass  # only a name
    finally:
        os.close(comm_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
