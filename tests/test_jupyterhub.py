"""A real JupyterHub (deploy/jupyterhub/jupyterhub_config.py) serving a class of three
students, as a teacher sets it up: a class list and one password, the students' Unix accounts
made by the hub at their first start, the tutorial copied into each home. Each student's
kernel sees only its own processes, /tmp and network labs, and each student only their own
copy; tutorial notebooks run through the hub as a student runs them, notebook 08 on the stock
kernel; a student's kernels stop at the cap, another's do not; each student's processes share
one cgroup; one student's fork bomb and memory hog do not keep another's cell from finishing;
nothing of any student is left once the hub stops. Everything goes through the hub's login
form, REST API and proxy, with tokens, as a browser or a script would. Every wait is an
upper bound, times TIME_FACTOR on a slow machine (the emulated guest of `make vm-test`)."""

from __future__ import annotations

import contextlib
import grp
import http.cookiejar
import json
import os
import pwd
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from conftest import (
    IS_ROOT,
    REPO,
    RUN_PREFIX,
    TIME_FACTOR,
    free_ports,
    others_may_traverse,
    rest_call,
    wait_for,
)

from nskernel.locks import cgroups

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: a hub that starts servers "
                                "as other local users, and the users it makes for the test")
CONFIG = REPO / "deploy" / "jupyterhub" / "jupyterhub_config.py"
USERS = [f"{RUN_PREFIX}u{i}" for i in range(1, 4)]
#: An account of the machine that the class list names too: the hub must not open it.
OUTSIDER = f"{RUN_PREFIX}x"
GROUP = f"{RUN_PREFIX}class"
PASSWORD = secrets.token_hex(8)
MAX_KERNELS = 2
COURSE = "nskernel-course"


def proxy_command() -> str:
    beside_venv = Path(sys.prefix, "node", "node_modules", ".bin", "configurable-http-proxy")
    assert beside_venv.exists(), (f"{beside_venv} is missing: `make test` installs it "
                                  "(npm install --prefix .venv/node configurable-http-proxy)")
    return str(beside_venv)


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


class Hub:
    """The hub's REST API and its proxy, as the admin service or as a user (with a token)."""

    def __init__(self, port: int, admin_token: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.admin_token = admin_token

    def call(self, path: str, method: str = "GET", body: object = None,
             token: str | None = None) -> Any:
        return rest_call(f"{self.url}{path}", token or self.admin_token, method, body,
                         timeout=60 * TIME_FACTOR)


class Kernel:
    """A kernel of a user's server, driven over its websocket through the hub's proxy."""

    def __init__(self, hub: Hub, user: str, token: str, kernel_id: str | None = None) -> None:
        self.hub, self.user, self.token = hub, user, token
        self.id = kernel_id or hub.call(f"/user/{user}/api/kernels", "POST",
                                        {"name": "isolated-python"}, token=token)["id"]
        self.errors: list[str] = []
        self.socket = websocket.create_connection(
            f"{hub.url.replace('http', 'ws')}/user/{user}/api/kernels/{self.id}/channels",
            header=[f"Authorization: token {token}"], timeout=120 * TIME_FACTOR)

    def run(self, code: str, timeout: float = 120) -> str:
        """Execute ``code``; its stdout, result and error as one text."""
        msg_id = uuid.uuid4().hex
        self.socket.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": self.user,
                       "session": self.id, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        out: list[str] = []
        deadline = time.monotonic() + timeout * TIME_FACTOR
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "execute_result":
                out.append(content["data"]["text/plain"])
            elif kind == "error":
                out.append(f"{content['ename']}: {content['evalue']}")
                self.errors.append(out[-1])
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out).strip()
        raise TimeoutError(f"{self.user}: no answer within {timeout * TIME_FACTOR:g} s to "
                           f"{code!r}")

    def close(self) -> None:
        self.socket.close()


