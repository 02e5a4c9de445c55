"""An isolated cell's error or interrupt, shown as a stock kernel shows one: at the user's
line, with the child's traceback of the user's own code, and none of nskernel's frames.

An exception that left an isolated cell is marked (:func:`mark`); IPython hands every error
of a cell to :func:`show` (its custom exception hook), which cuts a marked one's traceback
after the cell's own frame, and shows the rest exactly as IPython would.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

_MARK = "_nskernel_isolated_cell"


def mark(error: BaseException) -> BaseException:
    """Note that ``error`` comes out of an isolated cell (returned for ``raise mark(e)``)."""
    try:
        setattr(error, _MARK, True)
    except (AttributeError, TypeError):
        pass  # an exception type without a __dict__: shown in full, as before
    return error


def register(shell: Any) -> None:
    """Install :func:`show` in ``shell``, unless something else already handles errors."""
    if not shell.custom_exceptions:
        shell.set_custom_exc((Exception, KeyboardInterrupt), show)


def show(shell: Any, etype: type, value: BaseException, tb: TracebackType | None,
         tb_offset: int | None = None) -> Any:
    if getattr(value, _MARK, False):
        _cut_after_the_cell(shell, tb)
    return shell.showtraceback((etype, value, tb), tb_offset=tb_offset)


def _cut_after_the_cell(shell: Any, tb: TracebackType | None) -> None:
    """End the traceback at the user's cell (the frame that runs in the notebook's
    namespace): what comes after it is the magic's machinery."""
    while tb is not None:
        if tb.tb_frame.f_globals is shell.user_ns:
            tb.tb_next = None
            return
        tb = tb.tb_next
