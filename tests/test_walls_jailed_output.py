"""A jailed cell's output is data: what reaches iopub from `%%isolate --jail` is text,
base64 pictures and sanitised HTML, whatever route the cell takes (display, update_display,
its value and its _repr_*_, its error, raw bytes on the pipe its results come back on), and
nothing the jail sends is unpickled into code in the kernel. A trusted `%%isolate` keeps rich
output. In both kernels; as root and (in CI's second run) as an ordinary user, and as a user
from a root run below."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from conftest import as_user
from test_magics import cell, one_line_error, still_answers

INERT = {"text/plain", "text/html", "image/png", "image/jpeg", "image/gif"}
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJ"
       "RU5ErkJggg==")
#: Every display route of a jailed cell, each trying to run script in the page.
DISPLAYS = r"""
from IPython.display import HTML, SVG, Image, Javascript, Latex, Markdown, display
import base64
display(Javascript("window.__jail = 'javascript'"))
display(HTML("<script>window.__jail = 'script'</script><b>bold</b>"))
display(HTML('<img src=x onerror="window.__jail = \'onerror\'">'))
display(HTML('<a href="javascript:window.__jail = \'href\'">link</a>'))
display(HTML('<iframe srcdoc="<script>parent.__jail = 1</script>"></iframe>'))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="window.__jail = 1">'
            '<script>window.__jail = 2</script><rect width="5" height="5"/></svg>'))
display(Markdown('<img src=x onerror="window.__jail = \'markdown\'">'))
display(Latex(r'$\href{javascript:window.__jail = 1}{tex}$'))
display({"application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2,
         "version_minor": 0}, "application/json": {"html": "<script>1</script>"}}, raw=True)
display({"text/html": "<script>window.__jail = 'metadata'</script>"}, raw=True,
        metadata={"isolated": True, "text/html": {"isolated": True}})
handle = display(HTML("first"), display_id=True)
handle.update(Javascript("window.__jail = 'update'"))
display(Image(data=base64.b64decode(PNG_DATA), format="png", width=4))
""".replace("PNG_DATA", repr(PNG))
#: A value whose every representation tries to run script.
VALUE = r"""
class Value:
    def _repr_html_(self):
        return '<img src=x onerror="window.__jail = \'value\'"><i>value</i>'
    def _repr_javascript_(self):
        return "window.__jail = 'value-js'"
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"application/javascript": "window.__jail = 'bundle'",
                "text/markdown": "*md*"}
    def __repr__(self):
        return "Value()"
"""
ROUTES = DISPLAYS + VALUE + "Value()"


def iopub(client, code: str, timeout: float = 60) -> tuple[str, list[tuple[str, dict]]]:
    """Run ``code``; the reply's status and every iopub message of it: (msg_type, content)."""
    msg_id = client.execute(code)
    deadline = time.monotonic() + timeout
    status, messages, idle = "", [], False
    while not (status and idle):
        assert time.monotonic() < deadline, f"no reply within {timeout} s: {messages}"
        if not status and client.shell_channel.msg_ready():
            reply = client.get_shell_msg(timeout=1)
            if reply["parent_header"].get("msg_id") == msg_id:
                status = reply["content"]["status"]
            continue
        if not client.iopub_channel.msg_ready():
            time.sleep(0.005)
            continue
        msg = client.get_iopub_msg(timeout=1)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status":
            idle = msg["content"]["execution_state"] == "idle"
        else:
            messages.append((msg["msg_type"], msg["content"]))
    return status, messages


def rich(messages: list[tuple[str, dict]]) -> list[tuple[str, dict, dict]]:
    return [(kind, content["data"], content.get("metadata", {})) for kind, content in messages
            if kind in ("display_data", "update_display_data", "execute_result")]


