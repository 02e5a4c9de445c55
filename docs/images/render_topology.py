"""Draw docs/images/topology.svg, the README's picture, from a real lab.

Starts an Isolated Python kernel (the installed ``isolated-python`` kernelspec), builds
notebook 07's lab in it with the magics (two LANs on bridges, a router), and saves what
``%topology`` shows. Run it again when the picture's drawing changes::

    .venv/bin/python docs/images/render_topology.py
"""

from __future__ import annotations

from pathlib import Path

from jupyter_client.manager import start_new_kernel

OUT = Path(__file__).with_name("topology.svg")
LAB = """\
%netns add sw alice bob db web gw
%bridge office alice:10.10.1.11/24 bob:10.10.1.12/24 gw:10.10.1.1/24 --in sw
%bridge servers db:10.10.2.21/24 web:10.10.2.22/24 gw:10.10.2.1/24 --in sw
for host, gateway in [("alice", "10.10.1.1"), ("bob", "10.10.1.1"),
                      ("db", "10.10.2.1"), ("web", "10.10.2.1")]:
    get_ipython().run_line_magic("route", f"{host} default via {gateway}")
%forward gw on
"""


def run(client, code: str) -> list[dict]:
    """Execute ``code``; the outputs it displayed, or RuntimeError with its error."""
    outputs = []
    reply = client.execute_interactive(code, timeout=60, output_hook=outputs.append)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{code.splitlines()[0]}: {reply['content'].get('evalue')}")
    return outputs


def main() -> None:
    manager, client = start_new_kernel(kernel_name="isolated-python")
    try:
        run(client, LAB)
        shown = [msg["content"]["data"] for msg in run(client, "%topology")
                 if "image/svg+xml" in msg["content"].get("data", {})]
        OUT.write_text(shown[0]["image/svg+xml"].strip() + "\n")
        print(f"wrote {OUT}")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
