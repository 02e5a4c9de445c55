"""``nskernel doctor``: which namespaces can this user create here, and how to fix the rest.

Each check really enters the namespace, in a throw-away child, through the same
:func:`nskernel.cell.sandbox.enter` the kernel and ``%%isolate`` use, so "ok" means they will
manage too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nskernel import _syscalls
from nskernel.cell import runner
from nskernel.isolation import NAMESPACES, Isolation
from nskernel.kernel.setup import LaunchError, find_dumb_init


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
        # uts with a hostname, as the kernel sets one: a runtime's default seccomp profile
        # (containers-common's, podman's and CRI-O's) lets unshare through but refuses
        # sethostname without CAP_SYS_ADMIN.
        spec = Isolation(uts=True, hostname="doctor") if name == "uts" else Isolation(
            **{name: True})
        error = try_enter(spec)
        if error and name == "pid" and "before returning a result" in error:
            # Its first process died mounting /proc, whose error has no way back to us.
            error += ("; its first process could not mount a fresh /proc (a covered /proc: "
                      "see 'proc' below)")
        detail = error or ("ok" if as_root else "ok (inside a user namespace)")
        checks.append(Check(name, error is None, detail))
    try:
        checks.append(Check("init", True, f"PID 1 of the kernel will be {find_dumb_init()}"))
    except LaunchError as exc:
        checks.append(Check("init", False, str(exc)))
    return checks


#: What --memory is where no cgroup may be made, and what to do about it: one line.
MEMORY_WITHOUT_CGROUP = (
    "per process only (rlimits): each process's mappings, shared ones too, and each tmpfs up "
    "to its size, not all of them together; only a cgroup bounds the sum: delegate one (a "
    "systemd user session with Delegate=yes, as jupyterhub-systemdspawner gives MemoryMax)")


def limit_checks() -> list[Check]:
    """Which limits hold for a whole cell (cgroups we may make) and which only per process
    (rlimits), here and for this user; and whether seccomp can be had."""
    from nskernel.locks import cgroups

    the_plan = cgroups.plan()
    checks = []
    checks.append(Check("pids", True, "whole cell: counted in the cell's own user namespace "
                                      "(rlimit)"))
    for job, fallback in (("memory", MEMORY_WITHOUT_CGROUP), ("cpu", None)):
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
        from nskernel.locks.seccomp import compiled_filter

        compiled_filter()
        checks.append(Check("seccomp", True, "libseccomp found: --seccomp works"))
    except (ImportError, OSError) as exc:
        checks.append(Check("seccomp", False, f"--seccomp needs libseccomp: {exc}"))
    return checks


#: The directories sysfs keeps empty for other filesystems to be mounted on.
SYSFS_MOUNT_POINTS = ("/sys/fs/cgroup", "/sys/kernel/tracing", "/sys/kernel/debug",
                      "/sys/kernel/security", "/sys/kernel/config", "/sys/fs/bpf",
                      "/sys/fs/pstore", "/sys/fs/fuse/connections", "/sys/fs/selinux",
                      "/sys/firmware/efi/efivars")


def container_checks(root: Path = Path("/"), environ: Mapping[str, str] | None = None
                     ) -> list[Check]:
    """What a container around us does to nskernel, each with the setting that changes it.

    Read from files only (``root`` is "/" but for tests): the marks a runtime leaves
    (/.dockerenv, /run/.containerenv, KUBERNETES_SERVICE_HOST), a seccomp filter on PID 1
    (a runtime's default profile refuses unshare and mount), AppArmor's restriction of user
    namespaces, the sysctls that turn them off, paths of /proc covered by the runtime (Linux
    then refuses the fresh /proc a pid namespace needs) and a cgroup namespace.
    """
    environ = os.environ if environ is None else environ

    def read(path: str) -> str:
        try:
            return (root / path.lstrip("/")).read_text()
        except OSError:
            return ""

    def status_field(path: str, field: str) -> str:
        for line in read(path).splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
        return ""

    found = []
    runtime = ("Kubernetes" if environ.get("KUBERNETES_SERVICE_HOST") else
               "Docker" if (root / ".dockerenv").exists() else
               "Podman" if (root / "run/.containerenv").exists() else None)
    if runtime:
        found.append(Check("runtime", True, f"inside a {runtime} container"))
    if status_field("/proc/1/status", "Seccomp") == "2":
        found.append(Check("seccomp", False, "PID 1 runs under a seccomp filter (a runtime's "
                           "default profile refuses sethostname without "
                           "CAP_SYS_ADMIN, Docker's and containerd's unshare and mount too): "
                           "run the container with nskernel's profile deploy/seccomp/"
                           "nskernel.json (Kubernetes: securityContext.seccompProfile.type: "
                           "Localhost; podman: --security-opt seccomp=nskernel.json) or "
                           "seccompProfile.type: Unconfined"))
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").strip() == "1":
        found.append(Check("apparmor", False, "AppArmor keeps unprivileged users out of user "
                           "namespaces: sysctl kernel.apparmor_restrict_unprivileged_userns=0, "
                           "or an AppArmor profile with 'userns,' for this Python"))
    profile = read("/proc/self/attr/apparmor/current") or read("/proc/self/attr/current")
    if profile.strip() and not profile.startswith("unconfined"):
        found.append(Check("apparmor", False, f"AppArmor profile {profile.strip()!r} confines "
                           "this process (it may refuse mount): Kubernetes: "
                           "securityContext.appArmorProfile.type: Unconfined"))
    if read("/proc/sys/user/max_user_namespaces").strip() == "0":
        found.append(Check("userns", False, "user namespaces are off on this machine: sysctl "
                           "user.max_user_namespaces=10000 (on the node, for a container)"))
    if read("/proc/sys/kernel/unprivileged_userns_clone").strip() == "0":
        found.append(Check("userns", False, "unprivileged user namespaces are off: sysctl "
                           "kernel.unprivileged_userns_clone=1"))
    # systemd mounts binfmt_misc (an automount) on /proc/sys/fs/binfmt_misc: a directory
    # procfs keeps empty for that, which Linux lets be covered without refusing a fresh /proc.
    # Likewise the directories sysfs keeps empty for other filesystems (cgroup, tracefs,
    # debugfs, securityfs, ...): only covered files of its own (/sys/firmware) refuse a /sys.
    targets = [line.split()[4] for line in read("/proc/self/mountinfo").splitlines()
               if len(line.split()) > 4]
    covered = sorted({target for target in targets if target.startswith("/proc/")
                      and target != "/proc/sys/fs/binfmt_misc"})
    covered_sys = sorted({target for target in targets if target.startswith("/sys/")
                          and not target.startswith(SYSFS_MOUNT_POINTS)})
    if covered or covered_sys:
        both = covered + covered_sys
        kinds = " and ".join(kind for kind, paths in (("/proc", covered), ("/sys", covered_sys))
                             if paths)
        found.append(Check("proc", False, f"parts of {kinds} are covered ({', '.join(both[:3])}"
                           f"{', ...' if len(both) > 3 else ''}): Linux refuses the fresh "
                           "/proc of a pid namespace and /sys of a net namespace then; "
                           "Kubernetes: securityContext.procMount: Unmasked with hostUsers: "
                           "false (podman: --security-opt unmask=ALL with --userns=auto; "
                           "Docker: --security-opt systempaths=unconfined)"))
    own = read("/proc/self/cgroup")
    if runtime and own.strip() and all(line.endswith(":/") for line in own.splitlines()):
        found.append(Check("cgroup", True, "a cgroup namespace of its own: cell limits need "
                           "that cgroup to be writable and delegated (cgroup v2, with the "
                           "container's processes in a child cgroup); else they are rlimits"))
    return found


def report(checks: list[Check], limits: list[Check] | None = None,
           container: list[Check] | None = None) -> str:
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
    if container:
        lines.append("The container or machine around this one, and what to change:")
        lines += [f"  {'   ' if check.ok else 'NO '} {check.namespace:<8} {check.detail}"
                  for check in container]
    return "\n".join(lines)
