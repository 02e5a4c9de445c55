"""Inside the pod: start Isolated Python through the Jupyter Server there (REST), run cells
over the kernel's websocket as a browser would, shut it down, and print what came back.

    python pod_server_probe.py PORT TOKEN CODE...

Prints one JSON line: {"kernel": the REST model, "results": [{"status", "result",
"stdout", "stderr"}, ...], "after": the kernels listed once it was deleted}.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
import uuid

from websocket import create_connection  # websocket-client, which jupyter_server needs


def main(port: str, token: str, codes: list[str]) -> None:
    base = f"127.0.0.1:{port}"

    def api(method: str, path: str, body: dict | None = None) -> object:
        request = urllib.request.Request(
            f"http://{base}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text else None

    for _ in range(120):  # the server starting beside us
        try:
            api("GET", "/api/status")
            break
        except OSError:
            time.sleep(0.5)
    kernel = api("POST", "/api/kernels", {"name": "isolated-python"})
    socket = create_connection(f"ws://{base}/api/kernels/{kernel['id']}/channels?token={token}",
                               timeout=120)
    session = uuid.uuid4().hex
    results = []
    for code in codes:
        msg_id = uuid.uuid4().hex
        socket.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                       "username": "probe", "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False,
                        "stop_on_error": True}}))
        done = {"status": "", "result": None, "stdout": "", "stderr": ""}
        idle = False
        while not (idle and done["status"]):
            message = json.loads(socket.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "execute_reply":
                done["status"] = content["status"]
            elif kind == "stream":
                done[content["name"]] += content["text"]
            elif kind == "execute_result":
                done["result"] = content["data"].get("text/plain")
            elif kind == "error":
                done["stderr"] += f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        results.append(done)
    socket.close()
    api("DELETE", f"/api/kernels/{kernel['id']}")
    print(json.dumps({"kernel": kernel, "results": results, "after": api("GET", "/api/kernels")}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
