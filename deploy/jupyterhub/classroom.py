"""What jupyterhub_config.py adds for a class: accounts the hub makes, the course copied into
each home, and a cgroup per student (see deploy/jupyterhub/README.md).

A class list names the students; they log in with one shared password (JupyterHub's
SharedPasswordAuthenticator), so the teacher hands out no Unix passwords. Each student's
server runs as a Unix account of their own (LocalProcessSpawner), which the hub makes on
their first login (:func:`prepare_student`, the spawner's pre-spawn hook): in the class's
group, so that the shared password never opens an account of the machine that is not the
class's. The course (the tutorial notebooks) is copied into their home as the student, so
that a link they made there leads nowhere the hub would write as root.

Where the hub may make cgroups, :class:`ClassroomSpawner` starts each student's server in a
cgroup of its own: everything the student runs (server, kernels, terminals, a kernel started
from a notebook) shares one memory limit, one process limit and one CPU share, equal to every
other student's, however many processes each runs. Elsewhere each kernel has its rlimits and
the server its ``max_kernels``.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Float, Int

from nskernel.locks import cgroups
from nskernel.locks.cgroup_cleanup import remove_now
from nskernel.owners import owner_id

#: A name useradd takes everywhere (no dots: they would end a cgroup's owner, see below).
STUDENT_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
#: The students' copy of the course, in their home.
COURSE_DIR = "nskernel-course"
RESET = "reset-my-copy"
RESET_SCRIPT = """#!/bin/sh
# ./reset-my-copy NOTEBOOK...: the course's own copy of each notebook named, in place of
# yours; yours is kept beside it as NOTEBOOK.~1~ (then .~2~, ...), never lost.
course='{course}'
if [ $# -eq 0 ]; then
    echo "usage: ./{reset} NOTEBOOK... (e.g. 01-pid-namespace.ipynb): the course's copy" \\
         "in place of yours, yours kept as NOTEBOOK.~1~" >&2
    exit 2
fi
cd "$(dirname "$0")" || exit 1
for name in "$@"; do
    case "$name" in
        /*|*..*) echo "{reset}: $name: give a name in this folder" >&2; exit 1 ;;
    esac
    if [ ! -f "$course/$name" ]; then
        echo "{reset}: the course has no $name (see $course)" >&2
        exit 1
    fi
    cp --backup=numbered "$course/$name" "$name" || exit 1
    echo "$name: the course's copy (yours, if you had one, is kept as $name.~N~)"
done
"""


class ClassError(RuntimeError):
    """A class that cannot be served as configured; the message is one line."""


def read_class_list(path: Path) -> list[str]:
    """The students' names, one a line (``#`` starts a comment)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ClassError(f"class list {path}: {exc.strerror}") from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    names = [name for name in names if name]
    for name in names:
        if not STUDENT_NAME.fullmatch(name):
            raise ClassError(f"class list {path}: {name!r} is no Unix account name (lower case "
                             "letters, digits, _ and -, up to 32, not starting with a digit)")
    if not names:
        raise ClassError(f"class list {path}: no student in it")
    return names


def publish_course(notebooks: Path, into: Path) -> Path:
    """A copy of the tutorial that every student may read (``into``, made afresh): the one
    their first copy and their resets come from, whatever happens to the checkout meanwhile."""
    if into.exists():
        shutil.rmtree(into)
    shutil.copytree(notebooks, into, ignore=shutil.ignore_patterns(
        "sanitize.cfg", ".ipynb_checkpoints", "__pycache__"))
    (into / RESET).write_text(RESET_SCRIPT.format(course=into, reset=RESET))
    for directory, _dirs, files in os.walk(into):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o755 if name == RESET else 0o644)
    return into


def ensure_account(name: str, group: str) -> pwd.struct_passwd:
    """The student's Unix account, made if missing (a home only they may enter, in the
    class's group). An account of the machine outside that group is refused."""
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        try:
            grp.getgrnam(group)
        except KeyError:
            _run(["groupadd", "--system", group])
        _run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", "--groups",
              group, "--comment", f"nskernel class {group}", name])
        account = pwd.getpwnam(name)
        os.chmod(account.pw_dir, 0o700)  # a student reads no other's copy
        return account
    try:
        members = grp.getgrnam(group).gr_mem
    except KeyError:  # no class account made yet
        members = []
    if name not in members:
        raise ClassError(f"{name} is an account of this machine, not of the class (not in "
                         f"group {group}): the hub does not open it with the class's password")
    return account


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ClassError(f"{command[0]}: {lines[-1]}")


def copy_course(account: pwd.struct_passwd, course: Path) -> None:
    """The course into ``~/nskernel-course``, as the student: what they have is kept, what
    they lack (all of it, the first time) is copied. ``cp`` runs as them, so their home's
    links and permissions bind it as they bind them."""
    target = Path(account.pw_dir, COURSE_DIR)
    copy = ("import shutil, sys\n"
            "def missing_only(source, target):\n"
            "    import os\n"
            "    if not os.path.lexists(target):\n"
            "        shutil.copy2(source, target)\n"
            "shutil.copytree(sys.argv[1], sys.argv[2], dirs_exist_ok=True, "
            "copy_function=missing_only)")
    done = subprocess.run([sys.executable, "-c", copy, str(course),
                           str(target)], user=account.pw_uid, group=account.pw_gid,
                          extra_groups=[], cwd=account.pw_dir, env={"HOME": account.pw_dir},
                          capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        raise ClassError(f"cannot copy the course into {target}: {lines[-1]}")


def student_hook(course: Path | None, group: str | None):
    """The spawner's pre-spawn hook: the account (with ``group``: made by the hub) and the
    course copy (with ``course``). It runs in a thread: a class logging in at once must not
    stall the hub; accounts are made one at a time (useradd locks /etc/passwd)."""
    accounts = threading.Lock()

    def prepare(name: str) -> None:
        with accounts:
            account = ensure_account(name, group) if group else pwd.getpwnam(name)
        if course is not None:
            copy_course(account, course)

    async def prepare_student(spawner) -> None:
        await asyncio.to_thread(prepare, spawner.user.name)

    return prepare_student


class ClassroomSpawner(LocalProcessSpawner):
    """A local process per student, in a cgroup of the student's own where the hub may make
    cgroups: one CPU share per student (equal weights), and the limits below for all their
    processes together. What is left in it when the server stops is killed."""

    student_memory = Int(None, allow_none=True, config=True,
                         help="Memory of all of a student's processes together (bytes).")
    student_pids = Int(None, allow_none=True, config=True,
                       help="Processes of a student together.")
    student_cpus = Float(None, allow_none=True, config=True,
                         help="Most CPUs a student may use at once (beside the equal share).")

    _group: cgroups.Group | None = None

    def _make_group(self) -> cgroups.Group | None:
        the_plan = cgroups.plan()
        needed = {"cpu"} | {job for job, value in (
            ("memory", self.student_memory), ("pids", self.student_pids)) if value is not None}
        if needed - set(the_plan.places):
            missing = sorted(needed - set(the_plan.places))
            self.log.warning("%s gets no cgroup of their own: %s", self.user.name,
                             the_plan.missing.get(missing[0], f"no {missing[0]} cgroup"))
            return None
        return cgroups.Group.create(
            f"{cgroups.PREFIX}{owner_id()}.{self.user.name}", memory=self.student_memory,
            pids=self.student_pids, cpus=self.student_cpus, the_plan=the_plan,
            jobs=needed | ({"kill"} & set(the_plan.places)), holds_cells=True)

    def make_preexec_fn(self, name: str):
        become_the_user = super().make_preexec_fn(name)
        group = self._group

        def preexec() -> None:
            if group is not None:
                group.join()  # still root: into the student's cgroup, before anything runs
            become_the_user()

        return preexec

    async def start(self):
        self._group = self._make_group()
        try:
            return await super().start()
        except BaseException:
            await self._remove_group()
            raise

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        await self._remove_group()

    async def _remove_group(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            group.kill(wait=False)  # what the server left: a terminal's shell, a daemon
            await asyncio.to_thread(remove_now, group)