class Notebook:
    """A notebook of a student's copy, opened as JupyterLab opens it: a session (its kernel
    started in the notebook's folder, of the kind the notebook names) and its cells."""

    def __init__(self, hub: Hub, user: str, token: str, path: str) -> None:
        self.hub, self.user, self.token, self.path = hub, user, token, path
        model = hub.call(f"/user/{user}/api/contents/{path}", token=token)
        self.cells = [("".join(cell["source"]) if isinstance(cell["source"], list)
                       else cell["source"]) for cell in model["content"]["cells"]
                      if cell["cell_type"] == "code"]
        self.kernel_name = model["content"]["metadata"]["kernelspec"]["name"]
        session = hub.call(f"/user/{user}/api/sessions", "POST", {
            "path": path, "type": "notebook", "name": path.rsplit("/", 1)[-1],
            "kernel": {"name": self.kernel_name}}, token=token)
        self.session_id = session["id"]
        self.kernel = Kernel(hub, user, token, session["kernel"]["id"])

    def run_all(self) -> list[str]:
        """Every code cell in order; each one's text. A cell's error fails at once."""
        outputs = []
        for number, code in enumerate(self.cells, 1):
            outputs.append(self.kernel.run(code, timeout=180))
            assert not self.kernel.errors, (f"{self.user}: {self.path}, code cell {number}: "
                                            f"{self.kernel.errors}")
        return outputs

    def close(self) -> None:
        self.kernel.close()
        self.hub.call(f"/user/{self.user}/api/sessions/{self.session_id}", "DELETE",
                      token=self.token)


def remove_account(name: str) -> None:
    subprocess.run(["pkill", "-KILL", "-u", name], check=False)
    wait_for(lambda: not processes_of(pwd.getpwnam(name).pw_uid), timeout=10 * TIME_FACTOR)
    subprocess.run(["userdel", "--remove", name], check=False, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def accounts() -> Iterator[None]:
    """The outsider's account (the students' the hub makes); every one removed at the end,
    with the class's group."""
    for name in [*USERS, OUTSIDER]:
        with pytest.raises(KeyError):
            pwd.getpwnam(name)  # ours to make, and to remove
    with pytest.raises(KeyError):
        grp.getgrnam(GROUP)
    try:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", OUTSIDER],
                       check=True)
        yield
    finally:
        for name in [*USERS, OUTSIDER]:
            try:
                pwd.getpwnam(name)
            except KeyError:
                continue
            remove_account(name)
        subprocess.run(["groupdel", GROUP], check=False, stderr=subprocess.DEVNULL)
        remove_student_cgroups()


def student_cgroups_left() -> list[str]:
    """The cgroups the hub made for our students that are still there."""
    left = []
    for own in {hierarchy.own for hierarchy in cgroups.hierarchies()}:
        left += [os.path.join(own, name) for name in os.listdir(own)
                 if name.startswith(cgroups.PREFIX) and name.rsplit(".", 1)[-1] in USERS]
    return left


