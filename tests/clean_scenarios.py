"""`nskernel clean` against what could fool it, for real; prints what happened as JSON.

    python clean_scenarios.py PREFIX

Run by tests/test_walls_clean_identity.py on the host (as root) and inside Isolated Python
kernels (root and rootless, where the kernel's /run is its own). Each scenario cleans up
what it made, whatever happens:

- recycled: a lab (in a process of its own) makes a namespace and is killed; the namespace
  is removed by hand and `ip netns add` makes one of the same name, until it has the dead
  lab's inode (namespace inodes are reused, lowest free first): clean must leave it. Where
  another process took that inode meanwhile and holds it (seen once, on a busy machine),
  the record is given the new namespace's inode instead, as recycling would have.
- path: a record whose owner is dead names ``../netns/NAME`` (a real namespace of ours, its
  cookie recorded right): clean must refuse the record and touch nothing.
- zombie: a lab's process is killed and not reaped: clean must see it dead and remove its
  namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nskernel.netlab import records
from nskernel.netlab.netns import netns_inode
from nskernel.owners import owner_id

LAB_CHILD = ("import sys, time\nfrom nskernel.netlab.net import Lab\nlab = Lab()\n"
             "lab.add(sys.argv[1])\n"
             "print('ready', flush=True)\ntime.sleep(600)\n")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def lab_process(name: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", LAB_CHILD, name], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def clean() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nskernel", "clean"], capture_output=True,
                          text=True, timeout=60)


def recycled(name: str) -> dict:
    child = lab_process(name)
    try:
        inode = netns_inode(name)
        record = Path(records.RECORDS_DIR) / f"{owner_id(child.pid)}.json"
        child.kill()
        child.wait()
        ip("netns", "del", name)
        tries, held = 0, []
        try:
            # The lowest free inode goes first: where that is not the dead lab's (others'
            # namespaces came and went meanwhile), keep the one made alive by an open fd
            # (its inode stays taken), and make another, until the lab's inode comes back.
            while True:
                tries += 1
                ip("netns", "add", name)
                if netns_inode(name) == inode or tries == 100:
                    break
                held.append(os.open(os.path.join("/run/netns", name), os.O_RDONLY))
                ip("netns", "del", name)
                time.sleep(0.005)  # a namespace is freed a moment after its last user
        finally:
            for fd in held:
                os.close(fd)
        real = netns_inode(name) == inode
        if not real:
            # Another process took the inode and holds it (machines are busy): write down
            # what the recycling would have made, the new namespace's inode in the record.
            text = json.loads(record.read_text())
            text["netns"][name]["inode"] = inode = netns_inode(name)
            record.write_text(json.dumps(text))
        done = clean()
        return {"recycled for real": real, "tries": tries,
                "still there": netns_inode(name) == inode, "stdout": done.stdout,
                "stderr": done.stderr}
    finally:
        child.kill()
        child.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "del", name)


def path(name: str) -> dict:
    from nskernel.netlab.netns import NETNS_DIR, _identity

    sleeper = subprocess.Popen(["sleep", "600"])
    dead = owner_id(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    record = Path(records.RECORDS_DIR) / f"{name}.json"
    ip("netns", "add", name)
    try:
        fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        try:
            made = _identity(fd, name)
        finally:
            os.close(fd)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({
            "owner": dead, "links": {}, "kernel_netns": os.stat("/proc/self/ns/net").st_ino,
            "netns": {f"../netns/{name}": {"cookie": made.cookie, "inode": made.inode}}}))
        done = clean()
        return {"still there": netns_inode(name) == made.inode,
                "record kept": record.exists(), "stdout": done.stdout, "stderr": done.stderr}
    finally:
        record.unlink(missing_ok=True)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "del", name)


def zombie(name: str) -> dict:
    child = lab_process(name)
    try:
        child.send_signal(signal.SIGKILL)  # and no wait(): its parent (we) lives on
        deadline = time.monotonic() + 10
        while state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        was = state(child.pid)
        done = clean()
        return {"state": was, "gone": netns_inode(name) is None, "stdout": done.stdout,
                "stderr": done.stderr}
    finally:
        child.kill()
        child.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "del", name)


def main(prefix: str) -> None:
    print(json.dumps({"recycled": recycled(f"{prefix}rc"), "path": path(f"{prefix}pt"),
                      "zombie": zombie(f"{prefix}zb")}))


if __name__ == "__main__":
    main(sys.argv[1])
