"""The ``nskernel`` command: install kernelspecs, check this machine."""

from __future__ import annotations

import argparse
import sys

from nskernel import isolation, kernelspec


def _install(args: argparse.Namespace) -> int:
    spec = isolation.from_args(args, isolation.KERNEL_DEFAULT, isolation.DEFAULT_HOSTNAME)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = kernelspec.install(spec, args.name, args.display_name, user=args.user, prefix=prefix)
    print(f"Installed kernelspec {args.name} ({spec.describe()}) in {path}")
    return 0


def _doctor(_args: argparse.Namespace) -> int:
    from nskernel import doctor

    checks = doctor.run_checks()
    print(doctor.report(checks))
    return 0 if all(check.ok for check in checks if check.namespace != "user") else 1


def _clean(_args: argparse.Namespace) -> int:
    from nskernel import records

    removed = records.clean()
    for item in removed:
        print(f"removed {item}")
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
    isolation.add_arguments(install)
    install.set_defaults(run=_install)

    doctor = commands.add_parser("doctor", help="which namespaces this user can create")
    doctor.set_defaults(run=_doctor)

    clean = commands.add_parser(
        "clean", help="remove what network labs of dead kernels left behind",
        description="Remove the namespaces and links that kernels which died had recorded as "
                    "their own, if they are still what was recorded. Nothing else.")
    clean.set_defaults(run=_clean)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except isolation.IsolationError as exc:
        parser.exit(2, f"nskernel {args.command}: error: {exc}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