def assert_inert(data: dict, metadata: dict) -> None:
    assert set(data) <= INERT, data
    assert "text/plain" in data
    html = data.get("text/html", "")
    for live in ("<script", "onerror", "onload", "javascript:", "<iframe", "<svg", "srcdoc"):
        assert live not in html.lower(), html
    assert set(metadata) <= {"image/png", "image/jpeg", "image/gif"}, metadata


def test_every_display_route_of_a_jailed_cell_arrives_inert(kernel):
    status, messages = iopub(kernel, "%%isolate --jail --timeout 30\n" + ROUTES)
    assert status == "ok", messages
    shown = rich(messages)
    for _kind, data, metadata in shown:
        assert_inert(data, metadata)
    kinds = [kind for kind, _data, _metadata in shown]
    assert kinds == ["display_data"] * 13 + ["execute_result"], kinds
    data = [data for _kind, data, _metadata in shown]
    assert data[0] == {"text/plain": "<IPython.core.display.Javascript object>"}
    assert "<b>bold</b>" in data[1]["text/html"]
    assert data[5]["text/html"].startswith(
        '<img alt="SVG picture" src="data:image/svg+xml;base64,')
    assert data[6]["text/plain"] == '<img src=x onerror="window.__jail = \'markdown\'">'
    assert data[7]["text/plain"] == r"$\href{javascript:window.__jail = 1}{tex}$"
    assert data[8] == {"text/plain": "[a jailed cell's output: application/json, "
                                     "application/vnd.jupyter.widget-view+json, not shown "
                                     "(only text, pictures and sanitised HTML are)]"}
    assert shown[12][1]["image/png"] == PNG and shown[12][2] == {"image/png": {"width": 4}}
    # The value: its markdown as text, its HTML sanitised, its scripts gone.
    assert data[13] == {"text/plain": "*md*", "text/html": '<div class="mathjax_ignore '
                        'tex2jax_ignore"><img><i>value</i></div>'}
    still_answers(kernel)


def test_a_trusted_isolate_keeps_rich_output(kernel):
    assert cell(kernel, VALUE).status == "ok"  # a trusted cell's value comes back as itself
    status, messages = iopub(kernel, "%%isolate --pid --timeout 30\n" + DISPLAYS + "Value()")
    assert status == "ok", messages
    data = [data for _kind, data, _metadata in rich(messages)]
    assert data[0]["application/javascript"] == "window.__jail = 'javascript'"
    assert data[2]["text/html"] == '<img src=x onerror="window.__jail = \'onerror\'">'
    assert "<script>" in data[5]["image/svg+xml"]
    assert data[13]["application/javascript"] == "window.__jail = 'bundle'"


def test_a_value_whose_display_holds_objects_still_shows(kernel):
    done = cell(kernel, "%%isolate --jail\n"
                        "import datetime\n"
                        "class Odd:\n"
                        "    def _repr_json_(self):\n"
                        "        return {'when': datetime.date(2020, 1, 1)}\n"
                        "    def __repr__(self):\n"
                        "        return 'Odd()'\n"
                        "Odd()")
    assert (done.status, done.result) == ("ok", "Odd()"), done


def test_a_jailed_error_comes_back_as_text(kernel):
    status, messages = iopub(kernel, "%%isolate --jail\n"
                                     "raise ValueError('<img src=x onerror=alert(1)>')")
    errors = [content for kind, content in messages if kind == "error"]
    assert status == "error" and len(errors) == 1, messages
    assert (errors[0]["ename"], errors[0]["evalue"]) == ("ValueError",
                                                         "<img src=x onerror=alert(1)>")
    assert not rich(messages)
    # A class of the cell's own cannot come out: its name and text do, in a RuntimeError.
    done = cell(kernel, "%%isolate --jail\n"
                        "class Crafted(Exception):\n"
                        "    def __reduce__(self):\n"
                        "        return (exec, ('import builtins; builtins.PWNED = 1',))\n"
                        "raise Crafted('boom')")
    assert done.error == ("RuntimeError", "Crafted: boom"), done
    assert cell(kernel, "import builtins; hasattr(builtins, 'PWNED')").value is False


