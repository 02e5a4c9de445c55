"""``nskernel install`` and the reference kernelspec in the repository's kernelspec/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def nskernel(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nskernel", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_default_install_equals_the_reference_kernelspec(tmp_path):
    done = nskernel("install", "--prefix", str(tmp_path))
    assert done.returncode == 0, done.stderr
    installed = tmp_path / "share/jupyter/kernels/isolated-python"
    reference = REPO / "kernelspec"
    assert sorted(p.name for p in installed.iterdir()) == \
        sorted(p.name for p in reference.iterdir())
    spec = json.loads((installed / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    spec["argv"][0] = "python"
    assert spec == json.loads((reference / "kernel.json").read_text())
    for logo in reference.glob("logo-*"):
        assert (installed / logo.name).read_bytes() == logo.read_bytes()
    assert spec["display_name"] == "Isolated Python" and spec["interrupt_mode"] == "signal"
    assert spec["argv"][-5:] == ["--ipc", "--hostname", "isolated", "-f", "{connection_file}"]


def test_jupyter_kernelspec_list_shows_it(tmp_path):
    done = nskernel("install", "--prefix", str(tmp_path), "--name", "lab-net",
                    "--display-name", "Net only", "--net")
    assert done.returncode == 0, done.stderr
    env = dict(os.environ, JUPYTER_PATH=str(tmp_path / "share/jupyter"))
    listed = subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
                            capture_output=True, text=True, env=env, check=True)
    spec = json.loads(listed.stdout)["kernelspecs"]["lab-net"]["spec"]
    assert spec["display_name"] == "Net only"
    assert spec["argv"][4:] == ["--net", "--mount", "-f", "{connection_file}"]  # net brings /sys


def test_chosen_namespaces_and_hostname_reach_argv(tmp_path):
    done = nskernel("install", "--prefix", str(tmp_path), "--no-ipc", "--no-net",
                    "--hostname", "box")
    assert done.returncode == 0, done.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/isolated-python/kernel.json")
                      .read_text())
    assert spec["argv"][4:] == ["--pid", "--mount", "--uts", "--hostname", "box",
                                "-f", "{connection_file}"]


@pytest.mark.parametrize(("args", "message"), [
    (["--no-pid", "--no-net", "--no-mount", "--no-uts", "--no-ipc"], "no namespace chosen"),
    (["--name", "bad name!"], "bad kernel name 'bad name!'"),
    (["--user-ns"], "unrecognized arguments: --user-ns"),
    (["--hostname", "no_underscores"], "bad hostname 'no_underscores'"),
    (["--user"], "argument --user: not allowed with argument --prefix"),
    (["--pdi"], "unrecognized arguments: --pdi"),
])
def test_bad_install_input_is_refused_with_one_line(tmp_path, args, message):
    done = nskernel("install", "--prefix", str(tmp_path), *args)
    assert done.returncode == 2
    assert message in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in done.stderr
    assert not (tmp_path / "share").exists()


def test_launcher_rejects_a_missing_connection_file(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nskernel.launch", "--net", "-f",
                           str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("nskernel: cannot start the kernel: cannot read connection")
    assert len(done.stderr.strip().splitlines()) == 1


def test_launcher_reports_a_port_in_use(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        ports = {name: port for name in
                 ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")}
        connection = tmp_path / "kernel.json"
        connection.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1", **ports}))
        done = subprocess.run([sys.executable, "-m", "nskernel.launch", "--net", "-f",
                               str(connection)], capture_output=True, text=True)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_doctor_as_root_says_everything_works():
    done = nskernel("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("user", "pid", "net", "mount", "uts", "ipc", "init"):
        assert any(line.split()[:2] == ["ok", name] for line in done.stdout.splitlines())
    assert "dumb-init" in done.stdout
    assert "The Isolated Python kernel can start here." in done.stdout
    # Which limits hold for a whole cell here: what the cells' own cgroup plan says.
    from nskernel.locks import cgroups

    places = cgroups.plan().places
    section = done.stdout.split("for this user here:\n")[1].split("\nThe container")[0]
    lines = {line.split()[1]: line.split()[0] for line in section.splitlines()}
    assert lines == {"memory": "ok" if "memory" in places else "NO",
                     "pids": "ok",  # the rlimit, in the cell's own user namespace
                     "cpus": "ok" if "cpu" in places else "NO",
                     "stats": "ok" if "cpuacct" in places else "NO", "seccomp": "ok"}, done.stdout


def test_our_packaging_builds_without_banners(tmp_path):
    """pip install shows whatever setuptools warns about our pyproject.toml, and the banner
    of an editable install done with an import hook (`make lab`, `make test`): none of it."""
    repository = Path(__file__).resolve().parent.parent
    made = not (repository / "nskernel.egg-info").exists()
    for step in ("prepare_metadata_for_build_wheel", "build_editable"):
        (tmp_path / step).mkdir()
        done = subprocess.run(
            [sys.executable, "-c", f"import sys; from setuptools import build_meta; "
             f"build_meta.{step}(sys.argv[1])", str(tmp_path / step)],
            cwd=repository, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Deprecat" not in done.stderr and "!!" not in done.stderr, done.stderr
    assert list((tmp_path / "build_editable").glob("nskernel-*.whl"))
    if made:  # the build's scratch, next to the sources
        shutil.rmtree(repository / "nskernel.egg-info", ignore_errors=True)
