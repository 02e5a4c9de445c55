"""The course page (notebooks/README.md) names every notebook, each once, in order."""

from __future__ import annotations

import re
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_the_course_page_lists_every_notebook_in_order() -> None:
    page = (NOTEBOOKS / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| \[[^]]+\]\(([^)]+\.ipynb)\)", page, re.MULTILINE)
    stored = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert [name for _number, name in rows] == stored
    assert [int(number) for number, _name in rows] == list(range(1, len(stored) + 1))
