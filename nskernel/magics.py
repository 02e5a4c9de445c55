"""The namespace magics: thin parsers in front of :mod:`nskernel.runner` and friends.

``%%isolate`` runs a cell in new namespaces, ``%%uts`` and ``%%netns`` are its shorthands,
``%nsinfo`` shows where the kernel stands. Bad input raises IPython's ``UsageError`` (the
exact class: only it is rendered as one line without a traceback).
"""

from __future__ import annotations

import ast
import linecache
import os
import shlex
from collections.abc import Callable
from typing import Any

from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.utils.text import DollarFormatter

from nskernel import isolation, nsinfo, runner, sandbox
from nskernel._syscalls import NamespaceError

CELL_FILENAME = "<isolated cell>"
#: Who root inside ``%%isolate --user`` is outside, when the kernel runs as root: nobody.
#: (In a rootless kernel only the kernel's own user is mapped: the cell's root is that.)
NOBODY = 65534


def _parser(prog: str, description: str, *, namespaces: bool = True) -> MagicArgumentParser:
    """A magic's parser; ``prog`` lacks one '%' (IPython's usage formatter adds it)."""
    parser = MagicArgumentParser(prog=prog, description=description, add_help=False)
    if namespaces:
        isolation.add_arguments(parser, user_flag="--user")
        parser.add_argument("--all", action="store_true",
                            help="every namespace: pid, net, mount, uts, ipc and user")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="kill the cell and everything it started after S seconds")
    parser.add_argument("--export", metavar="NAMES", default="",
                        help="comma-separated names whose values come back to the notebook")
    parser.add_argument("--sh", action="store_true", help="run the cell as a shell script")
    return parser


ISOLATE = _parser(
    "%isolate",
    "Run the cell in a child process inside new namespaces (default, with no namespace "
    "flag: pid, net, mount, uts, ipc). It sees the notebook's variables; what it assigns "
    "stays inside, except the --export names. Output streams in as it is produced.")
UTS = _parser("%uts", "Run the cell with its own hostname: %%isolate --uts --hostname H.",
              namespaces=False)
UTS.add_argument("hostname", help="the hostname inside")
NETNS = _parser(
    "%netns", "Run the cell inside an existing named network namespace, as "
               "`ip netns exec NAME` does, optionally in further new namespaces.")
NETNS.add_argument("name", help="a name from /run/netns (see `ip netns list`)")
NSINFO = MagicArgumentParser(prog="nsinfo", add_help=False, description=(
    "Show the namespaces of the kernel (or of PID) beside those of the host (in Isolated "
    "Python) or of the kernel's parent process."))
NSINFO.add_argument("pid", nargs="?", type=int, help="another process to look at")


def with_usage(parser: MagicArgumentParser) -> Callable[[Callable], Callable]:
    """Put the parser's help into the magic's docstring, so `%%isolate?` shows the usage.

    The magic gets its line as typed: :func:`parse_line` expands ``$name`` and ``{expr}``
    itself, after checking the length (IPython's own expansion takes time that grows with
    the square of the line's length: a minute for 100,000 characters).
    """
    def decorate(function: Callable) -> Callable:
        function.__doc__ = (function.__doc__ or "") + "\n" + parser.format_help()
        return no_var_expand(function)
    return decorate


#: Longer magic lines are refused before parsing (quoting them costs time; nothing needs it).
MAX_LINE = 4096


def parse_line(parser: MagicArgumentParser, line: str) -> Any:
    """Expand and parse a magic's line; bad quoting and oversized lines are one-line
    UsageErrors too."""
    _check_length(parser, line)
    shell = get_ipython()
    if shell is not None:
        line = _expand(shell.user_ns, line)
        _check_length(parser, line)
    try:
        return parser.parse_args(shlex.split(line))
    except ValueError as exc:  # shlex: unbalanced quotes
        raise UsageError(f"%{parser.prog}: {exc}") from None


def _check_length(parser: MagicArgumentParser, line: str) -> None:
    if len(line) > MAX_LINE:
        raise UsageError(f"%{parser.prog}: the line is {len(line)} characters; at most "
                         f"{MAX_LINE}")


def _expand(namespace: dict, line: str) -> str:
    """``$name`` and ``{expression}`` from the notebook's namespace, as IPython would have
    expanded them (left as they are where they do not evaluate)."""
    try:
        return DollarFormatter().vformat(line, args=[], kwargs=dict(namespace))
    except Exception:  # noqa: BLE001 - IPython's rule: what does not format stays as typed
        return line


