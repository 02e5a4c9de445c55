"""Run code in a fresh kernel and print what came back as JSON; used to test as another user.

    python kernel_probe.py KERNEL_NAME CODE... [--hold]

With ``--hold`` the kernel is left running and the probe sleeps after printing, so a test
can kill the probe (playing a Jupyter server that dies) and watch what happens to the kernel.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import kernels


def main(argv: list[str]) -> int:
    hold = "--hold" in argv
    name, *codes = [arg for arg in argv if arg != "--hold"]
    manager, client = kernels.start(name)
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
