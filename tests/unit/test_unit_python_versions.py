"""pyproject.toml says which Pythons are supported, and .ci/python-matrix tests exactly those."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = (REPO / "pyproject.toml").read_text()  # no tomllib: it is new in 3.11


def classified_versions() -> list[tuple[int, int]]:
    found = re.findall(r'"Programming Language :: Python :: 3\.(\d+)"', PYPROJECT)
    return [(3, int(minor)) for minor in found]


def test_the_classifiers_name_a_run_of_versions_from_requires_python():
    versions = classified_versions()
    lowest = re.search(r'^requires-python = ">=3\.(\d+)"$', PYPROJECT, re.MULTILINE)
    assert lowest, "requires-python should be a lower bound, >=3.X"
    assert versions == [(3, minor) for minor in range(int(lowest[1]), versions[-1][1] + 1)]


def test_this_python_is_one_of_them():
    """A run on a version the classifiers do not name is a version nobody said was tested:
    add it to pyproject.toml (and so to .ci/python-matrix) once it passes."""
    assert sys.version_info[:2] in classified_versions(), (
        f"Python {sys.version_info[0]}.{sys.version_info[1]} is not among the tested versions "
        "in pyproject.toml's classifiers")


def test_the_matrix_reads_the_classifiers():
    script = (REPO / ".ci" / "python-matrix").read_text()
    assert "Programming Language :: Python :: \\(3\\.[0-9]*\\)" in script
