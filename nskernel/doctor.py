"""``nskernel doctor``: which namespaces can this user create here, and how to fix the rest.

Each check really enters the namespace, in a throw-away child, through the same
:func:`nskernel.sandbox.enter` the kernel uses, so "ok" means the kernel will manage too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nskernel import sandbox
from nskernel.isolation import NAMESPACES, Isolation


@dataclass(frozen=True)
class Check:
    namespace: str
    ok: bool
    detail: str


def try_enter(spec: Isolation) -> str | None:
    """Enter ``spec`` in a forked child; None if it worked, else the one-line error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 0
        try:
            sandbox.enter(spec)
        except BaseException as exc:  # noqa: BLE001 - report anything, never return
            os.write(write_end, str(exc).encode())
            code = 1
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _pid, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return message or f"child failed with status {status}"


def run_checks() -> list[Check]:
    checks = []
    as_root = os.geteuid() == 0
    user_error = try_enter(Isolation(user=True))
    checks.append(Check("user", user_error is None, user_error or "ok"))
    for name in NAMESPACES:
        error = try_enter(Isolation(**{name: True}))
        detail = error or ("ok" if as_root else "ok (inside a user namespace)")
        checks.append(Check(name, error is None, detail))
    return checks


def report(checks: list[Check]) -> str:
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()} (not root: via a user namespace)"
    lines = [f"nskernel doctor, as {who}:"]
    lines += [f"  {'ok ' if check.ok else 'NO '} {check.namespace:<6} {check.detail}"
              for check in checks]
    needed = [check for check in checks if not check.ok and check.namespace in NAMESPACES]
    lines.append("The Isolated Python kernel can start here." if not needed else
                 "The Isolated Python kernel cannot start here until the above is fixed.")
    return "\n".join(lines)