def remove_student_cgroups() -> None:
    """What a hub that did not stop cleanly left (its students' processes are gone)."""
    for directory in student_cgroups_left():
        for below, _dirs, _files in sorted(os.walk(directory), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(below)


@pytest.fixture(scope="module")
def hub(accounts) -> Iterator[tuple[Hub, subprocess.Popen, Path]]:
    port, api_port, proxy_api_port = free_ports(3)
    state = Path(tempfile.mkdtemp(dir="/var/tmp", prefix=f"{RUN_PREFIX}-hub-"))
    (state / "class.txt").write_text("# the class list, as a teacher writes it\n" +
                                     "".join(f"{name}\n" for name in [*USERS, OUTSIDER]))
    admin_token = secrets.token_hex(16)
    env = dict(os.environ, NSKERNEL_HUB_PORT=str(port), NSKERNEL_HUB_API_PORT=str(api_port),
               NSKERNEL_HUB_PROXY_API_PORT=str(proxy_api_port), NSKERNEL_HUB_STATE=str(state),
               NSKERNEL_HUB_ADMIN_TOKEN=admin_token, NSKERNEL_HUB_PROXY=proxy_command(),
               NSKERNEL_HUB_CLASS=str(state / "class.txt"), NSKERNEL_HUB_PASSWORD=PASSWORD,
               NSKERNEL_HUB_CLASS_GROUP=GROUP, NSKERNEL_HUB_MAX_KERNELS=str(MAX_KERNELS),
               NSKERNEL_HUB_MEMORY="768M", NSKERNEL_HUB_PIDS="128")
    # On a slow machine the users' servers get longer to answer: the command line's settings
    # win over the config file's, which stays as deployed.
    slow = [] if TIME_FACTOR == 1 else [f"--Spawner.http_timeout={60 * TIME_FACTOR:g}",
                                        f"--Spawner.start_timeout={60 * TIME_FACTOR:g}"]
    log = open(state / "hub.log", "wb")  # noqa: SIM115
    with others_may_traverse([REPO, Path(sys.executable).parent]):
        process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(CONFIG), *slow],
                                   cwd=state, env=env, stdout=log, stderr=log,
                                   start_new_session=True)
        the_hub = Hub(port, admin_token)
        try:
            started = wait_for(lambda: _answers(the_hub), timeout=60 * TIME_FACTOR, step=0.3)
            assert started, (state / "hub.log").read_text()[-3000:]
            yield the_hub, process, state
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60 * TIME_FACTOR)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            log.close()
            print((state / "hub.log").read_text()[-20000:])  # shown when a test fails
            subprocess.run(["rm", "-rf", str(state)], check=False)


def _answers(hub: Hub) -> bool:
    try:
        hub.call("/hub/api/")
        return True
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture(scope="module")
def tokens(hub) -> dict[str, str]:
    """Each student given a token (as JupyterLab's own is) and their server started."""
    the_hub = hub[0]
    tokens = {}
    for user in USERS:  # allowed users are in the hub's database from its start
        assert the_hub.call(f"/hub/api/users/{user}")["name"] == user
        tokens[user] = the_hub.call(f"/hub/api/users/{user}/tokens", "POST",
                                    {"note": "test"})["token"]
        the_hub.call(f"/hub/api/users/{user}/server", "POST", {})
    for user in USERS:
        ready = wait_for(lambda u=user: the_hub.call(f"/hub/api/users/{u}")["servers"]
                         .get("", {}).get("ready"), timeout=90 * TIME_FACTOR, step=0.5)
        assert ready, f"{user}'s server did not start"
    return tokens


@pytest.fixture(scope="module")
def local_users(tokens) -> list[pwd.struct_passwd]:
    """The students' accounts, as the hub made them."""
    return [pwd.getpwnam(name) for name in USERS]


@pytest.fixture(scope="module")
def kernels(hub, tokens) -> Iterator[dict[str, Kernel]]:
    """One kernel in each student's server."""
    opened = {user: Kernel(hub[0], user, tokens[user]) for user in USERS}
    try:
        yield opened
    finally:
        for kernel in opened.values():
            kernel.close()


def login(hub: Hub, user: str, password: str) -> int:
    """The hub's login form, as a browser fills it in: the answer's status (302: in)."""
    jar = http.cookiejar.CookieJar()

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None  # the redirect is the answer

    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), Stay)
    page = browser.open(f"{hub.url}/hub/login", timeout=60 * TIME_FACTOR).read().decode()
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', page)
    assert xsrf, page[:2000]
    form = urllib.parse.urlencode({"username": user, "password": password,
                                   "_xsrf": xsrf.group(1)}).encode()
    try:
        with browser.open(f"{hub.url}/hub/login", data=form, timeout=60 * TIME_FACTOR) as answer:
            return answer.status
    except urllib.error.HTTPError as answer:
        return answer.code


