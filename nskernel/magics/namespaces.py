"""The namespace magics: thin parsers in front of :mod:`nskernel.cell.runner` and friends.

``%%isolate`` runs a cell in new namespaces, ``%%uts`` and ``%%netns`` are its shorthands,
``%nsinfo`` shows where the kernel stands. Bad input raises IPython's ``UsageError`` (the
exact class: only it is rendered as one line without a traceback).
"""

from __future__ import annotations

import argparse
import ast
import functools
import linecache
import os
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser

from nskernel import isolation, limits
from nskernel._syscalls import NamespaceError
from nskernel.cell import jailed_output, maps, runner, sandbox, wire
from nskernel.limits import LimitError, Limits
from nskernel.magics import nsinfo
from nskernel.magics.magicargs import magic_parser, parse_line, with_usage
from nskernel.netlab import netns

CELL_FILENAME = "<isolated cell>"
#: --jail's limits, where none are given.
JAIL_MEMORY, JAIL_PIDS = "256M", 64


def _parser(prog: str, description: str, *, namespaces: bool = True) -> MagicArgumentParser:
    """A magic's parser; ``prog`` lacks one '%' (IPython's usage formatter adds it)."""
    parser = magic_parser(prog, description)
    if namespaces:
        isolation.add_arguments(parser, user_flag="--user")
        isolation.add_lock_arguments(parser)
        parser.add_argument("--all", action="store_true",
                            help="every namespace: pid, net, mount, uts, ipc and user")
        parser.add_argument("--jail", action="store_true",
                            help="for untrusted code: --all --readonly --seccomp --caps none, "
                                 f"--memory {JAIL_MEMORY} --pids {JAIL_PIDS} unless given; "
                                 "its output is shown as data (text, pictures, sanitised "
                                 "HTML), never run, and --export brings back plain data")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="kill the cell and everything it started after S seconds")
    limits.add_arguments(parser)
    parser.add_argument("--stats", action="store_true", help="after the cell, one line: wall "
                        "and CPU time, peak memory, most processes at once")
    parser.add_argument("--export", metavar="NAMES", default="",
                        help="comma-separated names whose values come back to the notebook")
    parser.add_argument("--sh", action="store_true", help="run the cell as a shell script")
    parser.add_argument("--pass-fd", metavar="NAME", action="append", default=[],
                        help="keep this descriptor of the kernel's in the cell: a variable "
                             "holding a socket or file (or a number); the cell inherits no "
                             "other (repeat for more)")
    return parser


ISOLATE = _parser(
    "%isolate",
    "Run the cell in a child process inside new namespaces (default, with no namespace "
    "flag: pid, net, mount, uts, ipc). It sees the notebook's variables; what it assigns "
    "stays inside, except the --export names. Output streams in as it is produced.")
ISOLATE.add_argument("--netns", metavar="NAME",
                     help="join the named network namespace (/run/netns/NAME) instead of "
                          "making one, as `ip netns exec` does (then no namespace is new "
                          "unless named)")
UTS = _parser("%uts", "Run the cell with its own hostname: %%isolate --uts --hostname H.",
              namespaces=False)
UTS.add_argument("hostname", help="the hostname inside")
NETNS = _parser(
    "%netns", "Run the cell inside an existing named network namespace, as "
               "`ip netns exec NAME` does, optionally in further new namespaces.")
NETNS.add_argument("name", help="a name from /run/netns (see `ip netns list`)")


def as_isolate_args(args: argparse.Namespace, **settings: Any) -> argparse.Namespace:
    """A shorthand's parsed ``args`` as %%isolate's: its defaults, overlaid with every flag
    the shorthand shares with it, and ``settings`` (``uts=True``, ``netns=NAME``)."""
    handed = ISOLATE.parse_args([])
    shared = {name: value for name, value in vars(args).items() if hasattr(handed, name)}
    vars(handed).update(shared, **settings)
    return handed


NSINFO = magic_parser("nsinfo", (
    "Show the namespaces of the kernel (or of PID) beside those of the host (in Isolated "
    "Python) or of the kernel's parent process."))
NSINFO.add_argument("pid", nargs="?", type=int, help="another process to look at")


