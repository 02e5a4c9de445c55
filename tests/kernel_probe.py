"""Run code in a fresh kernel and print what came back as JSON; used to test as another user.

    python kernel_probe.py KERNEL_NAME CODE... [--hold] [--log PATH]

With ``--hold`` the kernel is left running and the probe sleeps after printing, so a test
can kill the probe (playing a Jupyter server that dies) and watch what happens to the kernel.
With ``--log PATH`` the kernel's stdout and stderr are that file (appended to), as a Jupyter
server's are when it logs to a file.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import kernels


def main(argv: list[str]) -> int:
    hold = "--hold" in argv
    argv = [arg for arg in argv if arg != "--hold"]
    log = None
    if "--log" in argv:
        at = argv.index("--log")
        log = open(argv[at + 1], "ab")  # the kernel's, for its whole life
        del argv[at:at + 2]
    name, *codes = argv
    manager, client = kernels.start(name, **({"stdout": log, "stderr": log} if log else {}))
    try:
        results = [dataclasses.asdict(kernels.execute(client, code)) for code in codes]
        print(json.dumps({"launcher_pid": manager.provisioner.pid, "results": results,
                          "connection_file": manager.connection_file}),
              flush=True)
        while hold:
            time.sleep(60)
    finally:
        kernels.stop(manager, client)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
