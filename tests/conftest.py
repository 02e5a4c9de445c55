"""Fixtures: real kernels, a kernelspec directory, an unprivileged user, and leak checks."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from ipykernel.kernelspec import write_kernel_spec as write_stock_kernel_spec

sys.path.insert(0, str(Path(__file__).parent))

import kernels  # noqa: E402

from nskernel.isolation import Isolation  # noqa: E402
from nskernel.kernel import kernelspec  # noqa: E402
from nskernel.limits import Limits  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
UNIT_TESTS = REPO / "tests" / "unit"
IS_ROOT = os.geteuid() == 0

#: Marks everything this run starts: every process inherits it through its environment, so
#: the leak check can tell our processes from those of another run or another Jupyter.
RUN_ID = f"{os.getpid()}-{time.time_ns()}"
RUN_MARK_ENV = "NSKERNEL_TEST_RUN"
os.environ[RUN_MARK_ENV] = RUN_ID
#: Names this run gives to things the host can see (named namespaces, links, sleep lengths):
#: fixed width, so that one run's prefix is never the start of another's.
RUN_PREFIX = f"t{os.getpid() % 10000:04d}"

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

#: How many times slower than a usual machine this one may be: NSKERNEL_TEST_TIME_FACTOR
#: (default 1) multiplies the waits of the slowest tests (the hub's), which are upper bounds:
#: `make vm-test`'s guest under qemu without KVM runs Python about 20 times slower. Never
#: below 1, so that no setting shortens a wait.
TIME_FACTOR = max(1.0, float(os.environ.get("NSKERNEL_TEST_TIME_FACTOR", "1")))

#: Why a test needs root: pytest.skip(ROOT_ONLY) where only some parameters do.
ROOT_ONLY = ("needs root: named network namespaces in the host's /run/netns "
             "(as another user the lab runs inside Isolated Python; tested there)")
needs_root = pytest.mark.skipif(not IS_ROOT, reason=ROOT_ONLY)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Keep each phase's report on the test (``item.report_call``), for fixtures that act on
    failure (the browser tests keep a screenshot)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


#: Notebooks that make cgroups by hand in the kernel's own, and why they cannot run without
#: one (the others read the same either way).
ROOT_ONLY_NOTEBOOKS = {
    "13-cgroups.ipynb": "needs a kernel with a cgroup of its own: it makes cgroups by hand in "
                        "it (root here; a user where a cgroup is delegated to them, and this "
                        "machine delegates none to this one)",
    "14-your-own-container.ipynb": "needs a kernel with a cgroup of its own: its container's "
                                   "limits are cgroups made by hand, as in notebook 13",
}


def kernels_get_cgroups() -> bool:
    """Whether a kernel started by this user here gets a cgroup with memory and pids limits:
    root's, or one delegated to the user (systemd's Delegate=yes, on cgroup v2)."""
    from nskernel.locks import cgroups

    return {"memory", "pids"} <= set(cgroups.plan().places)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if kernels_get_cgroups():
        return
    for item in items:
        reason = ROOT_ONLY_NOTEBOOKS.get(item.path.name)
        if reason and item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(JUPYTER_DIR, ignore_errors=True)


def write_kernel(name: str, spec: Isolation, limits: Limits | None = None,
                 provisioner: bool = False) -> str:
    """Add a kernelspec to the run's JUPYTER_PATH (idempotent); return its name."""
    path = KERNELS_DIR / name
    if not path.exists():
        kernelspec.write_spec(path, spec, limits=limits, provisioner=provisioner)
    return name


# ---------------------------------------------------------------------------- leak checks
# The suite judges only what it made: other Jupyter kernels, another checkout's test run and
# whatever the machine does meanwhile are none of its business.

def our_processes() -> dict[int, str]:
    """Processes of this run still alive (they carry RUN_ID in their environment): {pid:
    command line}. Zombies have no environment left and are not counted."""
    mark = f"{RUN_MARK_ENV}={RUN_ID}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environment = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            if mark not in environment:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # gone, or another user's (not ours: ours are readable to us)
            continue
        found[int(entry)] = cmdline.decode(errors="replace")
    return found


#: Where nskernel mounts inside its namespaces: a mount appearing at one of these on the host
#: would be one of ours that propagated out.
NSKERNEL_MOUNT_POINTS = ("/proc", "/sys", "/dev/shm", "/dev/mqueue", "/run", "/run/netns",
                         "/run/nskernel")


def our_mounts() -> set[tuple[str, str, str]]:
    """(mount point, fs type, source) of host mounts that could be ours.

    /run/netns bound onto itself is how iproute2 (and the lab, the same way) keeps named
    namespaces; like `ip netns add`, the first lab on a machine makes it and it stays.
    """
    found = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        root, point = fields[3], fields[4]
        fstype, source = fields[fields.index("-") + 1:][:2]
        if point == root == "/run/netns":
            continue  # the iproute2 convention, not a leak
        if point in NSKERNEL_MOUNT_POINTS or point.startswith(
                (f"/run/netns/{RUN_PREFIX}", str(JUPYTER_DIR))):
            found.add((point, fstype, source))
    return found