@magics_class
class NamespaceMagics(Magics):
    """%%isolate, %%uts, %%netns and %nsinfo."""

    @cell_magic
    @with_usage(ISOLATE)
    def isolate(self, line: str, cell: str) -> Any:
        """Run the cell in new namespaces."""
        __tracebackhide__ = True  # an interrupt or error shows the cell, not us
        return self._isolate(parse_line(ISOLATE, line), cell, ISOLATE.prog)

    @cell_magic
    @with_usage(UTS)
    def uts(self, line: str, cell: str) -> Any:
        """Run the cell with its own hostname: %%isolate --uts --hostname H."""
        __tracebackhide__ = True  # an interrupt or error shows the cell, not us
        args = parse_line(UTS, line)
        return self._isolate(as_isolate_args(args, uts=True), cell, UTS.prog)

    @cell_magic
    @with_usage(NETNS)
    def netns(self, line: str, cell: str) -> Any:
        """Run the cell inside a named network namespace: %%isolate --netns NAME."""
        __tracebackhide__ = True  # an interrupt or error shows the cell, not us
        args = parse_line(NETNS, line)
        return self._isolate(as_isolate_args(args, netns=args.name), cell, NETNS.prog)

    @line_magic
    @with_usage(NSINFO)
    def nsinfo(self, line: str) -> nsinfo.Table:
        """Show the kernel's namespaces beside the host's."""
        args = parse_line(NSINFO, line)
        try:
            table = nsinfo.nsinfo(args.pid)
            limits_table = nsinfo.limits_table() if args.pid is None else None
            if limits_table is not None:
                from IPython.display import display

                display(table)
                return limits_table
            return table
        except (ProcessLookupError, PermissionError) as exc:
            raise UsageError(f"%nsinfo: {exc}") from None

    # ------------------------------------------------------------------------ helpers
    def _isolate(self, args: Any, cell: str, prog: str) -> Any:
        """%%isolate with parsed flags; ``prog`` names the magic the user typed."""
        __tracebackhide__ = True
        if args.all or args.jail:
            for name in isolation.NAMESPACES:
                setattr(args, name, True)
            args.user_ns = True
        if args.jail:
            args.readonly = args.seccomp = True
            args.caps = args.caps or "none"
            args.memory = args.memory or JAIL_MEMORY
            args.pids = args.pids or JAIL_PIDS
        try:
            cell_limits = limits.from_args(args)
        except LimitError as exc:
            raise UsageError(f"%{prog}: {exc}") from None
        if cell_limits.pids is not None:
            args.user_ns = True  # the kernel counts a user's processes per user namespace
        settings: dict[str, Any] = {}
        if args.netns is not None:
            if args.net:
                raise UsageError(f"%{prog}: --net would leave the named namespace; drop it")
            try:
                os.close(netns.open_netns(args.netns))
            except netns.LabError as exc:
                raise UsageError(f"%{prog}: {exc}") from None
            settings["netns"] = args.netns
        if args.user_ns and os.geteuid() == 0 and maps.id_is_mapped(sandbox.NOBODY):
            # Root inside is nobody where the kernel has nobody to map to (a root kernel),
            # else the kernel's own user.
            settings["map_root_to"] = sandbox.NOBODY
        default = () if args.netns is not None else isolation.NAMESPACES  # as ip netns exec
        try:
            spec = isolation.from_args(args, default, **settings)
        except isolation.IsolationError as exc:
            raise UsageError(f"%{prog}: {exc}") from None
        return self._run(spec, args, cell, cell_limits)

    def _run(self, spec: isolation.Isolation, args: Any, cell: str,
             cell_limits: Limits | None = None) -> Any:
        __tracebackhide__ = True
        try:
            runner.check_timeout(args.timeout)
        except ValueError:
            raise UsageError("--timeout: give a finite number of seconds above 0") from None
        exports = [name.strip() for name in args.export.split(",") if name.strip()]
        bad = [name for name in exports if not name.isidentifier()]
        if bad:
            raise UsageError(f"--export: {', '.join(bad)} is not a Python name")
        if args.sh and exports:
            raise UsageError("--export works for Python cells, not with --sh")
        target: Callable[[], Any] | list[str]
        if args.sh:
            target = ["/bin/sh", "-c", cell]
        else:
            target = _python_cell(self.shell, cell, exports, jailed=args.jail)
        on_usage = (lambda usage: print(usage, flush=True)) if args.stats else None
        pass_fds = [_descriptor(self.shell.user_ns, name) for name in args.pass_fd]
        try:
            outcome = runner.run(spec, target, timeout=args.timeout,
                                 on_display=_publish_inert if args.jail else _publish_display,
                                 limits=cell_limits, on_usage=on_usage, untrusted=args.jail,
                                 pass_fds=pass_fds)
            if args.jail and not args.sh:
                outcome = jailed_output.received(outcome, exports)
        except (runner.IsolatedRunError, NamespaceError, jailed_output.NotPlainData) as exc:
            raise UsageError(f"isolated cell: {exc}") from None
        if args.sh:
            if outcome:
                raise UsageError(f"the isolated shell script exited with status {outcome}")
            return None
        value, exported = outcome
        self.shell.user_ns.update(exported)
        return value


