"""Fixtures: real kernels, a kernelspec directory, an unprivileged user, and leak checks."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ipykernel.kernelspec import write_kernel_spec as write_stock_kernel_spec

sys.path.insert(0, str(Path(__file__).parent))

import kernels  # noqa: E402

from nskernel import kernelspec  # noqa: E402
from nskernel.isolation import Isolation  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEST_USER = "nskernel-test"

# Kernelspecs for the whole run live in a world-readable temporary JUPYTER_PATH, so that the
# tests never depend on (or change) what is installed, and the unprivileged user sees them.
JUPYTER_DIR = Path(tempfile.mkdtemp(prefix="nskernel-tests-"))
JUPYTER_DIR.chmod(0o755)
KERNELS_DIR = JUPYTER_DIR / "kernels"
KERNELS_DIR.mkdir()
kernelspec.write_spec(KERNELS_DIR / "isolated-python", Isolation.kernel_default())
# The stock kernel as `python -m ipykernel install` writes it (not the wheel's static copy,
# which leaves frozen modules on, so the debugger's warning lands on iopub at start-up).
write_stock_kernel_spec(str(KERNELS_DIR / "python3"), python_arguments=["-Xfrozen_modules=off"])
os.environ["JUPYTER_PATH"] = str(JUPYTER_DIR)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(JUPYTER_DIR, ignore_errors=True)


def write_kernel(name: str, spec: Isolation) -> str:
    """Add a kernelspec to the run's JUPYTER_PATH (idempotent); return its name."""
    path = KERNELS_DIR / name
    if not path.exists():
        kernelspec.write_spec(path, spec)
    return name


# ---------------------------------------------------------------------------- leak checks
#: What the command lines of our processes contain: the launcher and the kernel forked from it,
#: the supervisor it becomes, the kernel's init (``dumb-init -- sleep infinity``), the probe.
OUR_COMMAND_LINES = (b"nskernel.launch", b"nskernel.supervisor", b"dumb-init",
                     b"kernel_probe.py")


def our_processes() -> list[str]:
    """Processes that run our launcher or kernel (anything from a test still alive is a leak)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if any(marker in cmdline for marker in OUR_COMMAND_LINES):
            found.append(f"{entry}: {cmdline.decode(errors='replace')}")
    return found


def host_state() -> dict[str, set[str]]:
    mounts = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    links = set(os.listdir("/sys/class/net"))
    return {"mounts": mounts, "named netns": netns, "links": links}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    before = host_state()
    yield
    after = host_state()
    leaks = {what: sorted(after[what] - before[what]) for what in after}
    leaks = {what: items for what, items in leaks.items() if items}
    wait_for(lambda: not our_processes(), timeout=5)
    procs = our_processes()
    assert not leaks and not procs, f"left behind: {leaks} processes: {procs}"


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until true or ``timeout`` s pass (for things that settle)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# ---------------------------------------------------------------------------- kernels
@pytest.fixture
def start_kernel() -> Iterator[Callable[..., tuple]]:
    """Factory: start_kernel(name="isolated-python", **kw) -> (manager, client); always stopped."""
    started = []

    def start(name: str = "isolated-python", **kwargs: object) -> tuple:
        pair = kernels.start(name, **kwargs)
        started.append(pair)
        return pair

    yield start
    for manager, client in started:
        try:
            kernels.stop(manager, client)
        finally:
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def isolated() -> Iterator[tuple]:
    """One default Isolated Python kernel shared by a module's read-only checks."""
    manager, client = kernels.start("isolated-python")
    try:
        yield manager, client
    finally:
        kernels.stop(manager, client)


# ---------------------------------------------------------------------------- rootless
@pytest.fixture(scope="session")
def unprivileged_user() -> Iterator[pwd.struct_passwd]:
    """A system user made for the run (removed after), who can run the project's venv."""
    created = False
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        TEST_USER], check=True)
        created = True
        entry = pwd.getpwnam(TEST_USER)
    opened = _let_others_traverse([REPO, Path(sys.prefix), Path(sys.executable).resolve()])
    try:
        check = as_user(entry, [sys.executable, "-c", "import nskernel, ipykernel"])
        assert check.returncode == 0, (
            f"{TEST_USER} cannot run {sys.executable} with nskernel: {check.stderr.strip()} "
            "(the venv and its base Python must be readable by other users)")
        yield entry
    finally:
        for directory, mode in opened:
            directory.chmod(mode)
        if created:
            subprocess.run(["userdel", TEST_USER], check=False)


def _let_others_traverse(paths: list[Path]) -> list[tuple[Path, int]]:
    """Add search permission (x, not read) for others on the directories above ``paths``,
    so the test user can reach the checkout and its venv wherever CI cloned them (a clone
    under /root, say); returns the original modes, to be put back."""
    opened = []
    for path in paths:
        for directory in [path, *path.parents] if path.is_dir() else path.parents:
            mode = directory.stat().st_mode & 0o7777
            if not mode & 0o001 and directory not in (d for d, _ in opened):
                directory.chmod(mode | 0o001)
                opened.append((directory, mode))
    return opened


def as_user(user: pwd.struct_passwd, argv: list[str], timeout: float = 120,
            user_namespaces: bool = True) -> subprocess.CompletedProcess:
    """Run ``argv`` as ``user`` with a private, writable Jupyter runtime directory.

    ``user_namespaces=False`` runs it where unprivileged user namespaces are disabled
    (see without_userns.py), as on machines that turn them off.
    """
    runtime = Path(tempfile.mkdtemp(prefix="nskernel-user-"))
    os.chown(runtime, user.pw_uid, user.pw_gid)
    env = {"PATH": os.environ["PATH"], "HOME": str(runtime), "JUPYTER_PATH": str(JUPYTER_DIR),
           "JUPYTER_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(REPO)}
    command = ["env", "-i", *[f"{key}={value}" for key, value in env.items()], *argv]
    if user_namespaces:
        switch = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                  "--clear-groups"]
    else:
        switch = [sys.executable, str(Path(__file__).with_name("without_userns.py")),
                  str(user.pw_uid), str(user.pw_gid)]
    try:
        return subprocess.run([*switch, *command], capture_output=True, text=True,
                              timeout=timeout, cwd=runtime)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