def our_named_netns() -> set[str]:
    try:
        return {name for name in os.listdir("/run/netns") if name.startswith(RUN_PREFIX)}
    except FileNotFoundError:
        return set()


def our_links() -> set[str]:
    """Host links a lab made whose owner is dead (a live owner's are its own business)."""
    from nskernel.owners import owner_alive

    found = set()
    for name in os.listdir("/sys/class/net"):
        try:
            alias = Path(f"/sys/class/net/{name}/ifalias").read_text().strip()
        except OSError:
            continue
        owner = alias.removeprefix("nskernel:")
        if owner != alias and not owner_alive(owner) or name.startswith(RUN_PREFIX):
            found.add(name)
    return found


def our_scratch_dirs() -> set[str]:
    """Scratch directories of isolated kernels on the host's disk (they belong in the
    kernel's private /run, and go with it however it ends)."""
    return {name for name in os.listdir(tempfile.gettempdir())
            if name.startswith("ipykernel_nskernel")}


def our_cgroups() -> set[str]:
    """Cgroups named ours, below this process's own, whose maker is dead (a live maker's
    are its business: a running kernel's, a cell's still being removed)."""
    from nskernel.locks import cgroups
    from nskernel.owners import owner_alive

    found = set()
    for hierarchy in cgroups.hierarchies():
        if not os.access(hierarchy.own, os.W_OK):
            continue  # none of ours can be where we may not make any (another user's run)
        for entry in os.listdir(hierarchy.own):
            owner = entry[len(cgroups.PREFIX):].rsplit(".", 1)[0]
            if entry.startswith(cgroups.PREFIX) and not owner_alive(owner):
                found.add(os.path.join(hierarchy.own, entry))
    return found


def host_state() -> dict[str, set]:
    """Taken under the machine-wide test lock: another run's `nskernel clean` test, which
    kills a kernel and then removes its links, is never seen half-way."""
    with one_run_at_a_time():
        return {"mounts": our_mounts(), "named netns": our_named_netns(),
                "links": our_links(), "scratch dirs": our_scratch_dirs(),
                "cgroups": our_cgroups()}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After the whole run (notebooks included): nothing of ours on the host."""
    before = host_state()
    yield
    wait_for(lambda: not our_processes(), timeout=10)
    _assert_nothing_new(before, {})


@pytest.fixture(autouse=True)
def nothing_left_by_this_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: no process, mount, named namespace or link of ours that was not
    there before it, unless it descends from a process that was (the kernels of a class's or
    module's fixture: what they leave is judged when the run ends). Unit tests (tests/unit)
    make none of these and skip the snapshots, to stay fast."""
    if UNIT_TESTS in request.node.path.parents:
        yield
        return
    before, running = host_state(), our_processes()
    yield
    wait_for(lambda: not _new_processes(running), timeout=10)
    _assert_nothing_new(before, running)


def _new_processes(running: dict[int, str]) -> list[int]:
    """Processes of ours that neither were running nor descend from one that was (a
    fixture's kernel may start helpers that live as long as it does: a cell keeper)."""
    return [pid for pid in our_processes() if pid not in running
            and not _descends_from(pid, running.keys())]


def _assert_nothing_new(before: dict[str, set], running: dict[int, str]) -> None:
    # A kernel's cgroups outlive it by the moment its keeper takes to remove them (ours, or
    # those of a kernel of another Jupyter on the machine that just ended): not a leak.
    wait_for(lambda: not our_cgroups() - before["cgroups"], timeout=10, step=0.2)
    after = host_state()
    leaks = {what: sorted(after[what] - before[what]) for what in after}
    leaks = {what: items for what, items in leaks.items() if items}
    procs = [f"{pid}: {command}" for pid, command in our_processes().items()
             if not _descends_from(pid, running.keys())]
    assert not leaks and not procs, f"left behind: {leaks} processes: {procs}"


