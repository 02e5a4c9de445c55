"""A real JupyterHub (deploy/jupyterhub/jupyterhub_config.py) serving Isolated Python to three
local users made for the test: each user's kernel sees only its own processes, /tmp and
network labs; one user's fork bomb and memory hog do not keep another's cell from finishing;
nothing of any user is left once the hub stops. Everything goes through the hub's REST API
and its proxy, with tokens, as a script or a browser would. Every wait is an upper bound,
times TIME_FACTOR on a slow machine (the emulated guest of `make vm-test`)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
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

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: a hub that starts servers "
                                "as other local users, and the users it makes for the test")
CONFIG = REPO / "deploy" / "jupyterhub" / "jupyterhub_config.py"
USERS = [f"{RUN_PREFIX}u{i}" for i in range(1, 4)]


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

    def __init__(self, hub: Hub, user: str, token: str) -> None:
        self.hub, self.user, self.token = hub, user, token
        made = hub.call(f"/user/{user}/api/kernels", "POST", {"name": "isolated-python"},
                        token=token)
        self.id = made["id"]
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
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out).strip()
        raise TimeoutError(f"{self.user}: no answer within {timeout * TIME_FACTOR:g} s to "
                           f"{code!r}")

    def close(self) -> None:
        self.socket.close()


@pytest.fixture(scope="module")
def local_users() -> Iterator[list[pwd.struct_passwd]]:
    made = []
    try:
        for name in USERS:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name],
                           check=True)
            made.append(name)
        yield [pwd.getpwnam(name) for name in USERS]
    finally:
        for name in made:
            subprocess.run(["pkill", "-KILL", "-u", name], check=False)
            wait_for(lambda n=name: not processes_of(pwd.getpwnam(n).pw_uid),
                     timeout=10 * TIME_FACTOR)
            subprocess.run(["userdel", "--remove", name], check=False,
                           stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def hub(local_users) -> Iterator[tuple[Hub, subprocess.Popen]]:
    port, api_port, proxy_api_port = free_ports(3)
    state = Path(tempfile.mkdtemp(dir="/var/tmp", prefix=f"{RUN_PREFIX}-hub-"))
    admin_token = secrets.token_hex(16)
    env = dict(os.environ, NSKERNEL_HUB_PORT=str(port), NSKERNEL_HUB_API_PORT=str(api_port),
               NSKERNEL_HUB_PROXY_API_PORT=str(proxy_api_port), NSKERNEL_HUB_STATE=str(state),
               NSKERNEL_HUB_ADMIN_TOKEN=admin_token, NSKERNEL_HUB_PROXY=proxy_command(),
               NSKERNEL_HUB_USERS=" ".join(USERS), NSKERNEL_HUB_MEMORY="768M",
               NSKERNEL_HUB_PIDS="128")
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
            yield the_hub, process
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
def kernels(hub) -> Iterator[dict[str, Kernel]]:
    """Each user added, given a token, their server started and one kernel in it."""
    the_hub, _process = hub
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
    opened = {user: Kernel(the_hub, user, tokens[user]) for user in USERS}
    try:
        yield opened
    finally:
        for kernel in opened.values():
            kernel.close()


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
    _hub, process = hub
    for kernel in kernels.values():
        kernel.close()
    process.send_signal(signal.SIGTERM)
    process.wait(60 * TIME_FACTOR)
    for user in local_users:
        assert wait_for(lambda u=user: not processes_of(u.pw_uid), timeout=30 * TIME_FACTOR), \
            f"{user.pw_name} still has processes: {processes_of(user.pw_uid)}"
