"""``nskernel doctor``: which namespaces can this user create here, and how to fix the rest.

Each check really enters the namespace, in a throw-away child, through the same
:func:`nskernel.sandbox.enter` the kernel and ``%%isolate`` use, so "ok" means they will
manage too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nskernel import _syscalls, runner
from nskernel.isolation import NAMESPACES, Isolation
from nskernel.launch import LaunchError, find_dumb_init


@dataclass(frozen=True)
class Check:
    namespace: str
    ok: bool
    detail: str


def try_enter(spec: Isolation) -> str | None:
    """Enter ``spec`` in a child (the %%isolate runner); None if it worked, else the line."""
    try:
        runner.run(spec, lambda: None)
    except (runner.IsolatedRunError, _syscalls.NamespaceError) as exc:
        return str(exc)
    return None


def run_checks() -> list[Check]:
    checks = []
    as_root = os.geteuid() == 0
    user_error = try_enter(Isolation(user=True))
    checks.append(Check("user", user_error is None, user_error or "ok"))
    for name in NAMESPACES:
        error = try_enter(Isolation(**{name: True}))
        detail = error or ("ok" if as_root else "ok (inside a user namespace)")
        checks.append(Check(name, error is None, detail))
    try:
        checks.append(Check("init", True, f"PID 1 of the kernel will be {find_dumb_init()}"))
    except LaunchError as exc:
        checks.append(Check("init", False, str(exc)))
    return checks


def limit_checks() -> list[Check]:
    """Which limits hold for a whole cell (cgroups we may make) and which only per process
    (rlimits), here and for this user; and whether seccomp can be had."""
    from nskernel import cgroups

    the_plan = cgroups.plan()
    checks = []
    checks.append(Check("pids", True, "whole cell: counted in the cell's own user namespace "
                                      "(rlimit)"))
    for job, fallback in (("memory", "per process only (rlimit)"), ("cpu", None)):
        place = the_plan.places.get(job)
        name = "cpus" if job == "cpu" else job
        if place is not None:
            checks.append(Check(name, True, f"whole cell: cgroup v{place.version} {place.own}"))
        else:
            why = the_plan.missing.get(job, "no cgroup")
            checks.append(Check(name, False, f"{fallback}: {why}" if fallback else
                                f"cannot be enforced: {why}"))
    counted = the_plan.places.get("cpuacct")
    checks.append(Check("stats", counted is not None,
                        "wall, CPU time, peak memory and processes from the cell's cgroups"
                        if counted else "wall, CPU time and peak memory of the first process"
                        " only (no cgroup)"))
    try:
        from nskernel.seccomp import compiled_filter

        compiled_filter()
        checks.append(Check("seccomp", True, "libseccomp found: --seccomp works"))
    except (ImportError, OSError) as exc:
        checks.append(Check("seccomp", False, f"--seccomp needs libseccomp: {exc}"))
    return checks


def report(checks: list[Check], limits: list[Check] | None = None) -> str:
    """The namespace checks, the verdict on the kernel, then ``limits`` (limit_checks)."""
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()} (not root: via a user namespace)"
    lines = [f"nskernel doctor, as {who}:"]
    lines += [f"  {'ok ' if check.ok else 'NO '} {check.namespace:<6} {check.detail}"
              for check in checks]
    # The kernel always has a user namespace of its own, even as root.
    needed = [check for check in checks
              if not check.ok and check.namespace in ("user", *NAMESPACES, "init")]
    lines.append("The Isolated Python kernel can start here." if not needed else
                 "The Isolated Python kernel cannot start here until the above is fixed.")
    if limits is not None:
        lines.append("Limits (--memory, --pids, --cpus, --stats, --seccomp), for this user "
                     "here:")
        lines += [f"  {'ok ' if check.ok else 'NO '} {check.namespace:<7} {check.detail}"
                  for check in limits]
    return "\n".join(lines)
