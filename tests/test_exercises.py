"""Every checker of nskernel.exercises, against a wrong attempt, in a real Isolated Python kernel:
it must say ``not yet:`` and what is wrong, and return False. As root (the caller, when
root) and as an unprivileged user. (That each says ``correct`` to a right one is what
nbval checks in notebooks/solutions/.)

An attempt is a list of cells, the last of which calls the checker; cells after it (``then``)
clean up what the kernel would otherwise hold until it stops.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import kernels
from conftest import as_user

PROBE = str(Path(__file__).with_name("kernel_probe.py"))


@dataclass
class Attempt:
    checker: str
    cells: list[str]
    says: str  # a piece of the "not yet:" line
    then: list[str] = field(default_factory=list)


LAB02 = ("%netns add left middle right\n%veth left:10.0.1.1/24 middle:10.0.1.2/24\n"
         "%veth middle:10.0.2.1/24 right:10.0.2.2/24\n"
         "%route left default via 10.0.1.2\n%route right default via 10.0.2.1")
LAB07 = ("%netns add sw alice bob db web gw\n"
         "%bridge office alice:10.10.1.11/24 bob:10.10.1.12/24 gw:10.10.1.1/24 --in sw\n"
         "%bridge servers db:10.10.2.21/24 web:10.10.2.22/24 gw:10.10.2.1/24 --in sw\n"
         "%route alice default via 10.10.1.1\n%route db default via 10.10.2.1\n"
         "%route web default via 10.10.2.1\n%forward gw on")
LAB11 = ("%netns add host c1 c2 world\n"
         "%bridge br0:172.18.0.1/24 c1:172.18.0.2/24 c2:172.18.0.3/24 --in host\n"
         "%veth host:198.51.100.1/24 world:198.51.100.2/24\n"
         "%route c1 default via 172.18.0.1\n%route c2 default via 172.18.0.1\n%forward host on")
NAT11 = ("%%netns host --sh\nnft add table ip nat\n"
         "nft 'add chain ip nat postrouting { type nat hook postrouting priority srcnat; }'\n"
         "nft add rule ip nat postrouting ip saddr 172.18.0.0/24 oifname host-eth0 masquerade")
RESET = "%netns reset"

ATTEMPTS = [
    Attempt("pid1_view", ["import os\npid_and_parent = (os.getpid(), os.getppid())"],
            "what the kernel itself sees"),
    Attempt("sleeper_gone", ["!ps -e -o pid=,comm= > /tmp/ps-inside"],
            "PID 1 in /tmp/ps-inside is dumb-init"),
    Attempt("sleeper_gone", ["%%isolate --pid --sh\nps -e -o pid=,comm= > /tmp/ps-inside\n"
                             "echo '    2 sleep' >> /tmp/ps-inside",
                             "import subprocess\nsleeper = subprocess.Popen(['sleep', '60'])"],
            "a `sleep 60` still runs in the kernel's namespace",
            then=["sleeper.kill(); sleeper.wait()"]),
    # explicitly off: a new namespace takes its IPv4 settings from the machine's first one
    Attempt("two_hops", [LAB02, "%forward middle off"], "middle does not forward packets yet"),
    Attempt("cut_off", ["%forward middle on"], "left-eth0 in left is still up", then=[RESET]),
    Attempt("covered_by_tmpfs", ["import os\nos.makedirs('/tmp/covered')\n"
                                 "open('/tmp/covered/one.txt', 'w').close()",
                                 "!mount -t tmpfs here /tmp/covered"],
            "/tmp/covered is a mount point in the kernel", then=["!umount /tmp/covered"]),
    Attempt("covered_by_tmpfs", ["!ls /tmp/covered > /tmp/listing-inside"],
            "shows the files below the mount"),
    Attempt("readonly_cell", ["%%isolate --pid --export etc_error,tmp_file\ntry:\n"
                              "    open('/etc/exercise', 'w')\nexcept OSError as error:\n"
                              "    etc_error = error.strerror\ntmp_file = '/tmp/x'"],
            "`etc_error` is 'Permission denied'"),
    Attempt("hostname_inside", ["import socket\ninside_name = socket.gethostname()"],
            "`inside_name` is 'isolated'"),
    Attempt("queue_inside", ["!ipcmk -Q >/dev/null"], "the kernel's own IPC namespace has 1",
            then=["!ipcrm --all=msg"]),
    Attempt("pid1_of_unshare", ["pid1_command = 'dumb-init'"], "'dumb-init' is not PID 1"),
    Attempt("orphan_adopted", ["orphan_parent = 2"], "`orphan_parent` is 2"),
    Attempt("sums_the_data", ["my_code = 'print(-99999)'"], "it printed '-99999'"),
    Attempt("sums_the_data", ["my_code = 'print(sum(data))'"], "it uses sum()"),
    Attempt("stopped_by_wall_clock", ["lazy_code = 'while True:\\n    pass'"], "s of CPU"),
    Attempt("stopped_by_wall_clock", ["lazy_code = 'print(6)'"], "it ended by itself"),
    Attempt("third_lan", [LAB07, "%netns add pc\n"
                          "%bridge lab pc:10.10.3.31/24 gw:10.10.3.1/24 --in sw"],
            "does pc have a default route"),
    Attempt("no_way_back", [], "db still has a default route", then=[RESET]),
    Attempt("cell_interfaces", ["cell_interfaces = ['lo', 'eth0']"],
            "not what a new network namespace holds"),
    Attempt("shared_namespaces", ["shared = {'cgroup'}"], "1 more kind(s) are shared"),
    Attempt("shared_namespaces", ["shared = {'cgroup', 'time', 'user'}"],
            "the kernel has its own user namespace"),
    Attempt("uptime_command", ["command = ['unshare', '--time', '--fork', '--boottime', "
                               "'86400', 'cat', '/proc/uptime']"], "hours longer, not 48"),
    Attempt("cgroup_namespaces", ["import os\ncell_cgroup_ns = new_cgroup_ns = "
                                  "os.readlink('/proc/self/ns/cgroup')"],
            "`new_cgroup_ns` is the kernel's own cgroup namespace"),
    Attempt("sethostname_capability", ["without_caps = with_uts = 'done'\nneeded = 'sys_admin'"],
            "`without_caps` is 'done'"),
    Attempt("landlock_read", ["read_error = 'done'"], "the read worked"),
    Attempt("published_port", [LAB11, NAT11], "world cannot reach c2 at 198.51.100.1:8081"),
    Attempt("plain_routing", ["%route world 172.18.0.0/24 via 198.51.100.1"],
            "world sees the connection come from 198.51.100.1", then=[RESET]),
    Attempt("image_runs", ["import os, shutil\nos.makedirs('/tmp/tiny-root/bin')\n"
                           "shutil.copy('/bin/mkdir', '/tmp/tiny-root/bin/mkdir')"],
            "the image has no /bin/echo yet"),
    Attempt("overlay_order", ["import os\nfor layer in ('top', 'base'):\n"
                              "    os.makedirs(f'/tmp/layers/{layer}')\n"
                              "    open(f'/tmp/layers/{layer}/which', 'w').write(layer)\n"
                              "read_from = 'base'"], "that is /tmp/layers/base's"),
    Attempt("two_loops", ["each = [0.9, 0.95]"], "more than half a CPU"),
    Attempt("threads_counted", ["threads_started = 4"], "`threads_started` is 4"),
    Attempt("bomb_stopped", ["bomb_output = 'exit code: 0'"], "no refused fork"),
    Attempt("overlay_container", ["import os\nos.makedirs('/tmp/box-image')\n"
                                  "open('/tmp/box-image/note', 'w').write('x')"],
            "the image itself has /note"),
]


def cells() -> tuple[list[str], list[int]]:
    """Every attempt's cells in order, and the index of each attempt's checker call."""
    flat, calls = ["from nskernel import exercises"], []
    for attempt in ATTEMPTS:
        flat += attempt.cells
        calls.append(len(flat))
        flat.append(f"exercises.{attempt.checker}()")
        flat += attempt.then
    return flat, calls


def judge(results: list[dict]) -> None:
    _, calls = cells()
    wrong = []
    for attempt, index in zip(ATTEMPTS, calls, strict=True):
        result = results[index]
        said = result["stdout"]
        if not (said.startswith("not yet: ") and attempt.says in said and said.count("\n") == 1
                and result["result"] == "False"):
            wrong.append(f"{attempt.checker}: {said or result}")
    assert not wrong, "\n".join(wrong)


def test_every_checker_says_what_is_wrong_with_a_wrong_attempt():
    """In a kernel of the caller's (root, where the suite runs as root)."""
    manager, client = kernels.start("isolated-python")
    try:
        results = []
        for code in cells()[0]:
            done = kernels.execute(client, code, timeout=60)
            assert done.status == "ok", (code, done.error, done.stderr)
            results.append({"stdout": done.stdout, "result": done.result})
        judge(results)
    finally:
        kernels.stop(manager, client)


def test_every_checker_says_what_is_wrong_as_an_unprivileged_user(unprivileged_user):
    done = as_user(unprivileged_user, [sys.executable, PROBE, "isolated-python", *cells()[0]],
                   timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])["results"]
    failed = [(code, result["error"]) for code, result in zip(cells()[0], results, strict=True)
              if result["status"] != "ok"]
    assert not failed, failed
    judge(results)