def _descends_from(pid: int, ancestors: Collection[int]) -> bool:
    """Whether ``pid`` or a parent of a parent... is one of ``ancestors`` (a kernel that a
    class or module fixture started goes on making its own processes during a test)."""
    while pid > 1:
        if pid in ancestors:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def rest_call(url: str, token: str, method: str = "GET", body: Any = None,
              timeout: float = 60) -> Any:
    """A Jupyter REST API call (JupyterLab's, JupyterHub's) with a token; the decoded JSON
    answer (None when empty)."""
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until true or ``timeout`` s pass (for things that settle)."""
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


@pytest.fixture(scope="module", params=["isolated-python", "python3"])
def kernel(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A module's tests run in both kernels; the stock one loads the extension itself."""
    manager, client = kernels.start(request.param)
    try:
        if request.param == "python3":
            assert kernels.execute(client, "%load_ext nskernel").status == "ok"
        client.test_manager = manager  # for interrupts
        client.kernel_name = request.param
        yield client
    finally:
        kernels.stop(manager, client)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory everyone may write that every kernel sees as the host's: below the
    working directory (an isolated kernel's /tmp and /var/tmp are its own, and its working
    directory is the one it started in, shown to it even where others may not enter)."""
    made = Path(tempfile.mkdtemp(dir=os.getcwd(), prefix=f".{RUN_PREFIX}-shared-"))
    made.chmod(0o1777)
    try:
        yield made
    finally:
        shutil.rmtree(made)


# ---------------------------------------------------------------------------- rootless
@pytest.fixture(scope="session")
def unprivileged_user() -> Iterator[pwd.struct_passwd]:
    """Who runs the rootless tests: the caller when not root; as root, a system user made
    for this run alone (removed after), who can reach the project's venv."""
    if not IS_ROOT:
        yield pwd.getpwuid(os.getuid())
        return
    name = f"nskernel-{RUN_PREFIX}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        with others_may_traverse([REPO, Path(sys.prefix), Path(sys.executable).resolve()]):
            check = as_user(entry, [sys.executable, "-c", "import nskernel, ipykernel"])
            assert check.returncode == 0, (
                f"{name} cannot run {sys.executable} with nskernel: {check.stderr.strip()} "
                "(the venv and its base Python must be readable by other users)")
            yield entry
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


#: Directories whose search permission for others the runs on this machine added, with
#: their modes before, and the runs that still need it: shared by concurrent runs as root.
TRAVERSE_REGISTRY = Path(tempfile.gettempdir()) / "nskernel-tests-traverse.json"


@contextlib.contextmanager
def others_may_traverse(paths: list[Path]) -> Iterator[None]:
    """Search permission (x, not read) for others on the directories above ``paths``, so a
    test user reaches the checkout and its venv wherever CI cloned them (under /root, say).

    The original modes are put back when the last run that needed them ends: two runs of
    two checkouts at once must not take each other's access away.
    """
    with _registry() as registry:
        for path in paths:
            for directory in [path, *path.parents] if path.is_dir() else path.parents:
                mode = directory.stat().st_mode & 0o7777
                if not mode & 0o001:
                    registry["modes"].setdefault(str(directory), mode)
                    directory.chmod(mode | 0o001)
        registry["runs"].append(os.getpid())
    try:
        yield
    finally:
        with _registry() as registry:
            registry["runs"] = [pid for pid in registry["runs"]
                                if pid != os.getpid() and Path(f"/proc/{pid}").exists()]
            if not registry["runs"]:
                for directory, mode in registry.pop("modes").items():
                    Path(directory).chmod(mode)


@contextlib.contextmanager
def one_run_at_a_time() -> Iterator[None]:
    """Exclusive among the test runs on this machine, for the few steps that act on the whole
    machine (`nskernel clean`, the traverse registry). The lock is taken on the temporary
    directory itself, so that no lock file is left behind (flock works on a directory)."""
    lock = os.open(tempfile.gettempdir(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


@contextlib.contextmanager
def _registry() -> Iterator[dict]:
    """TRAVERSE_REGISTRY, read and written under the lock; removed when empty."""
    with one_run_at_a_time():
        try:
            registry = json.loads(TRAVERSE_REGISTRY.read_text())
        except (FileNotFoundError, ValueError):
            registry = {}
        registry.setdefault("modes", {})
        registry.setdefault("runs", [])
        yield registry
        if registry.get("modes") or registry["runs"]:
            TRAVERSE_REGISTRY.write_text(json.dumps(registry))
        else:
            TRAVERSE_REGISTRY.unlink(missing_ok=True)


def as_user(user: pwd.struct_passwd, argv: list[str], timeout: float = 120,
            user_namespaces: bool = True, run_netns: bool = True
            ) -> subprocess.CompletedProcess:
    """Run ``argv`` as ``user`` with a private, writable Jupyter runtime directory.

    ``user_namespaces=False``: where unprivileged user namespaces are disabled, as on
    machines that turn them off; ``run_netns=False``: where /run has no netns directory and
    the user may not make one (see machine_like.py).
    """
    runtime = Path(tempfile.mkdtemp(prefix="nskernel-user-"))
    os.chown(runtime, user.pw_uid, user.pw_gid)
    env = {"PATH": os.environ["PATH"], "HOME": str(runtime), "JUPYTER_PATH": str(JUPYTER_DIR),
           "JUPYTER_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(REPO),
           RUN_MARK_ENV: RUN_ID}
    command = ["env", "-i", *[f"{key}={value}" for key, value in env.items()], *argv]
    options = [*([] if user_namespaces else ["--no-userns"]),
               *([] if run_netns else ["--no-run-netns"])]
    if options:
        switch = [sys.executable, str(Path(__file__).with_name("machine_like.py")),
                  str(user.pw_uid), str(user.pw_gid), *options]
    elif IS_ROOT:
        switch = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                  "--clear-groups"]
    else:
        switch = []
    try:
        return subprocess.run([*switch, *command], capture_output=True, text=True,
                              timeout=timeout, cwd=runtime)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
