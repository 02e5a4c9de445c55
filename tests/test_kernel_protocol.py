"""Protocol conformance: the ecosystem's jupyter_kernel_test suite, on both kernels.

The same configuration runs against the stock ``python3`` kernel and Isolated Python, so a
difference between the two shows up as a test that passes for one and fails for the other.
Every feature is configured, so that no test of the suite is skipped.
"""

from __future__ import annotations

import jupyter_kernel_test
import pytest
from kernels import execute

KERNELS = ["python3", "isolated-python"]


class PythonKernelChecks:
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('oops', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "print?"
    code_generate_error = "raise ValueError('planned')"
    code_execute_result = [{"code": "1+2+3", "result": "6"},
                           {"code": "[n*n for n in range(3)]", "result": "[0, 1, 4]"}]
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>x</b>'))",
         "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
         "mime": "text/latex"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    def test_history(self) -> None:
        """Replaces the suite's version, whose "range" case expects the session number back
        where IPython answers 0 ("this session"), in the stock kernel as in ours."""
        for code in ("x = 1", "x * 12", "print(x)"):
            self.execute_helper(code=code)
        tail = self.history_helper([], hist_access_type="tail", n=2, raw=True)
        assert [entry[2] for entry in tail["content"]["history"]] == ["x * 12", "print(x)"]
        found = self.history_helper([], hist_access_type="search", pattern="x [*] 1?",
                                    raw=True)
        assert [entry[2] for entry in found["content"]["history"]][-1] == "x * 12"
        line = tail["content"]["history"][0][1]
        ranged = self.history_helper([], hist_access_type="range", session=0, start=line,
                                     stop=line + 2, raw=True, output=False)
        assert [entry[2] for entry in ranged["content"]["history"]] == ["x * 12", "print(x)"]


class TestStockPython(PythonKernelChecks, jupyter_kernel_test.KernelTests):
    kernel_name = "python3"


class TestIsolatedPython(PythonKernelChecks, jupyter_kernel_test.KernelTests):
    kernel_name = "isolated-python"


class TestStockWelcome(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = "python3"
    support_iopub_welcome = True


class TestIsolatedWelcome(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = "isolated-python"
    support_iopub_welcome = True


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_input_is_answered_over_stdin(start_kernel, kernel_name):
    _manager, client = start_kernel(kernel_name)
    done = execute(client, "name = input('who? '); print('hi', name)", stdin=["ada"])
    assert done.stdout.endswith("hi ada\n")


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_comms_open_message_and_reply(start_kernel, kernel_name):
    _manager, client = start_kernel(kernel_name)
    execute(client, "\n".join([
        "from comm import get_comm_manager",
        "def target(comm, open_msg):",
        "    comm.on_msg(lambda msg: comm.send({'echo': msg['content']['data']['x']}))",
        "get_comm_manager().register_target('nskernel-test', target)",
    ]))
    comm_id = "c0ffee"
    open_msg = client.session.msg("comm_open", {"comm_id": comm_id,
                                                "target_name": "nskernel-test", "data": {}})
    client.shell_channel.send(open_msg)
    message = client.session.msg("comm_msg", {"comm_id": comm_id, "data": {"x": 42}})
    client.shell_channel.send(message)
    while True:
        msg = client.get_iopub_msg(timeout=10)
        if msg["msg_type"] == "comm_msg":
            assert msg["content"]["data"] == {"echo": 42}
            break
