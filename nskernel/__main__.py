"""The ``nskernel`` command: install kernelspecs, check this machine."""

from __future__ import annotations

import argparse
import sys

from nskernel import isolation, limits
from nskernel.kernel import kernelspec


def _install(args: argparse.Namespace) -> int:
    spec = isolation.from_args(args, isolation.KERNEL_DEFAULT, isolation.DEFAULT_HOSTNAME)
    kernel_limits = limits.from_args(args, for_kernel=True)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = kernelspec.install(spec, args.name, args.display_name, user=args.user, prefix=prefix,
                              limits=kernel_limits, provisioner=args.provisioner,
                              remote=_hosts(args.remote))
    locks = [name.replace("_", "-") for name in ("visible_only", "readonly", "seccomp")
             if getattr(spec, name)]
    locks += [f"hide {path}" for path in spec.hide]
    locks += [f"{name} {value}" for name, value in kernel_limits.describe()]
    print(f"Installed kernelspec {args.name} ({spec.describe()}"
          f"{'; ' + ', '.join(locks) if locks else ''}) in {path}")
    return 0


def _hosts(remote: str | None) -> list[str] | None:
    """``--remote``'s value: None (a local kernel), [] (hosts from the server), or the hosts."""
    return None if remote is None else [host for host in remote.split(",") if host]


def _doctor(_args: argparse.Namespace) -> int:
    from nskernel.kernel import doctor

    checks = doctor.run_checks()
    print(doctor.report(checks, doctor.limit_checks(), doctor.container_checks()))
    return 0 if all(check.ok for check in checks if check.namespace != "user") else 1


def _clean(_args: argparse.Namespace) -> int:
    from nskernel.locks import cgroup_cleanup
    from nskernel.netlab import records

    removed, refused = records.clean()
    removed += cgroup_cleanup.clean()
    for item in removed:
        print(f"removed {item}")
    for item in refused:
        print(f"refused {item}", file=sys.stderr)
    print(f"nskernel clean: {len(removed)} left behind by kernels that died removed; "
          "nothing else touched")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nskernel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    install = commands.add_parser(
        "install", help="install the Isolated Python kernelspec",
        description="Install a kernelspec. Without namespace flags: "
                    f"{', '.join(isolation.KERNEL_DEFAULT)}, hostname "
                    f"{isolation.DEFAULT_HOSTNAME!r}.")
    where = install.add_argument_group("where (as 'python -m ipykernel install')")
    where = where.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true", help="install into sys.prefix")
    where.add_argument("--prefix", help="install into this prefix")
    install.add_argument("--name", default=kernelspec.KERNEL_NAME, help="kernelspec name")
    install.add_argument("--display-name", default=kernelspec.DISPLAY_NAME,
                         help="name shown in Jupyter's launcher")
    started_by = install.add_mutually_exclusive_group()
    started_by.add_argument("--provisioner", action="store_true",
                            help="start the kernel through the nskernel-provisioner kernel "
                                 "provisioner, whose config carries the settings (a server's "
                                 "configuration may then cap them)")
    started_by.add_argument("--remote", nargs="?", const="", metavar="HOST,HOST",
                            help="a kernel that gateway-provisioners' DistributedProvisioner "
                                 "starts on one of these hosts over ssh (without hosts: those "
                                 "the server's configuration names); see docs/many-hosts.md")
    from nskernel.kernel.setup import add_kernel_arguments

    add_kernel_arguments(install)
    install.set_defaults(run=_install)

    doctor = commands.add_parser("doctor", help="which namespaces this user can create")
    doctor.set_defaults(run=_doctor)

    clean = commands.add_parser(
        "clean", help="remove what network labs and cgroups of dead kernels left behind",
        description="Remove the namespaces and links that kernels which died had recorded as "
                    "their own, if they are still what was recorded, and the empty cgroups "
                    "named after them below our own. Nothing else.")
    clean.set_defaults(run=_clean)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (isolation.IsolationError, limits.LimitError) as exc:
        parser.exit(2, f"nskernel {args.command}: error: {exc}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
