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