def test_students_log_in_with_the_class_password_into_accounts_the_hub_made(hub, tokens):
    the_hub, _process, state = hub
    assert login(the_hub, USERS[0], PASSWORD) == 302
    assert login(the_hub, USERS[0], PASSWORD[::-1]) == 403
    assert login(the_hub, f"{RUN_PREFIX}nobody", PASSWORD) == 403  # not on the class list
    for user in USERS:
        account = pwd.getpwnam(user)
        assert user in grp.getgrnam(GROUP).gr_mem
        assert os.stat(account.pw_dir).st_mode & 0o777 == 0o700
        copy = Path(account.pw_dir, COURSE)
        assert os.stat(copy).st_uid == account.pw_uid
        assert sorted(p.name for p in copy.glob("*.ipynb")) == \
            sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    # The outsider is on the list, but their account is the machine's: no server for them.
    with pytest.raises(urllib.error.HTTPError):
        the_hub.call(f"/hub/api/users/{OUTSIDER}/server", "POST", {})
    assert wait_for(lambda: "not of the class" in (state / "hub.log").read_text(),
                    timeout=30 * TIME_FACTOR), (state / "hub.log").read_text()[-3000:]
    assert not Path(pwd.getpwnam(OUTSIDER).pw_dir, COURSE).exists()


def test_each_users_kernel_sees_only_its_own(kernels, local_users):
    uids = {user.pw_name: user.pw_uid for user in local_users}
    for user, kernel in kernels.items():
        # root in a user namespace of its own; on the host, the user
        assert kernel.run("import os\nos.getuid()") == "0"
        theirs = [command_line(pid) for pid in processes_of(uids[user])]
        assert any(b"nskernel.launch" in command for command in theirs), theirs
        assert kernel.run("os.getpid()") == "2"
        listed = kernel.run("sorted(int(p) for p in os.listdir('/proc') if p.isdigit())")
        assert set(json.loads(listed)) <= {1, 2, 3, 4, 5, 6, 7, 8}, listed  # its own few
        kernel.run(f"open('/tmp/{user}-was-here', 'w').write('x')")
        kernel.run(f"%netns add lab-{user}")
    for user, kernel in kernels.items():
        here = kernel.run("sorted(n for n in os.listdir('/tmp') if n.endswith('-was-here'))")
        assert here == repr([f"{user}-was-here"])
        labs = kernel.run("%netns list")
        assert f"lab-{user}" in labs and not any(f"lab-{other}" in labs
                                                 for other in USERS if other != user)
        assert kernel.run("import resource\nresource.getrlimit(resource.RLIMIT_DATA)[0]") \
            == str(768 << 20)


def test_each_student_sees_only_their_own_copy(hub, tokens, kernels, local_users):
    the_hub = hub[0]
    first, second, _third = USERS
    notebook = f"{COURSE}/01-pid-namespace.ipynb"
    model = the_hub.call(f"/user/{first}/api/contents/{notebook}", token=tokens[first])
    model["content"]["cells"][0]["source"] = f"# {first}'s notes"
    the_hub.call(f"/user/{first}/api/contents/{notebook}", "PUT",
                 {"type": "notebook", "format": "json", "content": model["content"]},
                 token=tokens[first])
    theirs = the_hub.call(f"/user/{second}/api/contents/{notebook}", token=tokens[second])
    assert theirs["content"]["cells"][0]["source"] != f"# {first}'s notes"
    with pytest.raises(urllib.error.HTTPError) as refused:
        the_hub.call(f"/user/{second}/api/contents/{notebook}", token=tokens[first])
    assert refused.value.code in (403, 404)
    others_home = pwd.getpwnam(second).pw_dir
    assert kernels[first].run(f"os.listdir({others_home!r})") == \
        f"PermissionError: [Errno 13] Permission denied: {others_home!r}"
    kernels[first].errors.clear()


