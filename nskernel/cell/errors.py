"""What a cell's failure looks like in the kernel: its own error, and the child's traceback
carried as the cause of what is raised again. Alone here so that the decoder of a jail's
plain data (:mod:`nskernel.cell.jailed_output`) can name it without importing the runner."""

from __future__ import annotations


class IsolatedRunError(RuntimeError):
    """The isolated call did not finish: timed out, killed, or failed to set up."""


class RemoteTraceback(Exception):
    """Carries the child's formatted traceback as the ``__cause__`` of a re-raised error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text
