"""Fill the user's key quota with the keys of a process of ours, run an isolated cell while it
is full, and print as JSON what the cell got. Run as an unprivileged user: root's quota
(kernel.keys.root_maxkeys) is too large to fill.

    python key_quota_probe.py RELEASE_AFTER [WAIT]

The filler holds the quota until ``RELEASE_AFTER`` seconds after the cell started (or until
the cell is done, when that is negative); the cell waits at most ``WAIT`` seconds for it
(``sandbox.KEY_QUOTA_WAIT``, its own by default). Everything goes with the probe: the
filler's keys live in a session keyring of its own, freed when it exits.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import sys
import threading
import time

from nskernel.cell import runner, sandbox
from nskernel.cell.errors import IsolatedRunError
from nskernel.isolation import Isolation

#: (keyctl, add_key) system call numbers.
CALLS = {"x86_64": (250, 248), "aarch64": (219, 217)}[platform.machine()]
KEYCTL_JOIN_SESSION_KEYRING = 1
KEY_SPEC_SESSION_KEYRING = -3
#: How long the filler waits for the keys of processes that ended to be freed.
SETTLE = 5.0

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def fill_quota(ready_w: int, release_r: int) -> None:
    """In a forked child: add keys to a fresh session keyring until the quota says no and every
    key of the user's is ours (the kernel frees those of processes that ended in the
    background: they are taken as they go), or for at most SETTLE seconds; report how many
    were added and why the last add failed, then hold them until ``release_r`` closes."""
    if libc.syscall(CALLS[0], ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), None) < 0:
        os.write(ready_w, f"0 {errno.errorcode[ctypes.get_errno()]}".encode())
        os._exit(1)
    added, refused = 0, ""
    settle_until = time.monotonic() + SETTLE
    while True:
        while libc.syscall(CALLS[1], b"user", f"nskernel-test-{added}".encode(), b"x",
                           ctypes.c_size_t(1), ctypes.c_long(KEY_SPEC_SESSION_KEYRING)) >= 0:
            added += 1
        refused = errno.errorcode[ctypes.get_errno()]
        if users_keys() == added + 2 or time.monotonic() > settle_until:  # + both keyrings
            break
        time.sleep(0.01)
    os.write(ready_w, f"{added} {refused}".encode())
    os.read(release_r, 1)
    os._exit(0)


def users_keys() -> int:
    """How many keys the kernel counts for this user, the freed ones not yet gone included."""
    with open("/proc/key-users") as lines:
        for line in lines:
            uid, counts = line.split(":", 1)
            if int(uid) == os.getuid():
                return int(counts.split()[1].split("/")[0])
    return 0


def main(release_after: float, wait: float = sandbox.KEY_QUOTA_WAIT) -> dict:
    sandbox.KEY_QUOTA_WAIT = wait
    # A process with a session keyring (a kernel has one: Isolated Python's own, or its login
    # session's) is held to the quota when it makes another; one with none is let past it.
    if libc.syscall(CALLS[0], ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), None) < 0:
        raise OSError(ctypes.get_errno(), "join a session keyring")
    (ready_r, ready_w), (release_r, release_w) = os.pipe(), os.pipe()
    filler = os.fork()
    if filler == 0:
        os.close(ready_r)
        os.close(release_w)
        fill_quota(ready_w, release_r)
    os.close(ready_w)
    os.close(release_r)
    added, stopped_by = os.read(ready_r, 100).decode().split()

    def end_filler() -> None:  # reaped too: a zombie holds its keys until then
        os.close(release_w)
        os.waitpid(filler, 0)

    release = threading.Timer(release_after, end_filler)
    if release_after >= 0:
        release.start()
    report = {"keys_added": int(added), "filler_stopped_by": stopped_by}
    try:
        report["value"] = runner.run(Isolation(user=True, pid=True, net=True),
                                     lambda: "ran", on_stream=lambda *_: None)
    except IsolatedRunError as exc:
        report["error"] = str(exc)
    finally:
        if release_after >= 0:
            release.join()
        else:
            end_filler()
    return report


if __name__ == "__main__":
    print(json.dumps(main(*map(float, sys.argv[1:]))), flush=True)
