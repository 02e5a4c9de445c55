"""Isolated Python in the container a Kubernetes pod would be, under a real runtime (podman).

The image is built here from a Debian root filesystem and the checkout's wheel
(deploy/podman/build-image.sh, cached). With the runtime's default settings, rootful and
rootless, `nskernel doctor` names each blocker with the setting that changes it and a kernel
start fails in one line; with the settings of docs/kubernetes.md (a user namespace of the
container's own, /proc and /sys unmasked, deploy/seccomp/nskernel.json) the kernel, its lab
and its limits work, and nothing is left on the host. The containers get no network of their
own (--network=none): nothing here needs one, and the lab's traffic stays in the kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IS_ROOT, REPO, RUN_PREFIX

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: builds the image and runs "
                                "rootful podman (rootless podman is tested from root too)")

PODMAN = str(REPO / "deploy" / "podman" / "podman.sh")
PROFILE = REPO / "deploy" / "seccomp" / "nskernel.json"
#: A user namespace of the container's own (Kubernetes: hostUsers: false); rootful podman's
#: --userns=auto needs a "containers" range in /etc/subuid, an explicit map does not.
OWN_USERNS = ["--uidmap", "0:2000000000:65536", "--gidmap", "0:2000000000:65536"]
#: docs/kubernetes.md's settings: procMount: Unmasked (/proc and /sys), Localhost profile.
DOC_SETTINGS = [*OWN_USERNS, "--security-opt", "unmask=ALL",
                "--security-opt", f"seccomp={PROFILE}"]
LAB_CELLS = ("%netns add ua ub", "%veth ua:10.11.0.1/24 ub:10.11.0.2/24",
             "%ping ua 10.11.0.2 -c 1")
#: Hostile cells against the image's kernelspec (--readonly --seccomp --memory 2G --pids 512).
HOSTILE = {
    "readonly": "import errno\ntry:\n    open('/home/jovyan/x', 'w')\n    got = 'written'\n"
                "except OSError as exc:\n    got = errno.errorcode[exc.errno]\ngot",
    "seccomp": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "libc.syscall(250, 0, 0, 0, 0, 0) == -1 and ctypes.get_errno()",  # keyctl
    "memory": "try:\n    big = bytearray(3 << 30)\n    got = 'allocated'\n"
              "except MemoryError:\n    got = 'MemoryError'\ngot",
    "pids": "import errno, os, time\nchildren = []\nresult = 'all forked'\n"
            "try:\n    for _ in range(600):\n        pid = os.fork()\n"
            "        if pid == 0:\n            try:\n                time.sleep(30)\n"
            "            finally:\n                os._exit(0)\n        children.append(pid)\n"
            "except OSError as exc:\n    result = errno.errorcode[exc.errno]\n"
            "for pid in children:\n    os.kill(pid, 9)\n    os.waitpid(pid, 0)\n"
            "(result, 0 < len(children) < 512)",
}
HOSTILE_EXPECTED = {"readonly": "'EROFS'", "seccomp": "1", "memory": "'MemoryError'",
                    "pids": "('EAGAIN', True)"}


def podman(*args: str, user: pwd.struct_passwd | None = None, timeout: float = 300,
           check: bool = True) -> subprocess.CompletedProcess:
    """podman as this machine needs it (podman.sh); as ``user`` for rootless podman."""
    command = [PODMAN, *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                   "--init-groups", "env", "-i", f"HOME={user.pw_dir}",
                   f"XDG_RUNTIME_DIR={user.pw_dir}/run", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                   *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          cwd=user.pw_dir if user else None)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr.strip()}"
    return done


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run .ci/system-tools --install (as root)")
    built = subprocess.run([str(REPO / "deploy" / "podman" / "build-image.sh"),
                            sys.executable], capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, f"build-image.sh: {built.stderr.strip()}"
    return built.stdout.split()[-1]


@contextlib.contextmanager
def container(image: str, *options: str, user: pwd.struct_passwd | None = None
              ) -> Iterator[str]:
    """A container of ``image`` that idles, with tests/ at /probe; removed afterwards."""
    name = f"nskernel-{RUN_PREFIX}-{os.urandom(3).hex()}"
    probe = REPO / "tests" if user is None else Path(user.pw_dir) / "probe"
    try:
        podman("run", "--detach", "--name", name, "--network=none", *options,
               "--volume", f"{probe}:/probe:ro", image, "sleep", "infinity", user=user)
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, user=user, check=False)
    assert podman("ps", "--all", "--quiet", "--filter", f"name={name}",
                  user=user).stdout.strip() == ""


def in_container(name: str, command: str, user: pwd.struct_passwd | None = None,
                 timeout: float = 240) -> subprocess.CompletedProcess:
    return podman("exec", name, "sh", "-c", command, user=user, timeout=timeout, check=False)


def doctor(name: str, user: pwd.struct_passwd | None = None) -> str:
    return in_container(name, "nskernel doctor 2>/dev/null", user=user).stdout


def kernel_results(name: str, *codes: str, user: pwd.struct_passwd | None = None
                   ) -> list[dict]:
    """Cells run in the image's Isolated Python kernel, started through jupyter_client."""
    quoted = " ".join("'" + code.replace("'", "'\\''") + "'" for code in codes)
    done = in_container(name, f"python /probe/kernel_probe.py isolated-python {quoted} "
                              "--log /tmp/kernel.log || cat /tmp/kernel.log >&2", user=user)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["results"]


