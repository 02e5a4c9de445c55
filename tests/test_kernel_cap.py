"""The provisioner's ``max_kernels``: the kernels one server (one student, on a hub) runs at
once; the next start is refused in one line, a restart is not, and a kernel that ended (shut
down, or dead) leaves room. Real kernels, as a server starts them."""

from __future__ import annotations

import signal

import pytest
from conftest import wait_for, write_kernel
from kernels import start, stop
from traitlets.config import Config

from nskernel.isolation import Isolation
from nskernel.kernel.provisioner import KernelCapError
from nskernel.limits import Limits

KERNEL = "isolated-capped"


@pytest.fixture(scope="module")
def capped_kernel() -> str:
    return write_kernel(KERNEL, Isolation.kernel_default(), Limits(memory=768 << 20, pids=128),
                        provisioner=True)


def one_at_a_time() -> Config:
    config = Config()
    config.NskernelProvisioner.max_kernels = 1
    return config


def test_the_kernel_beyond_the_cap_is_refused_in_one_line(capped_kernel):
    first = start(capped_kernel, config=one_at_a_time())
    try:
        with pytest.raises(KernelCapError) as refused:
            start(capped_kernel, config=one_at_a_time())
        assert str(refused.value) == (
            "this server already runs 1 Isolated Python kernels, the most it may "
            "(max_kernels=1): shut one down (Kernel > Shut Down Kernel) and start again")
        assert refused.value.status_code == 403  # what Jupyter Server answers, with the line
        first[0].restart_kernel(now=True)  # its own restart is no second kernel
        first[1].wait_for_ready(timeout=60)
    finally:
        stop(*first)
    second = start(capped_kernel, config=one_at_a_time())  # the first shut down: room
    stop(*second)


def test_a_kernel_that_died_leaves_room(capped_kernel):
    manager, client = start(capped_kernel, config=one_at_a_time())
    try:
        manager.signal_kernel(signal.SIGKILL)
        assert wait_for(lambda: not manager.is_alive(), timeout=30)
        other = start(capped_kernel, config=one_at_a_time())
        stop(*other)
    finally:
        stop(manager, client)
