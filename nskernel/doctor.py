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


def report(checks: list[Check]) -> str:
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()} (not root: via a user namespace)"
    lines = [f"nskernel doctor, as {who}:"]
    lines += [f"  {'ok ' if check.ok else 'NO '} {check.namespace:<6} {check.detail}"
              for check in checks]
    # The kernel always has a user namespace of its own, even as root.
    needed = [check for check in checks
              if not check.ok and check.namespace in ("user", *NAMESPACES, "init")]
    lines.append("The Isolated Python kernel can start here." if not needed else
                 "The Isolated Python kernel cannot start here until the above is fixed.")
    return "\n".join(lines)