def test_students_run_tutorial_notebooks_through_the_hub(hub, tokens):
    """Notebook 01 in the Isolated Python kernel, notebook 08 in the stock kernel (starting an
    isolated one beside it), each in a student's own copy, as JupyterLab runs them."""
    the_hub = hub[0]
    for user, name, kernel_name in [(USERS[1], "01-pid-namespace.ipynb", "isolated-python"),
                                    (USERS[2], "08-isolated-python-kernel.ipynb", "python3")]:
        notebook = Notebook(the_hub, user, tokens[user], f"{COURSE}/{name}")
        try:
            assert notebook.kernel_name == kernel_name
            outputs = notebook.run_all()
        finally:
            notebook.close()
        assert any(output for output in outputs), outputs
        if kernel_name == "python3":
            assert any("isolated kernel: PID, hostname, interfaces, processes: 2 isolated "
                       "['lo']" in output for output in outputs), outputs


def test_reset_my_copy(hub, tokens):
    """A student's changed notebook back as the course has it, their version kept beside."""
    the_hub = hub[0]
    user = USERS[0]  # whose notebook 01 has their notes (see above)
    copy = Path(pwd.getpwnam(user).pw_dir, COURSE)
    notes = (copy / "01-pid-namespace.ipynb").read_text()
    assert f"{user}'s notes" in notes
    kernel = Kernel(the_hub, user, tokens[user], the_hub.call(
        f"/user/{user}/api/kernels", "POST", {"name": "python3"}, token=tokens[user])["id"])
    try:
        said = kernel.run(f"!cd {copy} && ./reset-my-copy 01-pid-namespace.ipynb")
        refused = kernel.run(f"!cd {copy} && ./reset-my-copy ../../etc/passwd")
    finally:
        kernel.close()
        the_hub.call(f"/user/{user}/api/kernels/{kernel.id}", "DELETE", token=tokens[user])
    assert "01-pid-namespace.ipynb: the course's copy" in said, said
    assert "give a name in this folder" in refused, refused
    assert (copy / "01-pid-namespace.ipynb").read_bytes() == \
        (REPO / "notebooks" / "01-pid-namespace.ipynb").read_bytes()
    assert (copy / "01-pid-namespace.ipynb.~1~").read_text() == notes


def test_a_students_kernels_stop_at_the_cap_and_anothers_do_not(hub, tokens, kernels):
    the_hub = hub[0]
    capped, other = USERS[0], USERS[2]

    def start(user: str) -> str:
        return the_hub.call(f"/user/{user}/api/kernels", "POST", {"name": "isolated-python"},
                            token=tokens[user])["id"]

    started: list[tuple[str, str]] = []
    try:
        while len(started) < MAX_KERNELS - 1:  # the fixture's kernel is the first
            started.append((capped, start(capped)))
        with pytest.raises(urllib.error.HTTPError) as refused:
            start(capped)
        message = json.loads(refused.value.read())["message"]
        assert f"already runs {MAX_KERNELS} Isolated Python kernels, the most it may " \
               f"(max_kernels={MAX_KERNELS})" in message, message
        started.append((other, start(other)))  # the cap is each student's own
        user, kernel_id = started.pop(0)
        the_hub.call(f"/user/{user}/api/kernels/{kernel_id}", "DELETE", token=tokens[user])
        started.append((capped, start(capped)))  # one shut down: room for one
    finally:
        for user, kernel_id in started:
            the_hub.call(f"/user/{user}/api/kernels/{kernel_id}", "DELETE", token=tokens[user])


def student_cgroups(pid: int, user: str) -> list[str]:
    """The cgroup directories, one per hierarchy, that the hub made for ``user`` and that
    hold ``pid`` (itself, or in a leaf below)."""
    found = []
    for hierarchy in cgroups.hierarchies(pid):
        for directory in (hierarchy.own, os.path.dirname(hierarchy.own)):
            name = os.path.basename(directory)
            if name.startswith(cgroups.PREFIX) and name.endswith(f".{user}"):
                found.append(directory)
                break
    return found