def failed_start(name: str, user: pwd.struct_passwd | None = None) -> list[str]:
    """A kernel start that must fail: within the probe's timeout (not a hang), the kernel's
    own output is its lines (the probe's traceback is jupyter_client's, not the kernel's)."""
    done = in_container(name, "timeout 90 python /probe/kernel_probe.py isolated-python 1 "
                              "--log /tmp/kernel.log >/dev/null 2>&1; echo $?; "
                              "cat /tmp/kernel.log", user=user)
    status, *lines = done.stdout.splitlines()
    assert status not in ("0", "124"), done.stdout  # it failed, and did not hang
    return lines


def assert_blockers_named(report: str, blockers: dict[str, str]) -> None:
    assert "The Isolated Python kernel cannot start here" in report, report
    for line_start, setting in blockers.items():
        line = next((line for line in report.splitlines() if line.startswith(line_start)), "")
        assert setting in line, f"{line_start!r} should name {setting!r}:\n{report}"


#: Each blocker of the runtime's defaults as doctor names it, with the setting that changes it.
DEFAULT_BLOCKERS = {
    "  NO  pid ": "could not mount a fresh /proc",
    "  NO  net ": "mount sysfs on /sys",
    "  NO  uts ": "sethostname",
    "  NO  seccomp ": "deploy/seccomp/nskernel.json",
    "  NO  proc ": "procMount: Unmasked with hostUsers: false",
}
APPARMOR = Path("/sys/kernel/security/apparmor").exists()


def assert_apparmor_as_here(report: str) -> None:
    """This machine's kernel has AppArmor or not; doctor says so only where it has."""
    assert ("NO  apparmor" in report) == APPARMOR, report


def assert_one_clear_line(lines: list[str], cause: str) -> None:
    assert len(lines) == 1 and lines[0].startswith("nskernel: ") and cause in lines[0], lines


def test_rootful_defaults_doctor_names_each_blocker_and_the_kernel_fails_in_one_line(image):
    with container(image) as name:
        report = doctor(name)
        assert_blockers_named(report, DEFAULT_BLOCKERS)
        assert "  NO  proc     parts of /proc and /sys are covered" in report
        assert_apparmor_as_here(report)
        assert_one_clear_line(failed_start(name), "mount proc on /proc")


def test_with_the_runtimes_default_seccomp_profile_sethostname_is_refused(image):
    """Everything else of the doc's settings: the default profile alone still refuses."""
    with container(image, *OWN_USERNS, "--security-opt", "unmask=ALL") as name:
        report = doctor(name)
        assert_blockers_named(report, {"  NO  uts ": "sethostname('doctor'): Operation not "
                                       "permitted", "  NO  seccomp ": "nskernel.json"})
        assert "  NO  pid " not in report and "  NO  net " not in report
        assert_one_clear_line(failed_start(name), "sethostname('isolated')")


@pytest.mark.parametrize("seccomp", [f"seccomp={PROFILE}", "seccomp=unconfined"],
                         ids=["localhost-profile", "unconfined"])
def test_with_the_docs_settings_the_kernel_starts_and_its_lab_works(image, seccomp):
    with container(image, *OWN_USERNS, "--security-opt", "unmask=ALL",
                   "--security-opt", seccomp) as name:
        assert "The Isolated Python kernel can start here." in doctor(name)
        first, *lab = kernel_results(
            name, "import os, socket\n(os.getpid(), socket.gethostname(), "
                  "sorted(os.listdir('/sys/class/net')))", *LAB_CELLS)
        assert first["result"] == "(2, 'isolated', ['lo'])", first
        assert [cell["status"] for cell in lab] == ["ok"] * 3, lab
        assert lab[2]["result"] == "1/1 replies from 10.11.0.2"
    assert_nothing_left_on_the_host()


def test_with_the_docs_settings_the_limits_hold_against_hostile_cells(image):
    with container(image, *DOC_SETTINGS) as name:
        results = kernel_results(name, *HOSTILE.values(), "1 + 1")
    got = {what: cell["result"] for what, cell in zip(HOSTILE, results[:-1], strict=True)}
    assert got == HOSTILE_EXPECTED, results
    assert results[-1]["result"] == "2"  # the kernel lives on
    assert_nothing_left_on_the_host()


