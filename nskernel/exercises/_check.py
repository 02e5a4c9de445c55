"""What every checker shares: a wrong attempt is a :class:`NotYet`, :func:`checker` turns it
into the one printed line and the returned verdict, :func:`answer` reads the learner's values
from the notebook."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


class NotYet(Exception):
    """What is still wrong, in one line: the checker prints it after ``not yet:``."""


def checker(function: Callable[..., None]) -> Callable[..., bool]:
    """A checker: the wrapped function raises :class:`NotYet` for what is wrong; the
    checker prints ``correct`` or ``not yet: ...`` and returns the verdict."""

    @functools.wraps(function)
    def check(*args: Any, **kwargs: Any) -> bool:
        try:
            function(*args, **kwargs)
        except NotYet as wrong:
            verdict = f"not yet: {wrong}"
        else:
            verdict = "correct"
        sys.stdout.write(verdict + "\n")  # one write: one stream output in the notebook
        return verdict == "correct"

    return check


_MISSING = object()


def answer(name: str, how: str) -> Any:
    """The notebook's variable ``name`` (what the learner's cell set or exported); NotYet
    saying ``how`` to make it when there is none."""
    from IPython import get_ipython

    shell = get_ipython()
    value = shell.user_ns.get(name, _MISSING) if shell is not None else _MISSING
    if value is _MISSING:
        raise NotYet(f"no `{name}` in the notebook yet: {how}")
    return value