def test_a_value_that_would_run_code_when_unpickled_runs_none_in_the_kernel(kernel):
    evil = ("class Evil:\n"
            "    def __reduce__(self):\n"
            "        return (exec, ('import builtins; builtins.PWNED = 1',))\n"
            "    def __repr__(self):\n"
            "        return 'Evil()'\n")
    done = cell(kernel, f"%%isolate --jail\n{evil}Evil()")
    assert (done.status, done.result) == ("ok", "Evil()"), done  # shown, never unpickled
    done = cell(kernel, f"%%isolate --jail --export e\n{evil}e = Evil()")
    assert one_line_error(done) == (
        "UsageError: isolated cell: --export e: a jailed cell sends back plain "
        "data only (str, numbers, bytes, lists, tuples, dicts, sets): builtins.exec is not "
        "plain data")
    # Straight onto the pipe, past every check of the child's own.
    done = cell(kernel, f"%%isolate --jail\n{evil}"
                        "import os, pickle, struct\nfrom nskernel.cell import wire\n"
                        "payload = pickle.dumps(('value', Evil()))\n"
                        "os.write(wire.child_messages, struct.pack('!I', len(payload))"
                        " + payload)\n"
                        "os._exit(0)")
    assert one_line_error(done) == (
        "UsageError: isolated cell: the cell sent back something other than plain data "
        "(builtins.exec is not plain data): stopped it")
    assert cell(kernel, "import builtins; hasattr(builtins, 'PWNED')").value is False
    still_answers(kernel)


def test_a_jail_exports_plain_data_and_only_the_names_asked_for(kernel):
    done = cell(kernel, "%%isolate --jail --export a,b\n"
                        "a = {'n': [1, 2.5, 'x', b'y', (None, True)], 's': {1}}\nb = 3")
    assert done.status == "ok", done
    assert cell(kernel, "a, b").value == ({"n": [1, 2.5, "x", b"y", (None, True)],
                                           "s": {1}}, 3)
    # A hostile child's result naming more than it was asked for: only `c` lands.
    done = cell(kernel, "%%isolate --jail --export c\n"
                        "import os, pickle, struct\nfrom nskernel.cell import wire\n"
                        "payload = pickle.dumps(('value', (None, {'c': 1, 'print': 0,"
                        " 'get_ipython': 0})))\n"
                        "os.write(wire.child_messages, struct.pack('!I', len(payload))"
                        " + payload)\n"
                        "os._exit(0)")
    assert done.status == "ok", done
    assert cell(kernel, "c, print is __builtins__.print if hasattr(__builtins__, 'print')"
                        " else callable(print), callable(get_ipython)").value == (1, True, True)


def test_a_jail_flooding_its_result_pipe_is_stopped(kernel):
    done = cell(kernel, "%%isolate --jail --timeout 60\n"
                        "import os, struct\nfrom nskernel.cell import wire\n"
                        "os.write(wire.child_messages, struct.pack('!I', 2**32 - 1))\n"
                        "chunk = b'x' * (1 << 20)\n"
                        "while True:\n    os.write(wire.child_messages, chunk)",
                timeout=90)
    assert one_line_error(done) == ("UsageError: isolated cell: the cell sent back more than "
                                    "64 MiB of output: stopped it")
    still_answers(kernel)


def test_a_jailed_cells_displays_are_inert_as_a_user(unprivileged_user):
    probe = str(Path(__file__).with_name("kernel_probe.py"))
    done = as_user(unprivileged_user, [sys.executable, probe, "isolated-python",
                                       "%%isolate --jail --timeout 30\n" + ROUTES])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])["results"][0]
    assert result["status"] == "ok", result
    assert len(result["displays"]) == 13
    for data in result["displays"]:
        assert_inert(data, {})
    assert result["result"] == "*md*"