def assert_nothing_left_on_the_host() -> None:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ua-eth0" not in links and "ub-eth0" not in links, links
    assert not {"ua", "ub"} & {line.split()[0] for line in netns.splitlines() if line}, netns


# ----------------------------------------------------------------------------- rootless
@pytest.fixture(scope="module")
def rootless(image) -> Iterator[pwd.struct_passwd]:
    """A user with a home, subordinate ids (useradd gives them) and the image in their own
    podman storage; removed with everything of theirs afterwards."""
    name = f"nskpod-{RUN_PREFIX}"
    home = Path(tempfile.mkdtemp(prefix="nskernel-pod-user-"))
    home.chmod(0o711)
    subprocess.run(["useradd", "--home-dir", str(home / "home"), "--create-home",
                    "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        user = pwd.getpwnam(name)
        assert any(line.startswith(f"{name}:") for line in
                   Path("/etc/subuid").read_text().splitlines()), \
            f"useradd gave {name} no /etc/subuid range (SUB_UID_COUNT in /etc/login.defs)"
        (home / "home" / "run").mkdir(mode=0o700)
        shutil.copytree(REPO / "tests", home / "home" / "probe",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(PROFILE, home / "home")  # the checkout may be closed to others
        archive = home / "home" / "image.tar"
        podman("save", "--quiet", "--output", str(archive), image)
        subprocess.run(["chown", "-R", f"{name}:", str(home / "home")], check=True)
        podman("load", "--quiet", "--input", str(archive), user=user)
        archive.unlink()
        yield user
    finally:
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            podman("system", "reset", "--force", user=user, check=False)
            # Rootless podman's pause process holds the user namespace: ended by its pid.
            for pid in subprocess.run(["pgrep", "-u", str(user.pw_uid)], capture_output=True,
                                      text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
        subprocess.run(["userdel", "--remove", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_rootless_defaults_doctor_names_each_blocker_and_the_kernel_fails_in_one_line(
        image, rootless):
    with container(image, user=rootless) as name:
        report = doctor(name, user=rootless)
        # Rootless podman is a user namespace of its own: sysfs is refused for its covers.
        assert_blockers_named(report, DEFAULT_BLOCKERS)
        assert_apparmor_as_here(report)
        assert_one_clear_line(failed_start(name, user=rootless), "mount proc on /proc")


def test_rootless_with_the_docs_settings_the_kernel_and_lab_work(image, rootless):
    with container(image, "--security-opt", "unmask=ALL", "--security-opt",
                   f"seccomp={rootless.pw_dir}/{PROFILE.name}", user=rootless) as name:
        first, *lab = kernel_results(name, "import socket\nsocket.gethostname()", *LAB_CELLS,
                                     user=rootless)
        assert first["result"] == "'isolated'", first
        assert [cell["status"] for cell in lab] == ["ok"] * 3, lab
    assert_nothing_left_on_the_host()


# -------------------------------------------------------------------------- kube play
MANIFEST = REPO / "deploy" / "kubernetes" / "singleuser-pod.yaml"
CGROUP_V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()


def playable(user: pwd.struct_passwd, image: str, token: str) -> Path:
    """The manifest as KubeSpawner makes it, with `jupyter server` for jupyterhub-singleuser
    (no hub here) on loopback with a token, and tests/ mounted at /probe."""
    import yaml

    pod = yaml.safe_load(MANIFEST.read_text())
    notebook = pod["spec"]["containers"][0]
    assert notebook["args"][0] == "jupyterhub-singleuser"
    notebook["image"] = image  # the one built and loaded for the user
    notebook["args"] = ["jupyter", "server", "--ServerApp.ip=127.0.0.1",
                        "--ServerApp.port=8888", f"--IdentityProvider.token={token}",
                        "--ServerApp.open_browser=False", *notebook["args"][1:]]
    notebook.pop("ports")  # the pod has no network here (--network=none): asked from inside
    if not CGROUP_V2:  # rootless podman sets no limits on cgroup v1 (refused): the flags
        notebook.pop("resources")  # are tested rootful (..._by_its_flags_...)
    notebook["volumeMounts"] = [{"name": "probe", "mountPath": "/probe", "readOnly": True}]
    pod["spec"]["volumes"] = [{"name": "probe", "hostPath": {"path": f"{user.pw_dir}/probe",
                                                             "type": "Directory"}}]
    out = Path(user.pw_dir) / "pod.yaml"
    out.write_text(yaml.safe_dump(pod))
    return out


def server_cells(name: str, token: str, user: pwd.struct_passwd | None = None) -> dict:
    """Isolated Python started through the Jupyter Server in ``name`` (REST + websocket)."""
    done = in_container(name, f"python /probe/pod_server_probe.py 8888 {token} "
                              "'import socket\nsocket.gethostname()' '%nsinfo' "
                              f"{shlex_quote(HOSTILE['readonly'])}", user=user)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["kernel"]["name"] == "isolated-python" and outcome["after"] == []
    return dict(zip(("hostname", "nsinfo", "readonly"), outcome["results"], strict=True))


def podman_version() -> tuple[int, ...]:
    shown = podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    return tuple(int(part) for part in shown.split("-")[0].split(".")[:2])


def test_the_singleuser_pod_played_gets_what_podman_honours(image, rootless):
    """Rootless `podman kube play` of the manifest, its server starting: hostUsers: false is
    honoured (a user namespace from the user's subordinate ids; rootful podman takes them from
    a "containers" range in /etc/subuid); procMount: Unmasked only from podman 4.7 on, and the
    seccompProfile field not by podman 4.3 (its default profile stays): doctor in the pod
    names what is left, and the next test runs the pod with their equivalent flags."""
    token = os.urandom(12).hex()
    manifest = playable(rootless, image, token)
    try:
        podman("kube", "play", "--network=none", "--seccomp-profile-root", rootless.pw_dir,
               str(manifest), user=rootless)
        name = "jupyter-ada-notebook"
        uid_map = in_container(name, "cat /proc/self/uid_map; id -u", user=rootless).stdout
        assert uid_map.split()[:3] != ["0", "0", "4294967295"], uid_map  # its own userns
        assert uid_map.split()[-1] == "1000", uid_map  # runAsUser
        report = doctor(name, user=rootless)
        unmasked = podman_version() >= (4, 7)
        assert ("  NO  proc " in report) != unmasked, report
        if not unmasked:
            assert "  NO  pid " in report and "procMount: Unmasked" in report
        if podman_version() <= (4, 3):  # seen: the seccompProfile field left unapplied,
            assert "  NO  uts " in report and "sethostname" in report  # the default refuses
    finally:
        podman("kube", "down", str(manifest), user=rootless, check=False)
    assert podman("pod", "ps", "--quiet", user=rootless).stdout.strip() == ""


def equivalent_flags(pod: dict) -> list[str]:
    """`podman run` flags for the manifest's fields (which podman 4.3's kube play ignores or,
    for resources, cannot set rootless on cgroup v1)."""
    spec = pod["spec"]
    notebook = spec["containers"][0]
    context = notebook["securityContext"]
    flags = [f"--user={context['runAsUser']}"]
    if spec["hostUsers"] is False:
        flags += OWN_USERNS
    if context["procMount"] == "Unmasked":
        flags += ["--security-opt", "unmask=ALL"]
    profile = spec["securityContext"]["seccompProfile"]
    assert profile == {"type": "Localhost", "localhostProfile": PROFILE.name}
    flags += ["--security-opt", f"seccomp={PROFILE}"]
    if context["appArmorProfile"]["type"] == "Unconfined":
        flags += ["--security-opt", "apparmor=unconfined"]
    if context["allowPrivilegeEscalation"] is False:
        flags += ["--security-opt", "no-new-privileges"]
    limits = notebook["resources"]["limits"]
    return [*flags, f"--memory={kubernetes_bytes(limits['memory'])}", f"--cpus={limits['cpu']}"]


def kubernetes_bytes(quantity: str) -> int:
    """A Kubernetes quantity ("4G" is 10**9 bytes there, "4Gi" 2**30); podman's "4G" is 2**30."""
    for suffix, factor in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("K", 10**3),
                           ("M", 10**6), ("G", 10**9)):
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def test_the_singleuser_pod_by_its_flags_runs_isolated_python_through_its_server(image):
    """The manifest's fields as podman's flags, its args as the server's: Isolated Python
    starts through the provisioner with the server's caps, over REST and a websocket."""
    import yaml

    pod = yaml.safe_load(MANIFEST.read_text())
    token = os.urandom(12).hex()
    server = ["jupyter", "server", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=8888",
              f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
              *pod["spec"]["containers"][0]["args"][1:]]
    with container(image, *equivalent_flags(pod)) as name:
        podman("exec", "--detach", name, *server)
        cells = server_cells(name, token)
        inspected = podman("inspect", name, "--format",
                           "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}").stdout.split()
    assert inspected == ["4000000000", "2000000000"]
    assert cells["hostname"]["result"] == "'isolated'", cells
    # The server's caps (the pod's args) are what the provisioner gave the kernel.
    assert "memory  2 GiB" in cells["nsinfo"]["result"], cells["nsinfo"]
    assert "pids    512" in cells["nsinfo"]["result"], cells["nsinfo"]
    assert cells["readonly"]["result"] == "'EROFS'", cells
    assert_nothing_left_on_the_host()


def shlex_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"

