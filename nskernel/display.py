"""Inline results: small tables that render as HTML in a notebook and as text elsewhere.

Results are objects with ``_repr_html_`` and a stable, plain ``__repr__`` (no addresses, no
colours), so notebooks that keep outputs stay diffable and checkable by nbval.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


class Table:
    """Rows under a header; ``title`` is shown above the table."""

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence[object]],
                 title: str = "") -> None:
        self.header = [str(cell) for cell in header]
        self.rows = [[str(cell) for cell in row] for row in rows]
        self.title = title

    def __repr__(self) -> str:
        widths = [max(len(row[i]) for row in [self.header, *self.rows])
                  for i in range(len(self.header))]

        def line(cells: list[str]) -> str:
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths,
                                                                       strict=True)).rstrip()

        lines = [self.title] if self.title else []
        lines += [line(self.header), line(["-" * width for width in widths])]
        lines += [line(row) for row in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(cell)}</th>" for cell in self.header)
        body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
                       for row in self.rows)
        caption = f"<caption>{escape(self.title)}</caption>" if self.title else ""
        return (f"<table class='nskernel'>{caption}<thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")
