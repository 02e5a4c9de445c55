"""Python and the notebook work wherever they live: a virtual environment in the home
directory that is also the notebook's directory (a ``--readonly`` kernel makes the home a
fresh tmpfs), and one under /tmp (which the kernel and each jailed cell get fresh).

Each venv is made for the test with ``venv`` (symlinks to this interpreter's base); a .pth
file in it adds this checkout's site-packages, so nskernel, ipykernel and dumb-init come from
here while ``sys.prefix`` and ``sys.path`` point into the directory under test. Root and
rootless (the rootless kernel through a probe run as the test user).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import kernels
import pytest
from conftest import IS_ROOT, KERNELS_DIR, REPO, RUN_PREFIX, as_user

from nskernel.isolation import Isolation
from nskernel.kernel import kernelspec

PROBE = str(Path(__file__).with_name("kernel_probe.py"))
READONLY = dataclasses.replace(Isolation.kernel_default(), readonly=True)
#: What a cell reports: where Python lives, where the kernel runs, and whether it can write
#: to a fresh /tmp.
WHERE = ("import os, sys, tempfile\nwith tempfile.TemporaryFile() as scratch:\n"
         "    scratch.write(b'x')\n(sys.prefix, os.getcwd())")


def make_venv(base: Path, owner: int | None) -> Path:
    """A venv at ``base``/venv that imports nskernel and its dependencies from this
    checkout, with dumb-init beside its python (where the launcher looks first)."""
    builder = venv.EnvBuilder(symlinks=True, with_pip=False)
    builder.create(base / "venv")
    ours = sysconfig.get_paths()["purelib"]
    theirs = Path(sysconfig.get_paths(vars={"base": str(base / "venv"),
                                            "platbase": str(base / "venv")})["purelib"])
    (theirs / "checkout.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    (base / "venv" / "bin" / "dumb-init").symlink_to(Path(sys.prefix) / "bin" / "dumb-init")
    if owner is not None:
        for path in [base, *base.rglob("*")]:
            os.chown(path, owner, owner, follow_symlinks=False)
    return base / "venv"


@pytest.fixture
def spec_for() -> Iterator:
    """Factory: spec_for(venv, isolation) writes a kernelspec whose python is the venv's
    (removed after); returns its name."""
    written = []

    def write(environment: Path, isolation: Isolation) -> str:
        name = f"{RUN_PREFIX}-anywhere-{len(written)}"
        kernelspec.write_spec(KERNELS_DIR / name, isolation,
                              executable=str(environment / "bin" / "python"))
        written.append(KERNELS_DIR / name)
        return name

    yield write
    for path in written:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def home_dir() -> Iterator[Path]:
    """A home directory outside every scratch directory (/tmp, /var/tmp): beside the
    checkout, where the test user may reach (the rootless fixture opens the way)."""
    made = Path(tempfile.mkdtemp(dir=REPO, prefix=f".{RUN_PREFIX}-home-"))
    made.chmod(0o755)  # a root kernel is nobody on the host: the notebooks must be readable
    try:
        yield made
    finally:
        shutil.rmtree(made)


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(dir="/tmp", prefix=f"{RUN_PREFIX}-anywhere-"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made)


def run_cells(name: str, codes: list[str], cwd: Path, home: Path | None,
              user=None) -> list[dict]:
    """Run ``codes`` in a fresh kernel ``name`` started in ``cwd`` with HOME=``home`` (as
    now when None): by this process, or as ``user`` through the probe."""
    if user is None:
        env = {**os.environ, **({"HOME": str(home)} if home else {})}
        manager, client = kernels.start(name, cwd=str(cwd), env=env)
        try:
            return [dataclasses.asdict(kernels.execute(client, code)) for code in codes]
        finally:
            kernels.stop(manager, client)
    start = ("import os, runpy, sys\n"
             f"os.chdir({str(cwd)!r})\n"
             + (f"os.environ['HOME'] = {str(home)!r}\n" if home else "")
             + f"sys.path.insert(0, {str(Path(PROBE).parent)!r})\n"
             f"sys.argv = [{PROBE!r}, *{[name, *codes]!r}]\n"
             f"runpy.run_path({PROBE!r}, run_name='__main__')\n")
    done = as_user(user, [sys.executable, "-c", start])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])["results"]


WHO = ["root", "rootless"] if IS_ROOT else ["rootless"]


@pytest.mark.parametrize("as_whom", WHO)
def test_a_readonly_kernel_started_in_its_home_with_the_venv_below(
        as_whom, unprivileged_user, home_dir, spec_for):
    user = unprivileged_user if as_whom == "rootless" else None
    environment = make_venv(home_dir, user.pw_uid if user else None)
    (home_dir / "data.txt").write_text("beside the notebook")
    name = spec_for(environment, READONLY)
    cells = [WHERE, "open('data.txt').read()",
             "import errno\ntry:\n    open('new.txt', 'w')\nexcept OSError as e:\n"
             "    got = errno.errorcode[e.errno]\ngot",
             f"%%isolate --jail\n{WHERE}"]
    results = run_cells(name, cells, cwd=home_dir, home=home_dir, user=user)
    values = [r["result"] for r in results]
    assert [r["status"] for r in results] == ["ok"] * 4, results
    assert eval(values[0]) == (str(environment), str(home_dir))
    assert eval(values[1]) == "beside the notebook"
    assert eval(values[2]) == "EROFS"  # the notebook's directory, shown read-only
    assert eval(values[3]) == (str(environment), str(home_dir))


@pytest.mark.parametrize("as_whom", WHO)
@pytest.mark.parametrize("readonly", [False, True], ids=["default", "readonly"])
def test_a_kernel_started_in_tmp_with_the_venv_under_tmp(
        as_whom, readonly, unprivileged_user, tmp_dir, spec_for):
    user = unprivileged_user if as_whom == "rootless" else None
    environment = make_venv(tmp_dir, user.pw_uid if user else None)
    name = spec_for(environment, READONLY if readonly else Isolation.kernel_default())
    cells = [WHERE, f"%%isolate --jail\n{WHERE}", f"%%isolate --pid\n{WHERE}",
             f"%%isolate --readonly --user --pid --net\n{WHERE}"]
    results = run_cells(name, cells, cwd=Path("/tmp"), home=None, user=user)
    assert [(r["status"], r["error"]) for r in results] == [("ok", None)] * 4, results
    assert {eval(r["result"]) for r in results} == {(str(environment), "/tmp")}
