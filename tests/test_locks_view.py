"""A view built from a list (--visible-only) and paths made absent (--hide): for a cell of
%%isolate in both kernels, and for a kernel installed with them, as a grader would run one
submission: its directory visible and writable, its classmates', the answers and the
gradebook beside it absent, and no way around the view (.., /proc/PID/root, remounts).

As root and (in CI's second run) as an ordinary user.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IS_ROOT, write_kernel
from kernels import execute, start, stop
from test_locks import WRITE
from test_magics import cell, one_line_error, still_answers

from nskernel.isolation import Isolation
from nskernel.limits import Limits

SECRET = "the-answer-is-42"


@pytest.fixture
def course(shared_dir: Path) -> Iterator[Path]:
    """A course as a grader keeps one: alice's submission (the working directory), bob's
    beside it and the source with the answers and a gradebook, both holding SECRET; where
    any kernel may reach them (a root kernel is an id of its own)."""
    root = shared_dir / "course"
    for name in ("alice", "bob", "source"):
        (root / name).mkdir(parents=True)
        (root / name).chmod(0o777)
    (root / "alice" / "answer.py").write_text("print('mine')\n")
    (root / "bob" / "answer.py").write_text(f"print({SECRET!r})\n")
    (root / "source" / "solution.py").write_text(f"ANSWER = {SECRET!r}\n")
    (root / "gradebook.db").write_text(SECRET)
    yield root


LOOK = (WRITE + "import json\n"
        "def look(path):\n"
        "    try:\n"
        "        if os.path.isdir(path):\n"
        "            return sorted(os.listdir(path))\n"
        "        with open(path) as handle:\n"
        "            return handle.read()\n"
        "    except OSError as exc:\n"
        "        return errno.errorcode[exc.errno]\n")


def looks_from(root: Path) -> str:
    """A body that reports what it sees of the course, as JSON on one line."""
    return (LOOK +
            f"course = {str(root)!r}\n"
            "seen = {name: look(os.path.join(course, name)) for name in\n"
            "        ('', 'alice', 'bob', 'bob/answer.py', 'source/solution.py', 'gradebook.db')}\n"
            "seen['..'] = look('..')\n"
            "seen['/'] = sorted(os.listdir('/'))\n"
            "seen['wrote'] = write('mine.txt')\n"
            "seen['cwd'] = os.getcwd()\n"
            "seen['usr'] = os.path.exists('/usr/bin/env')\n"
            "print(json.dumps(seen))\n")


def seen_in(done) -> dict:
    assert done.status == "ok", done
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_only_alice(seen: dict, root: Path, workdir_writable: bool = True) -> None:
    assert SECRET not in json.dumps(seen), seen
    assert seen["cwd"] == str(root / "alice")
    # The course shows the working directory alone: nothing else was ever there.
    assert seen[""] == ["alice"] and seen[".."] == ["alice"], seen
    assert seen["alice"][:1] == ["answer.py"]
    assert seen["bob"] == "ENOENT" and seen["bob/answer.py"] == "ENOENT", seen
    assert seen["source/solution.py"] == "ENOENT" and seen["gradebook.db"] == "ENOENT"
    assert seen["wrote"] == ("ok" if workdir_writable else "EROFS"), seen
    assert seen["usr"], "the system's directories are shown"


@pytest.mark.parametrize("flags", ["--visible-only", "--visible-only --user --net",
                                   "--jail --visible-only"])
def test_a_cell_sees_its_working_directory_and_the_system_alone(kernel, course, flags):
    execute(kernel, f"%cd {course / 'alice'}")
    try:
        done = cell(kernel, f"%%isolate {flags}\n{looks_from(course)}")
    finally:
        execute(kernel, "%cd -")
    seen = seen_in(done)
    assert_only_alice(seen, course)
    assert (course / "alice" / "mine.txt").read_text() == "x"
    # Other directories at the top are empty covers; the home and /tmp are fresh.
    for directory in ("/srv", "/opt", "/mnt", "/var"):
        if os.path.isdir(directory) and directory in seen["/"]:
            listed = cell(kernel, f"%%isolate {flags}\nprint(sorted(os.listdir({directory!r})))"
                                  if "--jail" not in flags else
                                  f"%%isolate {flags}\nimport os\n"
                                  f"print(sorted(os.listdir({directory!r})))")
            assert listed.stdout.strip() in ("[]", "['tmp']"), (directory, listed)
    still_answers(kernel)


def test_the_working_directory_can_be_shown_read_only(kernel, course):
    execute(kernel, f"%cd {course / 'alice'}")
    try:
        done = cell(kernel, f"%%isolate --visible-only --workdir ro\n{looks_from(course)}")
    finally:
        execute(kernel, "%cd -")
    assert_only_alice(seen_in(done), course, workdir_writable=False)
    assert not (course / "alice" / "mine.txt").exists()


def test_a_bound_directory_comes_back_into_the_view(kernel, course):
    execute(kernel, f"%cd {course / 'alice'}")
    try:
        done = cell(kernel, f"%%isolate --visible-only --bind {course / 'source'}\n"
                            f"print(open({str(course / 'source' / 'solution.py')!r}).read())")
    finally:
        execute(kernel, "%cd -")
    assert SECRET in done.stdout, done


@pytest.mark.parametrize("flags", ["--uts", "--readonly --net"])
def test_hidden_paths_are_absent_and_the_rest_is_as_it_was(kernel, course, flags):
    done = cell(kernel, f"%%isolate {flags} --hide {course / 'bob'} "
                        f"--hide {course / 'gradebook.db'} --hide /no/such/path\n{LOOK}"
                        f"print(json.dumps([look({str(course / 'bob')!r}), "
                        f"look({str(course / 'gradebook.db')!r}), "
                        f"look({str(course / 'source' / 'solution.py')!r})]))")
    assert done.status == "ok", done
    bob, gradebook, source = json.loads(done.stdout.strip().splitlines()[-1])
    assert bob == [] and gradebook == "EACCES"
    assert SECRET in source  # not hidden, so there
    still_answers(kernel)


def test_a_hidden_path_must_be_absolute(kernel):
    line = one_line_error(cell(kernel, "%%isolate --uts --hide relative/path\npass"))
    assert "hide 'relative/path': give an absolute path below /" in line


ESCAPES = (
    "import ctypes, os, json\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def call(name, *args):\n"
    "    return getattr(libc, name)(*args) == 0 or os.strerror(ctypes.get_errno())\n"
    "course = {course!r}\n"
    "tried = {{}}\n"
    "for pid in os.listdir('/proc'):\n"
    "    if pid.isdigit():\n"
    "        try:\n"
    "            tried['proc ' + pid] = os.listdir(f'/proc/{{pid}}/root' + course)\n"
    "        except OSError as exc:\n"
    "            tried['proc ' + pid] = exc.strerror\n"
    "for top in ('/srv', '/opt', '/var', '/home', course):\n"
    "    tried['umount ' + top] = call('umount2', top.encode(), 2)\n"
    "tried['remount /'] = call('mount', b'none', b'/', None, 0x20 | 0x1000, None)\n"
    "tried['cwd parent'] = os.listdir(os.path.realpath('..'))\n"
    "print(json.dumps(tried))\n")


@pytest.mark.parametrize("flags", ["--visible-only", "--visible-only --user"])
def test_no_way_around_the_view(kernel, course, flags):
    execute(kernel, f"%cd {course / 'alice'}")
    try:
        done = cell(kernel, f"%%isolate {flags}\n" + ESCAPES.format(course=str(course)))
    finally:
        execute(kernel, "%cd -")
    assert done.status == "ok", done
    tried = json.loads(done.stdout.strip().splitlines()[-1])
    assert SECRET not in json.dumps(tried) and "bob" not in json.dumps(tried), tried
    unmounted = [name for name, result in tried.items()
                 if name.startswith(("umount", "remount")) and result is True]
    # As root without a user namespace the cell is the machine's root: what it may undo
    # it may undo (--seccomp refuses mount calls); in a user namespace nothing moves.
    if "--user" in flags or not IS_ROOT or kernel.kernel_name == "isolated-python":
        assert unmounted == [], tried
    still_answers(kernel)


def test_as_root_what_only_root_may_read_in_etc_is_hidden(kernel):
    done = cell(kernel, "%%isolate --visible-only\n"
                        "def read(path):\n"
                        "    try:\n"
                        "        return len(open(path).read()) > 0\n"
                        "    except OSError as exc:\n"
                        "        return exc.strerror\n"
                        "print([read(p) for p in ('/etc/shadow', '/etc/gshadow', '/etc/passwd')])")
    assert done.stdout.strip() == "['Permission denied', 'Permission denied', True]", done


# ------------------------------------------------------------------- a kernel installed so
VIEW_KERNEL = Isolation(pid=True, net=True, mount=True, uts=True, ipc=True, hostname="graded",
                        visible_only=True, seccomp=True, tmpfs_size="1g")


@pytest.fixture
def graded_kernel(course: Path):
    """Isolated Python installed with --visible-only --seccomp --memory --pids, started in
    alice's submission as a grader starts it."""
    name = write_kernel("isolated-visible-only", VIEW_KERNEL,
                        Limits(memory=512 << 20, pids=64))
    manager, client = start(name, cwd=str(course / "alice"))
    try:
        yield client
    finally:
        stop(manager, client)


def test_a_kernel_installed_with_the_view_sees_its_submission_alone(graded_kernel, course):
    done = execute(graded_kernel, looks_from(course))
    assert_only_alice(seen_in(done), course)
    assert (course / "alice" / "mine.txt").read_text() == "x"
    # The kernel's own code is there: it imports what it imported before.
    assert execute(graded_kernel, "import ipykernel, nskernel, json; 1").value == 1
    escapes = execute(graded_kernel, ESCAPES.format(course=str(course)))
    assert escapes.status == "ok", escapes
    tried = json.loads(escapes.stdout.strip().splitlines()[-1])
    assert SECRET not in json.dumps(tried) and "bob" not in json.dumps(tried), tried
    assert not [name for name, result in tried.items() if result is True], tried
    # A cell of its own (the lab's namespaces too) sees no more than the kernel.
    inner = execute(graded_kernel, f"%%isolate --net\n{looks_from(course)}")
    assert_only_alice(seen_in(inner), course)
