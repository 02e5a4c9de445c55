"""What differs between the Python versions nskernel supports (3.10 to 3.13; `.ci/python-matrix`
runs this file, the unit tests and a kernel/magics/lab subset on each).

- 3.12 added ``os.unshare`` and ``os.setns``; before, nskernel reaches glibc through ctypes.
  Both ways must behave alike, messages included.
- 3.12 warns (DeprecationWarning) at every ``os.fork()`` from a process with threads, which
  a kernel always is. nskernel forks by design; its own forks must not warn (a notebook that
  shows every warning would get one under each ``%%isolate`` cell, and so would a test run
  of a user's code that calls ``nskernel.isolate``), while a user's own ``os.fork()`` keeps
  its warning. (Made an error, the warning is swallowed: os.fork has forked already.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from kernels import execute

FORKS_WARN = sys.version_info >= (3, 12)


def run_python(code: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *options, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)


#: A process with a second thread, as a kernel has.
THREADED = """
    import os, sys, threading
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
"""


def test_isolate_from_a_threaded_process_does_not_warn():
    done = run_python(THREADED + """
    import nskernel
    print(nskernel.isolate(lambda: 6 * 7, user=True))
    print(nskernel.isolate(lambda: os.getpid(), user=True, pid=True))
    """, "-W", "always::DeprecationWarning")
    assert done.returncode == 0 and done.stdout.split() == ["42", "1"], done.stderr
    assert done.stderr == ""


def test_a_users_own_fork_still_warns_on_3_12_and_later():
    """Only nskernel's forks are silenced (the check above would pass trivially if nothing
    ever warned: this one shows that the interpreter does, where it should)."""
    done = run_python(THREADED + """
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    """, "-W", "always::DeprecationWarning")
    assert done.returncode == 0
    assert ("is multi-threaded, use of fork()" in done.stderr) == FORKS_WARN, done.stderr


def test_cells_in_a_kernel_that_shows_every_warning(start_kernel):
    _manager, client = start_kernel("isolated-python")
    assert execute(client, "import warnings; warnings.simplefilter('always')").status == "ok"
    done = execute(client, "%%isolate\nprint('inside', __import__('os').getpid())")
    assert done.status == "ok" and done.stdout.split() == ["inside", "1"], done
    assert done.stderr == ""
    done = execute(client, "import nskernel; nskernel.isolate(lambda: 6 * 7)")
    assert done.status == "ok" and done.value == 42 and done.stderr == "", done


#: unshare, setns and their failures, printed; run with and without os.unshare/os.setns.
SYSCALLS = """
    import os, sys
    if sys.argv[1] == "ctypes":
        for name in ("unshare", "setns"):
            if hasattr(os, name):
                delattr(os, name)
    from nskernel import _syscalls
    pid = os.fork()
    if pid == 0:
        try:
            before = os.readlink("/proc/self/ns/uts")
            home = os.open("/proc/self/ns/uts", os.O_RDONLY)
            _syscalls.unshare(_syscalls.CLONE_NEWUSER | _syscalls.CLONE_NEWUTS)
            print("own uts:", before != os.readlink("/proc/self/ns/uts"))
            try:
                _syscalls.setns(home, _syscalls.CLONE_NEWNET, "uts as net")
            except _syscalls.NamespaceError as exc:
                print("setns:", exc)
            try:
                _syscalls.unshare(0x1)  # not a namespace flag
            except _syscalls.NamespaceError as exc:
                print("unshare:", exc.step, exc.reason)
        except BaseException as exc:
            print("failed:", repr(exc))
        finally:
            sys.stdout.flush()
            os._exit(0)
    os.waitpid(pid, 0)
"""


def test_os_and_ctypes_syscalls_agree():
    """On 3.12+ the first run uses os.unshare/os.setns and the second glibc through ctypes
    (the only way on 3.10/3.11): the same namespaces, the same one-line errors."""
    runs = [run_python(SYSCALLS.replace("sys.argv[1]", repr(way))) for way in ("os", "ctypes")]
    for done in runs:
        assert done.returncode == 0 and "own uts: True" in done.stdout, done.stderr
        assert "setns: setns(uts as net): Invalid argument" in done.stdout, done.stdout
    assert runs[0].stdout == runs[1].stdout
