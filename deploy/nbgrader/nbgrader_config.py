"""nbgrader, grading every submission in a locked Isolated Python kernel (see README.md).

Copy this file into the course directory (where ``nbgrader autograde`` runs), or merge its
lines into the course's own ``nbgrader_config.py``, after installing the kernelspec:

    nskernel install --sys-prefix --name nbgrader-jail --display-name "nbgrader jail" \\
        --visible-only --workdir ro --seccomp --memory 512M --pids 64 --fsize 64M --nofile 256

Every notebook nbgrader executes (``autograde``, and ``validate``) then runs in that kernel,
whatever kernel the source or the submitted notebook names: ``Execute.kernel_name`` wins over
the notebook's metadata (nbclient reads the metadata only when no name is configured). The
kernel starts in the notebook's directory, ``autograded/STUDENT/ASSIGNMENT`` (nbclient passes
``resources["metadata"]["path"]`` as the working directory), which is all it sees of the
course, read-only (why read-only: README.md); with its own PIDs, network, mounts, hostname
and IPC, seccomp, and per-kernel memory and process limits. This file adds
the time limit: a cell that has not answered after ``NSKERNEL_GRADING_TIMEOUT`` seconds is
interrupted and marked as failed, and nbgrader goes on to the next submission.

Settings, from the environment (both optional):

- NSKERNEL_GRADING_KERNEL: the kernelspec's name (``nbgrader-jail``).
- NSKERNEL_GRADING_TIMEOUT: seconds a cell may run (30).
"""

# ruff: noqa: F821  (get_config is given by nbgrader when it reads this file)
from __future__ import annotations

import os

c = get_config()  # noqa: F821

c.Execute.kernel_name = os.environ.get("NSKERNEL_GRADING_KERNEL", "nbgrader-jail")
# Per cell; nbgrader's Execute interrupts the kernel past it and records a CellTimeoutError.
# A cell that swallows the interrupt leaves the kernel busy: nbclient then gives up on the
# notebook (no idle on iopub) and nbgrader marks that submission as failed.
c.Execute.timeout = int(os.environ.get("NSKERNEL_GRADING_TIMEOUT", "30"))
c.Execute.interrupt_on_timeout = True
c.Execute.startup_timeout = 60
# The kernelspec's argv is the whole command: the launcher takes no kernel arguments.
c.Execute.extra_arguments = []
