"""The unprivileged path: an ordinary user runs the kernel through a user namespace.

As root these tests run as a user made for the run; as anybody else, as the caller.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from conftest import as_user, free_ports

PROBE = str(Path(__file__).with_name("kernel_probe.py"))


def probe(user, *codes: str, **machine: bool) -> list[dict]:
    """Run cells in a fresh Isolated Python kernel as ``user``; ``machine``: see as_user."""
    done = as_user(user, [sys.executable, PROBE, "isolated-python", *codes], **machine)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])["results"]


def test_kernel_runs_as_root_inside_a_user_namespace(unprivileged_user, shared_dir):
    marker = shared_dir / "rootless"
    try:
        results = probe(
            unprivileged_user,
            "import os, socket; (os.getuid(), os.getpid(), socket.gethostname(), "
            "sorted(os.listdir('/sys/class/net')))",
            "open('/proc/self/uid_map').read().split()",
            "sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[:2]",
            f"open({str(marker)!r}, 'w').write('made by root inside')",
        )
        assert ast.literal_eval(results[0]["result"]) == (0, 2, "isolated", ["lo"])
        # Root of a user namespace nested in the launcher's, whose root is the user (the
        # marker's owner below shows whom it stands for on the host).
        assert ast.literal_eval(results[1]["result"]) == ["0", "0", "1"]
        assert ast.literal_eval(results[2]["result"]) == [1, 2]
        assert marker.stat().st_uid == unprivileged_user.pw_uid  # nobody special outside
    finally:
        marker.unlink(missing_ok=True)


def test_doctor_as_a_user_reports_namespaces_through_a_user_namespace(unprivileged_user):
    done = as_user(unprivileged_user, [sys.executable, "-m", "nskernel", "doctor"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"as uid {unprivileged_user.pw_uid} (not root" in done.stdout
    assert "ok  net    ok (inside a user namespace)" in done.stdout
    cpus = [line for line in done.stdout.splitlines() if line.split()[1:2] == ["cpus"]]
    assert cpus[0].startswith(("  ok  cpus    whole cell: cgroup v",
                               "  NO  cpus    cannot be enforced: ")), cpus


def test_without_user_namespaces_the_kernel_says_why_in_one_line(unprivileged_user):
    channels = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    directory = Path(tempfile.mkdtemp(prefix="nskernel-conn-"))
    directory.chmod(0o755)
    connection = directory / "connection.json"
    connection.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1",
                                      **dict(zip(channels, free_ports(5), strict=True))}))
    connection.chmod(0o644)
    try:
        done = as_user(unprivileged_user, [sys.executable, "-m", "nskernel.launch", "--pid",
                                           "--net", "-f", str(connection)],
                       user_namespaces=False)
    finally:
        shutil.rmtree(directory)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("nskernel: cannot start the kernel: unshare(user,")
    assert "user namespaces are disabled" in lines[0]
    assert "sysctl -w user.max_user_namespaces=15000" in lines[0]


def test_doctor_without_user_namespaces_names_the_fix(unprivileged_user):
    done = as_user(unprivileged_user, [sys.executable, "-m", "nskernel", "doctor"],
                   user_namespaces=False)
    assert done.returncode == 1
    assert "NO  net" in done.stdout and "sysctl -w user.max_user_namespaces" in done.stdout
    assert "cannot start here" in done.stdout


def run_ipython_as(user, script: str, **kwargs) -> object:
    """Run a one-cell .ipy script in terminal IPython as ``user``, with the extension loaded
    from the command line (the magics outside any kernel)."""
    directory = Path(tempfile.mkdtemp(prefix="nskernel-ipy-"))
    directory.chmod(0o755)
    path = directory / "cells.ipy"
    path.write_text(script)
    path.chmod(0o644)
    try:
        return as_user(user, [sys.executable, "-m", "IPython", "--no-banner", "--colors=nocolor",
                              "--ext=nskernel", str(path)], **kwargs)
    finally:
        shutil.rmtree(directory)


def test_magics_as_a_user_work_through_a_user_namespace(unprivileged_user):
    done = run_ipython_as(unprivileged_user, "%%isolate --pid --net --uts --hostname rootless\n"
                          "import os, socket\n"
                          "print(os.getpid(), os.getuid(), socket.gethostname(),"
                          " [n for _, n in socket.if_nameindex()])\n")
    assert done.returncode == 0, done.stderr
    assert "1 0 rootless ['lo']" in done.stdout


def test_magics_without_user_namespaces_say_why_in_one_line(unprivileged_user):
    done = run_ipython_as(unprivileged_user, "%%isolate --net\nprint(1)\n",
                          user_namespaces=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if "UsageError" in line]
    assert len(errors) == 1, lines
    assert errors[0].startswith("UsageError: isolated cell: unshare(user,")
    assert "user namespaces are disabled" in errors[0]
    assert "Traceback" not in done.stdout + done.stderr


LAB_CELLS = ("%netns add ua ub", "%veth ua:10.11.0.1/24 ub:10.11.0.2/24",
             "%ping ua 10.11.0.2 -c 1")


def test_network_lab_as_a_user_inside_isolated_python(unprivileged_user):
    results = probe(unprivileged_user, *LAB_CELLS)
    assert [r["status"] for r in results] == ["ok", "ok", "ok"], results
    assert results[2]["result"] == "1/1 replies from 10.11.0.2"
    assert not os.path.exists("/run/netns/ua")  # private to the user's kernel


def test_network_lab_as_a_user_where_run_has_no_netns_directory(unprivileged_user):
    """A machine where nobody ever ran `ip netns add`: the kernel gets a /run of its own,
    with the host's entries bound back and the lab's directories in it."""
    results = probe(unprivileged_user, *LAB_CELLS,
                    "import os; (sorted(os.listdir('/run')), open('/run/lock/probe').read(), "
                    "os.readlink('/run/shm'))", run_netns=False)
    assert [r["status"] for r in results] == ["ok"] * 4, results
    assert "1/1 replies from 10.11.0.2" in results[2]["result"]
    assert ast.literal_eval(results[3]["result"]) == (
        ["lock", "netns", "nskernel", "shm", "utmp"], "kept", "/dev/shm")


def test_every_magic_as_a_user_inside_isolated_python(unprivileged_user, shared_dir):
    """Nested user namespaces: the cell's root is mapped as the kernel is (to the user)."""
    marker = shared_dir / "nested"
    try:
        results = probe(
            unprivileged_user,
            "%%isolate --all --hostname every\nimport os, socket\n"
            "(os.getpid(), os.getuid(), socket.gethostname(), "
            "[n for _, n in socket.if_nameindex()])",
            f"%%isolate --user --mount\nopen({str(marker)!r}, 'w').close()\n"
            "open('/proc/self/uid_map').read().split()",
            "%%uts inner\nimport socket; socket.gethostname()",
            "%%isolate --pid --sh\necho $$",
            "import os, nskernel; nskernel.isolate(os.getuid, user=True, net=True)",
        )
        assert [r["status"] for r in results] == ["ok"] * 5, results
        assert ast.literal_eval(results[0]["result"]) == (1, 0, "every", ["lo"])
        assert ast.literal_eval(results[1]["result"]) == ["0", "0", "1"]  # the kernel's root
        assert marker.stat().st_uid == unprivileged_user.pw_uid  # ...who is the user outside
        assert ast.literal_eval(results[2]["result"]) == "inner"
        assert results[3]["stdout"].strip() == "1"
        assert ast.literal_eval(results[4]["result"]) == 0
    finally:
        marker.unlink(missing_ok=True)


def test_network_lab_as_a_user_without_privileges_says_so(unprivileged_user):
    done = run_ipython_as(unprivileged_user, "%netns add nopriv\n")
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "UsageError" in line]
    assert len(errors) == 1, done.stdout + done.stderr
    assert errors[0].startswith("UsageError: %netns: ")
    assert "Permission denied" in errors[0] or "Operation not permitted" in errors[0]
    assert not os.path.exists("/run/netns/nopriv")


def test_a_map_that_cannot_be_written_names_the_file_and_the_fix(unprivileged_user):
    """In a rootless kernel only the user's id is mapped: asking for nobody must say so."""
    results = probe(unprivileged_user,
                    "import nskernel, os\n"
                    "try:\n    nskernel.isolate(os.getuid, user=True, net=True,"
                    " map_root_to=65534)\n"
                    "except RuntimeError as exc:\n    print(exc)")
    message = results[0]["stdout"].strip()
    assert re.fullmatch(r"write /proc/\d+/uid_map \('0 65534 1'\): .+ \(uid 65534 must be "
                        r"mapped in the writer's own user namespace \(see /proc/self/uid_map\); "
                        r"map root to your own uid instead\)", message), message

