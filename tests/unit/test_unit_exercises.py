"""The exercises: every notebook ends with at least two, each an empty cell and a checker cell,
with a solutions notebook that does them; and the checkers' one-line verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nskernel import exercises

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TUTORIALS = sorted(NOTEBOOKS.glob("*.ipynb"))


def code_cells(path: Path) -> list[dict]:
    return [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


def checks(path: Path) -> list[tuple[str, str]]:
    """(checker call, what its stored output says) of each checker cell, in order."""
    found = []
    for cell in code_cells(path):
        source = "".join(cell["source"])
        if source.startswith("from nskernel import exercises\nexercises."):
            said = "".join("".join(out.get("text", "")) for out in cell["outputs"]
                           if out.get("name") == "stdout")
            found.append((source.splitlines()[-1], said))
    return found


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.stem)
def test_a_notebook_ends_with_exercises_whose_checkers_say_not_yet(path):
    """Stored as nbval runs them: the learner's cells empty, each checker's verdict one line."""
    cells = json.loads(path.read_text())["cells"]
    after = cells[next(i for i, cell in enumerate(cells)
                       if "## What to try next" in "".join(cell["source"])):]
    found = checks(path)
    assert len(found) >= 2
    assert all(said.startswith("not yet: ") and said.count("\n") == 1 for _, said in found), found
    for index, cell in enumerate(after):
        if "".join(cell["source"]).startswith("from nskernel import exercises"):
            assert after[index - 1]["cell_type"] == "code" and not after[index - 1]["source"], (
                "a checker cell follows the learner's empty cell")
    assert len(checks(path)) == len([c for c in cells if "exercises." in "".join(c["source"])])


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.stem)
def test_the_solutions_do_each_exercise_and_their_checkers_say_correct(path):
    solution = NOTEBOOKS / "solutions" / path.name
    calls = [call for call, _ in checks(path)]
    assert [call for call, _ in checks(solution)] == calls
    assert all(said == "correct\n" for _, said in checks(solution)), checks(solution)
    assert json.loads(solution.read_text())["metadata"]["kernelspec"] == \
        json.loads(path.read_text())["metadata"]["kernelspec"]
    assert f"(solutions/{path.name})" in "".join(
        "".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])


def test_every_checker_is_used_and_documented():
    used = {call.removeprefix("exercises.").split("(")[0]
            for path in TUTORIALS for call, _ in checks(path)}
    assert used == set(exercises.__all__)
    assert all(getattr(exercises, name).__doc__ for name in exercises.__all__)


def test_a_checker_prints_one_line_and_returns_its_verdict(capsys):
    @exercises.checker
    def even(number: int) -> None:
        """A checker of the checker."""
        if number % 2:
            raise exercises.NotYet(f"{number} is odd")

    assert even(4) is True
    assert capsys.readouterr().out == "correct\n"
    assert even(3) is False
    assert capsys.readouterr().out == "not yet: 3 is odd\n"
    assert even.__doc__ == "A checker of the checker."


def test_a_value_the_notebook_lacks_is_named_with_how_to_make_it(capsys):
    """Outside a notebook there is none: the checker says which, and how to make it."""
    assert exercises.orphan_adopted() is False
    assert capsys.readouterr().out == ("not yet: no `orphan_parent` in the notebook yet: export "
                                       "the grandchild's parent PID as orphan_parent\n")


def test_a_tmpfs_exercise_judged_by_what_the_listing_shows(tmp_path, capsys):
    covered, listing = tmp_path / "covered", tmp_path / "listing"
    covered.mkdir()
    (covered / "one.txt").touch()
    assert not exercises.covered_by_tmpfs(str(covered), str(listing))
    assert capsys.readouterr().out.startswith(f"not yet: no {listing} yet")
    listing.write_text("one.txt\n")
    assert not exercises.covered_by_tmpfs(str(covered), str(listing))
    assert "shows the files below the mount (one.txt)" in capsys.readouterr().out
    listing.write_text("")
    assert exercises.covered_by_tmpfs(str(covered), str(listing))
    assert capsys.readouterr().out == "correct\n"


def test_a_layer_order_exercise_needs_two_different_layers(tmp_path, capsys):
    top, base = tmp_path / "top", tmp_path / "base"
    for layer in (top, base):
        layer.mkdir()
        (layer / "which").write_text("same")
    assert not exercises.overlay_order("read_from", str(top), str(base))
    assert "both layers' which say 'same'" in capsys.readouterr().out
