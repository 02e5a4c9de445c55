"""deploy/jupyterhub/classroom.py without a hub: the class list as a teacher writes it, and the
course's reset-my-copy script run in a copy, as a student runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "deploy" / "jupyterhub"))
import classroom  # noqa: E402


def test_the_class_list_is_names_one_a_line(tmp_path):
    listed = tmp_path / "class.txt"
    listed.write_text("# period 3\nalice\n\n  bob   # joined late\ncarol_2\n")
    assert classroom.read_class_list(listed) == ["alice", "bob", "carol_2"]


@pytest.mark.parametrize(("text", "said"), [
    ("alice\nBob Smith\n", "'Bob Smith' is no Unix account name"),
    ("alice\n../etc\n", "'../etc' is no Unix account name"),
    ("# nobody yet\n", "no student in it"),
])
def test_a_bad_class_list_is_refused_in_one_line(tmp_path, text, said):
    listed = tmp_path / "class.txt"
    listed.write_text(text)
    with pytest.raises(classroom.ClassError) as refused:
        classroom.read_class_list(listed)
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_reset_my_copy_restores_a_notebook_and_keeps_the_students(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "01-pid.ipynb").write_text("the course's\n")
    (notebooks / "sanitize.cfg").write_text("for the tests only\n")
    course = classroom.publish_course(notebooks, tmp_path / "published")
    assert sorted(p.name for p in course.iterdir()) == ["01-pid.ipynb", classroom.RESET]
    mine = tmp_path / "home" / classroom.COURSE_DIR
    mine.mkdir(parents=True)
    (mine / "01-pid.ipynb").write_text("my notes\n")
    (mine / classroom.RESET).write_bytes((course / classroom.RESET).read_bytes())
    (mine / classroom.RESET).chmod(0o755)

    def reset(*names: str) -> subprocess.CompletedProcess:
        return subprocess.run([f"./{classroom.RESET}", *names], cwd=mine, capture_output=True,
                              text=True)

    done = reset("01-pid.ipynb")
    assert done.returncode == 0, done.stderr
    assert (mine / "01-pid.ipynb").read_text() == "the course's\n"
    assert (mine / "01-pid.ipynb.~1~").read_text() == "my notes\n"
    assert reset("01-pid.ipynb").returncode == 0  # again: the course's kept as .~2~
    assert (mine / "01-pid.ipynb.~2~").read_text() == "the course's\n"
    for bad, said in [("02-none.ipynb", "the course has no 02-none.ipynb"),
                      ("../../etc/passwd", "give a name in this folder")]:
        refused = reset(bad)
        assert refused.returncode == 1 and said in refused.stderr, refused
    assert reset().returncode == 2