@magics_class
class NamespaceMagics(Magics):
    """%%isolate, %%uts, %%netns and %nsinfo."""

    @cell_magic
    @with_usage(ISOLATE)
    def isolate(self, line: str, cell: str) -> Any:
        """Run the cell in new namespaces."""
        args = parse_line(ISOLATE, line)
        if args.all:
            for name in isolation.NAMESPACES:
                setattr(args, name, True)
            args.user_ns = True
        spec = self._spec(ISOLATE, args, default=isolation.NAMESPACES)
        return self._run(spec, args, cell)

    @cell_magic
    @with_usage(UTS)
    def uts(self, line: str, cell: str) -> Any:
        """Run the cell with its own hostname."""
        args = parse_line(UTS, line)
        spec = self._build(UTS, lambda: isolation.Isolation(uts=True, hostname=args.hostname))
        return self._run(spec, args, cell)

    @cell_magic
    @with_usage(NETNS)
    def netns(self, line: str, cell: str) -> Any:
        """Run the cell inside a named network namespace."""
        args = parse_line(NETNS, line)
        existing = sorted(os.listdir(sandbox.NETNS_DIR)) if os.path.isdir(
            sandbox.NETNS_DIR) else []
        if args.name not in existing:
            raise UsageError(
                f"%%netns: no network namespace named {args.name!r} (existing: "
                f"{', '.join(existing) or 'none'}; create one with %netns add {args.name})")
        if args.net:
            raise UsageError("%%netns: --net would leave the named namespace; drop it")
        spec = self._spec(NETNS, args, default=(), netns=args.name)
        return self._run(spec, args, cell)

    @line_magic
    @with_usage(NSINFO)
    def nsinfo(self, line: str) -> nsinfo.Table:
        """Show the kernel's namespaces beside the host's."""
        args = parse_line(NSINFO, line)
        try:
            return nsinfo.nsinfo(args.pid)
        except (ProcessLookupError, PermissionError) as exc:
            raise UsageError(f"%nsinfo: {exc}") from None

    # ------------------------------------------------------------------------ helpers
    @staticmethod
    def _spec(parser: MagicArgumentParser, args: Any, default: tuple[str, ...],
              **settings: Any) -> isolation.Isolation:
        """The magic's flags as an Isolation; ``--user`` maps root inside to nobody where the
        kernel has nobody to map to (a root kernel), else to the kernel's own user."""
        if args.user_ns and os.geteuid() == 0 and sandbox.id_is_mapped(NOBODY):
            settings["map_root_to"] = NOBODY
        return NamespaceMagics._build(
            parser, lambda: isolation.from_args(args, default, **settings))

    @staticmethod
    def _build(parser: MagicArgumentParser,
               build: Callable[[], isolation.Isolation]) -> isolation.Isolation:
        try:
            return build()
        except isolation.IsolationError as exc:
            raise UsageError(f"%{parser.prog}: {exc}") from None

    def _run(self, spec: isolation.Isolation, args: Any, cell: str) -> Any:
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
            target = _python_cell(self.shell, cell, exports)
        try:
            outcome = runner.run(spec, target, timeout=args.timeout,
                                 on_display=_publish_display)
        except (runner.IsolatedRunError, NamespaceError) as exc:
            raise UsageError(f"isolated cell: {exc}") from None
        if args.sh:
            if outcome:
                raise UsageError(f"the isolated shell script exited with status {outcome}")
            return None
        value, exported = outcome
        self.shell.user_ns.update(exported)
        return value


def _publish_display(data: dict, metadata: dict) -> None:
    from IPython.display import publish_display_data

    publish_display_data(data, metadata)


def _python_cell(shell: Any, cell: str, exports: list[str]) -> Callable[[], tuple]:
    """The callable the child runs: the cell in the notebook's namespace, IPython syntax
    (``!cmd``, ``%magic``) included; returns (last expression's value, exported values)."""
    source = shell.transform_cell(cell)
    try:
        tree = ast.parse(source, CELL_FILENAME)
    except SyntaxError as exc:
        raise UsageError(f"isolated cell, line {exc.lineno}: {exc.msg}") from None
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    body = compile(tree, CELL_FILENAME, "exec")
    tail = compile(ast.Expression(last.value), CELL_FILENAME, "eval") if last else None

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
        return value, {name: namespace[name] for name in exports}

    return run_cell


def _route_output_in_child(shell: Any) -> None:
    """In the child: display() goes over the result pipe, not the kernel's zmq sockets."""
    publisher = getattr(shell, "display_pub", None)
    if publisher is not None:
        publisher.publish = lambda data, metadata=None, **_kw: runner.publish_display(
            data, metadata)


def load_ipython_extension(ipython: Any) -> None:
    from nskernel.labmagics import LabMagics

    ipython.register_magics(NamespaceMagics)
    ipython.register_magics(LabMagics)
