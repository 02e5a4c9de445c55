"""Tab completion for the magics: their options after ``--``, lab namespace names where a
magic takes one (``%netns del``, ``%%netns``, ``%veth``, ``%route``, ...).

One matcher (IPython's matcher API v2) looks at the first word of the line with the cursor
(of the cell's first line, for a cell magic); on one of ours, it offers that magic's
candidates starting with the word being typed, and only those: Python names make no sense
there.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from nskernel.netlab import netns

Completer = Callable[[str, str], list[str]]


def options_of(parser: argparse.ArgumentParser) -> list[str]:
    """Every long option of a magic's parser, as typed: "--pid", "--memory", ..."""
    return sorted(option for action in parser._actions for option in action.option_strings
                  if option.startswith("--") and option != "--help")


def completer(parser: argparse.ArgumentParser, *, names: str = "",
              first: list[str] | None = None) -> Completer:
    """Options after a dash; else ``first`` as the first word (an action), then, with
    ``names`` ("plain" or "endpoint"), the lab's namespace names (an endpoint as "NAME:",
    ready for its address). The completer takes the line up to the cursor and the word."""
    def complete(line: str, word: str) -> list[str]:
        if word.startswith("-") or not names:
            return options_of(parser)
        if first and len(line.split()) - (1 if word else 0) <= 1:
            return first
        found = netns.named_namespaces()
        return [f"{name}:" for name in found] if names == "endpoint" else found
    return complete


def completers() -> dict[str, Completer]:
    from nskernel.magics import lab as labmagics
    from nskernel.magics import namespaces as magics

    return {
        "%%isolate": completer(magics.ISOLATE),
        "%%uts": completer(magics.UTS),
        "%%netns": completer(magics.NETNS, names="plain"),
        "%netns": completer(labmagics.NETNS, names="plain",
                            first=["add", "del", "list", "reset"]),
        "%veth": completer(labmagics.VETH, names="endpoint"),
        "%bridge": completer(labmagics.BRIDGE, names="plain"),
        "%route": completer(labmagics.ROUTE, names="plain"),
        "%forward": completer(labmagics.FORWARD, names="plain"),
        "%nsinfo": completer(magics.NSINFO),
    }


def register(shell: Any) -> None:
    """Add our matcher to ``shell``'s completer (an IPython InteractiveShell)."""
    from IPython.core.completer import SimpleCompletion, context_matcher

    by_magic = completers()

    @context_matcher()
    def magic_options(context: Any) -> dict:
        line = context.text_until_cursor
        words = line.split()
        complete = by_magic.get(words[0]) if words else None
        if complete is None or (words[0].startswith("%%") and context.cursor_line != 0):
            return {"completions": [], "suppress": False}
        word = context.token
        found = [c for c in complete(line, word) if c.startswith(word)]
        return {"completions": [SimpleCompletion(c, type="magic argument") for c in found],
                "suppress": bool(found)}

    shell.Completer.custom_matchers.append(magic_options)