def _descriptor(namespace: dict, name: str) -> int:
    """--pass-fd's NAME: the descriptor of the notebook's variable (a socket, a file: what
    has ``fileno()``), or a number; open, and not the kernel's stdin, stdout or stderr."""
    if name.isdigit():
        fd = int(name)
    elif name not in namespace:
        raise UsageError(f"--pass-fd {name}: the notebook has no variable {name!r} (give a "
                         "variable holding a socket or file, or a descriptor number)")
    else:
        try:
            fd = namespace[name] if isinstance(namespace[name], int) else namespace[name].fileno()
        except (AttributeError, OSError, ValueError):
            raise UsageError(f"--pass-fd {name}: not an open socket or file") from None
    if not isinstance(fd, int) or fd < 3:
        raise UsageError(f"--pass-fd {name}: give a descriptor above 2 (the cell has its own "
                         "stdin, stdout and stderr)")
    try:
        os.fstat(fd)
    except OSError:
        raise UsageError(f"--pass-fd {name}: descriptor {fd} is not open") from None
    return fd


def _publish_display(data: dict, metadata: dict) -> None:
    from IPython.display import publish_display_data

    publish_display_data(data, metadata)


def _publish_inert(data: dict, metadata: dict) -> None:
    """A jailed cell's display: data the page shows, never code it runs."""
    _publish_display(*jailed_output.inert(data, metadata))


def _python_cell(shell: Any, cell: str, exports: list[str],
                 jailed: bool = False) -> Callable[[], tuple]:
    """The callable the child runs: the cell in the notebook's namespace, IPython syntax
    (``!cmd``, ``%magic``) included; returns (last expression's value, exported values).
    ``jailed``: the value as its display (a mimebundle) and the exports as plain data, all
    the kernel will take from a jail (see nskernel.cell.jailed_output)."""
    try:
        source, body, tail = _compiled(shell, cell, _transformers(shell))
    except TypeError:  # a transformer that cannot be hashed: compiled each time
        source, body, tail = _compiled.__wrapped__(shell, cell, ())

    def run_cell() -> tuple:
        linecache.cache[CELL_FILENAME] = (len(source), None, source.splitlines(True),
                                          CELL_FILENAME)
        _route_output_in_child(shell)
        namespace = shell.user_ns
        exec(body, namespace)
        value = eval(tail, namespace) if tail else None
        missing = [name for name in exports if name not in namespace]
        if missing:
            raise NameError(f"--export: the cell did not define {', '.join(missing)}")
        exported = {name: namespace[name] for name in exports}
        if jailed:
            try:
                for name, exported_value in exported.items():
                    jailed_output.check_plain(exported_value, f"--export {name}")
            except jailed_output.NotPlainData as exc:
                raise runner.IsolatedRunError(str(exc)) from None  # one line in the notebook
            return jailed_output.formatted(shell, value), exported
        return value, exported

    return run_cell


def _transformers(shell: Any) -> tuple:
    """What turns a cell's IPython syntax into Python: a cell compiled before any of them
    changed (an extension may add one) is compiled again."""
    manager = shell.input_transformer_manager
    return (*manager.cleanup_transforms, *manager.line_transforms,
            *manager.token_transformers, *shell.input_transformers_post)


@functools.lru_cache(maxsize=32)
def _compiled(shell: Any, cell: str, _transformers: tuple) -> tuple[str, Any, Any]:
    """(the cell as Python, the code of its body, the code of its last expression or
    None), for the same cell once: a notebook runs the same cell again and again, and
    IPython's transforms, the parse and the compile take a few tenths of a millisecond (code
    objects never change: each run execs the same ones afresh). A cell that does not parse
    raises each time."""
    source = shell.transform_cell(cell)
    try:
        tree = ast.parse(source, CELL_FILENAME)
    except SyntaxError as exc:
        raise UsageError(f"isolated cell, line {exc.lineno}: {exc.msg}") from None
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    body = compile(tree, CELL_FILENAME, "exec")
    tail = compile(ast.Expression(last.value), CELL_FILENAME, "eval") if last else None
    return source, body, tail


def _route_output_in_child(shell: Any) -> None:
    """In the child: display() goes over the result pipe, not the kernel's zmq sockets."""
    publisher = getattr(shell, "display_pub", None)
    if publisher is not None:
        publisher.publish = lambda data, metadata=None, **_kw: wire.publish_display(
            data, metadata)

