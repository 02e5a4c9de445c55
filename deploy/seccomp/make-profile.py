"""Write nskernel.json: the container runtime's default seccomp profile (containers-common's
seccomp.json, which podman and CRI-O use) plus what Isolated Python needs beyond it.

The default profile lets unshare, setns, mount, umount2 and pivot_root through (they act on
namespaces the caller owns), but refuses sethostname to a container without CAP_SYS_ADMIN,
which a pod should not be given. The kernel sets its hostname in a uts namespace of its own,
owned by its own user namespace: allowing it there touches no other. Docker's and
containerd's default profiles refuse unshare and mount as well; this file is for runtimes
that use containers-common's profile (podman, CRI-O) and, as a Localhost profile, for any.

    python3 deploy/seccomp/make-profile.py [/usr/share/containers/seccomp.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: The calls allowed beyond the runtime's default, found by running the kernel and the lab
#: under the default profile (tests/test_pods.py shows the default refusing them).
NEEDED = ["sethostname"]


def main(default: Path) -> None:
    profile = json.loads(default.read_text())
    for rule in profile["syscalls"]:  # no rule that refuses them stays
        if rule["action"] != "SCMP_ACT_ALLOW":
            rule["names"] = [name for name in rule["names"] if name not in NEEDED]
    profile["syscalls"] = [rule for rule in profile["syscalls"] if rule["names"]]
    profile["syscalls"].append({"names": NEEDED, "action": "SCMP_ACT_ALLOW", "args": [],
                                "comment": "nskernel: the hostname of its own uts namespace",
                                "includes": {}, "excludes": {}})
    out = Path(__file__).with_name("nskernel.json")
    out.write_text(json.dumps(profile, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/containers/seccomp.json"))
