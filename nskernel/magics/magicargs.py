"""Parsing the line of a magic: one place for every magic of nskernel.

Each magic has an IPython ``MagicArgumentParser`` (so ``%%isolate?`` shows its usage), takes
its line as typed, and turns every bad line into one ``UsageError`` line: unknown flags, bad
quoting, oversized lines.
"""

from __future__ import annotations

import copy
import functools
import shlex
from collections.abc import Callable
from typing import Any

from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.core.magic import no_var_expand
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.utils.text import DollarFormatter


def magic_parser(prog: str, description: str) -> MagicArgumentParser:
    """A magic's parser; ``prog`` is the name without the '%' that IPython's usage adds."""
    return MagicArgumentParser(prog=prog, description=description, add_help=False)


def with_usage(parser: MagicArgumentParser) -> Callable[[Callable], Callable]:
    """Show the parser's help with the magic's docstring, so `%%isolate?` shows the usage.

    The help is formatted when asked for: IPython's ``?`` calls an object's ``getdoc()``
    (a bound method finds its function's), where formatting every magic's help as the
    extension loads would cost each kernel's start a few milliseconds.

    The magic gets its line as typed: :func:`parse_line` expands ``$name`` and ``{expr}``
    itself, after checking the length (IPython's own expansion takes time that grows with
    the square of the line's length: a minute for 100,000 characters).
    """
    def decorate(function: Callable) -> Callable:
        function.getdoc = lambda: (function.__doc__ or "") + "\n" + parser.format_help()
        return no_var_expand(function)
    return decorate


#: Longer magic lines are refused before parsing (quoting them costs time; nothing needs it).
MAX_LINE = 4096


def parse_line(parser: MagicArgumentParser, line: str) -> Any:
    """Expand and parse a magic's line; bad quoting and oversized lines are one-line
    UsageErrors too. A line with nothing to expand is not handed to the formatter, which
    would copy the notebook's whole namespace for every cell."""
    _check_length(parser, line)
    shell = get_ipython()
    if shell is not None and ("$" in line or "{" in line):
        line = _expand(shell.user_ns, line)
        _check_length(parser, line)
    return copy.copy(_parsed(parser, line))


@functools.lru_cache(maxsize=128)
def _parsed(parser: MagicArgumentParser, line: str) -> Any:
    """A line's flags, parsed once: a notebook runs the same magic lines again and again,
    and argparse takes a tenth of a millisecond or more each time (the namespace comes back
    copied: magics set attributes on it). A line that does not parse raises each time."""
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
