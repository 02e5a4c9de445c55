"""%%isolate --readonly: the host's files read-only inside, fresh scratch space, binds.

In both kernels; as root and (in CI's second run) as an ordinary user.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import RUN_PREFIX
from kernels import execute
from test_magics import cell, one_line_error

WRITE = ("import errno, os\n"
         "def write(path):\n"
         "    try:\n"
         "        with open(path, 'w') as handle:\n"
         "            handle.write('x')\n"
         "        return 'ok'\n"
         "    except OSError as exc:\n"
         "        return errno.errorcode[exc.errno]\n")


@pytest.fixture
def shared_dirs():
    """A read-only and a writable directory in /tmp, where any kernel (even a root one,
    which is nobody on the host) may reach them."""
    made = [Path(f"/tmp/{RUN_PREFIX}-{name}") for name in ("ro", "rw")]
    try:
        for path in made:
            path.mkdir()
            path.chmod(0o777)
        (made[0] / "given").write_text("from the host")
        yield made
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("flags", ["--readonly --pid", "--readonly --user --pid --net",
                                   "--readonly --uts"])
def test_host_files_are_read_only_and_scratch_space_is_fresh(kernel, flags):
    marker = Path(f"/tmp/{RUN_PREFIX}-host-marker")
    marker.write_text("host")
    try:
        done = cell(kernel, f"%%isolate {flags}\n{WRITE}"
                            "home = os.path.expanduser('~/file')\n"
                            "([write(p) for p in ('/etc/nskernel-x', '/usr/nskernel-x', '/x')],"
                            " [write(p) for p in ('/tmp/x', '/var/tmp/x', '/dev/shm/x', home,"
                            " '/dev/null')], sorted(os.listdir('/tmp')))")
        refused, allowed, tmp = done.value
        assert refused == ["EROFS"] * 3, done
        assert allowed == ["ok"] * 5, done
        # A fresh /tmp: the host's marker is not in it (Python's own directories, where
        # they lie under /tmp, are bound back read-only).
        assert "x" in tmp and marker.name not in tmp
        assert not Path("/tmp/x").exists() and not Path("/etc/nskernel-x").exists()
    finally:
        marker.unlink()


def test_bind_shows_a_host_directory_read_only_or_writable(kernel, shared_dirs):
    ro, rw = shared_dirs
    done = cell(kernel, f"%%isolate --readonly --pid --bind {ro} --bind {rw}:rw\n{WRITE}"
                        f"(open('{ro}/given').read(), write('{ro}/new'), write('{rw}/new'))")
    assert done.value == ("from the host", "EROFS", "ok"), done
    assert (rw / "new").read_text() == "x" and not (ro / "new").exists()


def test_a_full_scratch_tmpfs_says_no_space(kernel):
    done = cell(kernel, "%%isolate --readonly --tmpfs-size 1m --mount\nimport errno\n"
                        "try:\n    open('/tmp/big', 'wb').write(b'x' * 2_000_000)\n"
                        "except OSError as exc:\n    result = errno.errorcode[exc.errno]\n"
                        "result")
    assert done.value == "ENOSPC"


@pytest.mark.parametrize(("line", "message"), [
    ("--readonly --bind relative/dir", "bind 'relative/dir': give an absolute path"),
    ("--bind /tmp", "--bind shows a directory in a read-only view: add --readonly"),
    ("--readonly --tmpfs-size lots", "bad size 'lots': give a number with k, m or g"),
    ("--readonly --bind /nonexistent-nskernel", "bind /nonexistent-nskernel: No such file"),
])
def test_bad_readonly_input_is_one_line(kernel, line, message):
    done = execute(kernel, f"%%isolate {line}\n1")
    assert message in one_line_error(done), done
    assert execute(kernel, "1 + 1", timeout=5).value == 2


def test_the_api_takes_the_same_settings(kernel):
    done = cell(kernel, "import nskernel, os\n"
                        "nskernel.isolate(lambda: os.statvfs('/usr').f_flag & os.ST_RDONLY,"
                        " mount=True, readonly=True)")
    assert done.value == os.ST_RDONLY


@pytest.mark.parametrize("flags", ["--readonly --mount", "--readonly --pid --net"])
def test_a_cell_cannot_make_the_host_writable_again(kernel, flags):
    """Remounting read-write or unmounting the scratch tmpfs would reach the host's files;
    the read-only view is made before the cell's own user namespace, so both are refused
    (even in a stock kernel run by root)."""
    marker = f"{RUN_PREFIX}-escaped"
    done = execute(kernel, f"%%isolate {flags} --sh\n"
                           "mount -o remount,rw,bind / 2>/dev/null && echo remounted\n"
                           "umount /tmp 2>/dev/null && echo unmounted\n"
                           f"touch /{marker} /tmp/{marker} 2>/dev/null; echo done")
    assert done.stdout.split() == ["done"], done
    assert not Path(f"/{marker}").exists() and not Path(f"/tmp/{marker}").exists()


def test_python_can_still_import_what_the_kernel_can(kernel):
    """A virtual environment in the home directory or /tmp would be hidden by the scratch
    tmpfs: Python's own directories are bound back, read-only."""
    done = cell(kernel, "%%isolate --readonly --pid\nimport sys, importlib\n"
                        "sys.modules.pop('nskernel.display', None)\n"
                        "importlib.import_module('nskernel.display').__name__")
    assert done.value == "nskernel.display"
