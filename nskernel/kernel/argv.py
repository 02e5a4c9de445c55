"""The kernelspec's argv: ``python -m nskernel.launch`` with the namespaces, the limits and the
connection file. Written by `nskernel install` and again by the provisioner (with the
limits a user asked for); alone here so that neither imports the other for it."""

from __future__ import annotations

import platform
import sys

from nskernel.isolation import KERNEL_TMP_SIZE, Isolation
from nskernel.limits import Limits


def make_argv(spec: Isolation, executable: str | None = None,
              limits: Limits | None = None) -> list[str]:
    """The command Jupyter runs: the launcher, the namespaces, the connection file.

    ``-Xfrozen_modules=off`` as ``python -m ipykernel install`` writes it: with frozen modules
    the debugger warns at every start (on the notebook's stderr) that it may miss breakpoints.
    """
    python_arguments = ["-Xfrozen_modules=off"] if platform.python_implementation() == "CPython" \
        else []
    return [executable or sys.executable, *python_arguments, "-m", "nskernel.launch",
            *spec.to_argv(locks=True, tmpfs_default=KERNEL_TMP_SIZE),
            *(limits.to_argv() if limits else []), "-f", "{connection_file}"]
