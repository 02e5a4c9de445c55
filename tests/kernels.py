"""Driving real kernels through jupyter_client: shared by the tests and by kernel_probe.py."""

from __future__ import annotations

import ast
import os
import time
from dataclasses import dataclass, field
from typing import Any

import zmq
from jupyter_client import BlockingKernelClient, KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from traitlets.config import Config


@dataclass
class Execution:
    """Everything one execute_request produced, gathered from iopub and the shell reply."""

    status: str = ""
    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    error: tuple[str, str] | None = None
    traceback: str = ""
    displays: list[dict] = field(default_factory=list)
    payload: str = ""
    outputs: list[tuple[float, str, str]] = field(default_factory=list)  # (time, type, text)

    @property
    def value(self) -> Any:
        """The execute_result, read back as a Python literal."""
        assert self.result is not None, f"no result: {self}"
        return ast.literal_eval(self.result)


def _wait_for_a_message(client: BlockingKernelClient, seconds: float) -> None:
    """Until a message arrives on the shell, iopub or stdin channel, at most ``seconds``:
    at once, as a browser gets it (a sleep between looks would add up to its length)."""
    poller = zmq.Poller()
    for channel in (client.shell_channel, client.iopub_channel, client.stdin_channel):
        poller.register(channel.socket, zmq.POLLIN)
    poller.poll(seconds * 1000)


def execute(client: BlockingKernelClient, code: str, timeout: float = 30,
            stdin: list[str] | None = None,
            interrupt: tuple[KernelManager, str] | None = None) -> Execution:
    """Run ``code``; wait for the reply and for iopub to go idle; answer input() from stdin.

    ``interrupt=(manager, marker)``: interrupt the kernel as Jupyter does once ``marker``
    has appeared on the cell's stdout (so the interrupt never races the cell's start), and
    still wait for the reply and for idle, so that the next request never races ipykernel's
    clean-up after the interrupted one.
    """
    msg_id = client.execute(code, allow_stdin=stdin is not None)
    done = Execution()
    deadline = time.monotonic() + timeout
    idle = replied = False
    answers = list(stdin or [])
    while not (idle and replied):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no reply within {timeout} s to {code!r}: {done}")
        if stdin is not None and client.stdin_channel.msg_ready():
            client.stdin_channel.get_msg(timeout=1)
            client.input(answers.pop(0))
        if not replied and client.shell_channel.msg_ready():
            reply = client.get_shell_msg(timeout=1)
            if reply["parent_header"].get("msg_id") == msg_id:
                done.status = reply["content"]["status"]
                done.payload = "".join(item.get("data", {}).get("text/plain", "")
                                       for item in reply["content"].get("payload", []))
                replied = True
            continue
        if not client.iopub_channel.msg_ready():
            _wait_for_a_message(client, min(left, 0.05))
            continue
        msg = client.get_iopub_msg(timeout=1)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            setattr(done, content["name"], getattr(done, content["name"]) + content["text"])
            done.outputs.append((time.monotonic(), content["name"], content["text"]))
            if interrupt is not None and interrupt[1] in done.stdout:
                interrupt[0].interrupt_kernel()
                interrupt = None
        elif kind == "execute_result":
            done.result = content["data"].get("text/plain")
        elif kind == "error":
            done.error = (content["ename"], content["evalue"])
            done.traceback = "\n".join(content["traceback"])
        elif kind == "display_data":
            done.displays.append(content["data"])
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
    return done


def start(kernel_name: str, kernel_dirs: list[str] | None = None,
          transport: str = "tcp", config: Config | None = None,
          **kwargs: Any) -> tuple[KernelManager, BlockingKernelClient]:
    """Start a kernel and wait until it answers kernel_info. ``config``: the Jupyter
    configuration the manager (and so its provisioner) reads, as a server's would be."""
    specs = KernelSpecManager(kernel_dirs=kernel_dirs) if kernel_dirs else KernelSpecManager()
    manager = KernelManager(kernel_name=kernel_name, kernel_spec_manager=specs,
                            transport=transport, config=config or Config())
    # As a notebook server would: pytest's marker in the environment makes ipykernel stop
    # capturing output written straight to fd 1/2 (by subprocesses, os.system, C code).
    env = {k: v for k, v in kwargs.pop("env", os.environ).items() if k != "PYTEST_CURRENT_TEST"}
    manager.start_kernel(env=env, **kwargs)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
    except BaseException:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        raise
    return manager, client


def stop(manager: KernelManager, client: BlockingKernelClient) -> None:
    client.stop_channels()
    if manager.has_kernel:
        manager.shutdown_kernel(now=False)
    manager.cleanup_resources()
