"""The user's text: the README's quick start is its two commands, its cheat-sheet names every
magic, and every page of docs/ is in the Sphinx build, which has no warning."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from nskernel.magics.lab import LabMagics
from nskernel.magics.namespaces import NamespaceMagics

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"


def readme_section(title: str) -> str:
    """The text of the README's ``## title`` section, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)",
                      (ROOT / "README.md").read_text(), re.S | re.M)
    assert match, f"the README has no section {title!r}"
    return match.group(1)


def make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target."""
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"the Makefile has no target {target!r}"
    return [line.strip() for line in match.group(1).splitlines()]


def test_the_quick_start_is_make_lab_then_make_test():
    blocks = re.findall(r"```sh\n(.*?)```", readme_section("Quick start"), re.S)
    assert len(blocks) == 1
    commands = [line.split("#")[0].strip() for line in blocks[0].splitlines()]
    assert [command for command in commands if command] == ["make lab", "make test"]
    assert make_recipe("lab") and "$(MAKE) --no-print-directory docs" in make_recipe("test")


def test_the_cheat_sheet_names_every_magic_once():
    rows = re.findall(r"^\| `(%%?\w+)", readme_section("Magics cheat-sheet"), re.M)
    magics = [f"%{name}" for cls in (NamespaceMagics, LabMagics) for name in cls.magics["line"]]
    magics += [f"%%{name}" for cls in (NamespaceMagics, LabMagics) for name in cls.magics["cell"]]
    assert sorted(rows) == sorted(magics)


def test_every_docs_page_is_built_without_a_warning(tmp_path):
    """-W: a page left out of every table of contents is a warning, so the build fails."""
    built = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    pages = {page.stem for page in DOCS.glob("*.md")}
    assert {"index", "api", "security", "architecture", "kubernetes"} <= pages
    assert {page.stem for page in (tmp_path / "html").glob("*.html")} >= pages
    api = (tmp_path / "html" / "api.html").read_text()
    for name in ("nskernel.isolate", "nskernel.lab", "nskernel.probe.ping"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