def test_each_students_processes_share_one_cgroup(hub, kernels, local_users):
    """Where the hub may make cgroups (as here: it can where this test can), all of a
    student's processes are in one of the student's own, with the student's memory limit;
    elsewhere the hub says why in its log."""
    _hub, _process, state = hub
    the_plan = cgroups.plan()
    if not {"cpu", "memory", "pids"} <= set(the_plan.places):
        log = (state / "hub.log").read_text()
        for user in USERS:
            assert f"{user} gets no cgroup of their own" in log
        return
    seen = set()
    weights = set()
    for user in local_users:
        processes = processes_of(user.pw_uid)
        assert processes
        places = {tuple(student_cgroups(pid, user.pw_name)) for pid in processes}
        assert len(places) == 1 and next(iter(places)), places  # one per hierarchy
        directories = next(iter(places))
        assert not seen & set(directories)
        seen |= set(directories)

        def of(job: str, directories: tuple[str, ...] = directories) -> str:
            return next(d for d in directories if d.startswith(the_plan.places[job].own))
        v2 = {job: the_plan.places[job].version == 2 for job in ("memory", "pids", "cpu")}
        limit = Path(of("memory"), "memory.max" if v2["memory"] else "memory.limit_in_bytes")
        assert limit.read_text().strip() == str(2 << 30)
        assert Path(of("pids"), "pids.max").read_text().strip() == "1024"
        # One CPU share each: siblings with the same weight (cgroup v2) or shares (v1).
        weights.add(Path(of("cpu"), "cpu.weight" if v2["cpu"] else "cpu.shares")
                    .read_text().strip())
    assert len(weights) == 1, weights


def test_the_idle_culler_runs_as_a_hub_service(hub):
    _hub, process, state = hub
    culler = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
              if b"jupyterhub_idle_culler" in command_line(pid)]
    assert culler, "no jupyterhub_idle_culler process"
    parents = [int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
               for pid in culler]
    assert process.pid in parents, (culler, parents)
    assert "idle-culler exited" not in (state / "hub.log").read_text()


def test_one_users_fork_bomb_and_memory_hog_do_not_stop_anothers_cell(kernels):
    hostile, calm, third = (kernels[user] for user in USERS)
    outcome: dict[str, str] = {}

    def attack() -> None:
        outcome["hostile"] = hostile.run(
            "import os, time\nkids = []\ntry:\n"
            "    while True:\n        pid = os.fork()\n"
            "        if pid == 0:\n            time.sleep(3)\n            os._exit(0)\n"
            "        kids.append(pid)\nexcept OSError as error:\n"
            "    print('fork:', error.strerror)\n"
            "hog = []\ntry:\n    while True:\n        hog.append(bytearray(64 << 20))\n"
            "except MemoryError:\n    print('memory: MemoryError')\n"
            "del hog\nfor pid in kids:\n    os.waitpid(pid, 0)", timeout=120)

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        time.sleep(0.5 * TIME_FACTOR)  # the bomb is going off
        assert calm.run("sum(range(10 ** 6))") == str(sum(range(10 ** 6)))
        assert third.run("import os\nlen(os.listdir('/proc'))") != ""
    finally:
        attacker.join(150 * TIME_FACTOR)
    assert "fork: Resource temporarily unavailable" in outcome["hostile"], outcome
    assert "memory: MemoryError" in outcome["hostile"], outcome
    assert hostile.run("1 + 1") == "2"


def test_nothing_of_any_user_is_left_after_the_hub_stops(kernels, hub, local_users):
    _hub, process, _state = hub
    for kernel in kernels.values():
        kernel.close()
    process.send_signal(signal.SIGTERM)
    process.wait(60 * TIME_FACTOR)
    for user in local_users:
        assert wait_for(lambda u=user: not processes_of(u.pw_uid), timeout=30 * TIME_FACTOR), \
            f"{user.pw_name} still has processes: {processes_of(user.pw_uid)}"
    assert not student_cgroups_left()
