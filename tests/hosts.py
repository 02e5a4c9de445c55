"""A cluster of two hosts on this machine, for the many-hosts test and benchmark.

Each host is a network namespace of its own with its own address on a bridge made here
(10.77.N.2 and 10.77.N.3; the bridge, in our namespace, is 10.77.N.1, where the Jupyter side
takes the launchers' connection info) and a real sshd (Debian's openssh-server) in it, with
keys made here. The machine's files are shared by all, as a cluster's home directories are:
the same Python and nskernel on every host. The Jupyter side is gateway-provisioners'
DistributedProvisioner, which reaches the hosts over ssh with paramiko, as it does anywhere:
its ~/.ssh is the cluster's (HOME points there while the cluster lives).

Everything is named with the test run's prefix (conftest.RUN_PREFIX) and removed by
:func:`cluster`'s ``finally``; every session sshd starts carries the run's mark
(``SetEnv``), so the suite's leak check sees what the hosts run, too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # sshd's own: it refuses to start without it


@dataclasses.dataclass
class Host:
    netns: str
    address: str
    link: str  # the bridge's end of the host's veth: down cuts the host off
    sshd: subprocess.Popen | None = None

    def processes(self) -> set[int]:
        """Every process in this host's network namespace (its sshd included)."""
        inode = os.stat(f"/run/netns/{self.netns}").st_ino
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                        found.add(int(entry))
        return found

    def kill_everything(self) -> None:
        """SIGKILL every process of the host, its sshd first."""
        for _ in range(20):
            left = self.processes()
            if not left:
                return
            for pid in sorted(left, key=lambda pid: pid != (self.sshd and self.sshd.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if self.sshd is not None and self.sshd.poll() is None:
                self.sshd.wait(5)
            time.sleep(0.05)
        raise AssertionError(f"{self.netns}: processes left after SIGKILL: {self.processes()}")


@dataclasses.dataclass
class Cluster:
    hosts: list[Host]
    bridge: str
    bridge_address: str
    home: Path  # HOME of the Jupyter side: .ssh/id_ed25519 and known_hosts
    logs: Path  # where the provisioner has each host write kernel-ID.log
    kernels_dir: Path | None = None  # the kernelspecs the Jupyter side finds


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


def _free_subnet() -> int:
    """An N for 10.77.N.0/24 that no address or route here uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                          check=True).stdout
    used += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True,
                           check=True).stdout
    candidates = [n for n in range(256) if f"10.77.{n}." not in used]
    return random.choice(candidates)


def _ssh_keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nskernel-test",
                    "-f", str(path)], check=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


def _wait_for_listener(pid: int, port: int, timeout: float = 20) -> None:
    """Until ``pid`` listens on TCP ``port`` (read in its /proc/PID/net/tcp: a connection
    to see would be one more line in sshd's log)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
                local, _remote, state = line.split()[1:4]
                if int(local.split(":")[1], 16) == port and state == "0A":  # LISTEN
                    return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on port {port} in process {pid}")
        time.sleep(0.02)


@contextlib.contextmanager
def cluster(prefix: str, run_mark: str, count: int = 2) -> Iterator[Cluster]:
    """Bring up ``count`` hosts; take everything down again, however the body ends."""
    subnet = _free_subnet()
    keys = Path(tempfile.mkdtemp(prefix="nskernel-hosts-"))
    made_privsep = False
    hosts = [Host(f"{prefix}h{i}", f"10.77.{subnet}.{i + 2}", f"{prefix}h{i}")
             for i in range(count)]
    made: list[Host] = []
    bridge = f"{prefix}br"
    old_home = os.environ.get("HOME")
    try:
        home, logs = keys / "home", keys / "logs"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        logs.mkdir()
        client_key = _ssh_keygen(home / ".ssh" / "id_ed25519")
        host_key = _ssh_keygen(keys / "host_key")
        (keys / "authorized_keys").write_text(client_key + "\n")
        # sshd reads authorized keys as the user who logs in: another user may log in too.
        keys.chmod(0o711)
        logs.chmod(0o1777)  # as /tmp, where the provisioner has them by default
        (keys / "authorized_keys").chmod(0o644)
        (home / ".ssh" / "known_hosts").write_text(
            "".join(f"{host.address} {host_key.rsplit(' ', 1)[0]}\n" for host in hosts))
        if not PRIVSEP_DIR.exists():
            PRIVSEP_DIR.mkdir(mode=0o755)
            made_privsep = True
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"10.77.{subnet}.1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for host in hosts:
            ip("netns", "add", host.netns)
            made.append(host)
            ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0",
               "netns", host.netns)
            ip("link", "set", host.link, "master", bridge, "up")
            ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", host.netns, "link", "set", "eth0", "up")
            ip("-n", host.netns, "link", "set", "lo", "up")
            start_sshd(host, keys, run_mark)
        os.environ["HOME"] = str(home)  # paramiko's keys and known_hosts
        yield Cluster(hosts, bridge, f"10.77.{subnet}.1", home, logs)
    finally:
        if old_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old_home
        for host in made:
            host.kill_everything()
            # The veth first, by name: a namespace's links go when the kernel gets round to
            # destroying it, after `ip netns del` has returned.
            for argv in (("link", "del", host.link), ("netns", "del", host.netns)):
                with contextlib.suppress(subprocess.CalledProcessError):
                    ip(*argv)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", bridge)
        shutil.rmtree(keys, ignore_errors=True)
        if made_privsep:
            with contextlib.suppress(OSError):
                PRIVSEP_DIR.rmdir()


def start_sshd(host: Host, keys: Path, run_mark: str) -> None:
    """The host's sshd: our host key and authorized keys (in ``keys``, not ~/.ssh: the
    machine's files are shared, and the real ones are not the test's), listening on the
    host's address alone."""
    config = keys / f"sshd_config.{host.netns}"
    config.write_text(f"""\
ListenAddress {host.address}:22
HostKey {keys / 'host_key'}
AuthorizedKeysFile {keys / 'authorized_keys'}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PidFile none
SetEnv {run_mark}
LogLevel ERROR
""")
    host.sshd = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, SSHD, "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _wait_for_listener(host.sshd.pid, 22)
