"""The provisioner's reading of a kernelspec's config and of the server's caps, no kernel."""

from __future__ import annotations

import os

import pytest
from jupyter_client.kernelspec import KernelSpec
from traitlets.config import Config

from nskernel import isolation
from nskernel.isolation import Isolation, IsolationError
from nskernel.kernel.provisioner import NskernelProvisioner, capped, parse_request, request_for
from nskernel.limits import LimitError, Limits


def provisioner(config: Config | None = None, **request: object) -> NskernelProvisioner:
    spec = KernelSpec(argv=["/usr/bin/python3", "-m", "nskernel.launch", "-f", "{c}"],
                      display_name="Isolated Python", language="python")
    return NskernelProvisioner(kernel_id="k", kernel_spec=spec, config=config or Config(),
                               **request)


def test_a_config_reads_as_the_install_flags_would():
    spec, limits = parse_request({"namespaces": ["pid", "net"], "memory": "2G", "pids": 512,
                                  "readonly": True, "bind": ["/srv/data:rw"],
                                  "seccomp": True})
    assert spec.namespaces == ("pid", "net", "mount")  # pid and net need their own mounts
    assert spec.readonly and spec.seccomp and spec.binds == (("/srv/data", True),)
    assert limits == Limits(memory=2 << 30, pids=512)


def test_an_empty_config_is_the_default_kernel():
    spec, limits = parse_request({})
    assert spec.namespaces == isolation.KERNEL_DEFAULT and spec.hostname == "isolated"
    assert not limits


def test_what_install_writes_reads_back_the_same():
    spec = Isolation(pid=True, net=True, hostname="box", readonly=True, seccomp=True,
                     binds=(("/srv", False),), tmpfs_size="64m")
    limits = Limits(memory=3 << 29, pids=100, cpus=1.5, fsize=10 << 20, nofile=200)
    request = request_for(spec, limits)
    assert request["memory"] == "1536M" and request["fsize"] == "10M"
    assert parse_request(request) == (spec, limits)


@pytest.mark.parametrize(("request_", "message"), [
    ({"namespace": ["pid"]}, "unknown key 'namespace'"),
    ({"namespaces": ["pid", "time"]}, "unknown namespace 'time'"),
    ({"namespaces": "pid"}, "namespaces must be a list"),
    ({"memory": "lots"}, "--memory 'lots': give a size above 0"),
    ({"memory": "1M"}, "--memory: a kernel needs at least 256 MiB"),
    ({"pids": "many"}, "invalid int value: 'many'"),
    ({"readonly": "yes"}, "readonly must be true or false"),
])
def test_a_bad_config_is_one_line_naming_what_is_wrong(request_, message):
    with pytest.raises((IsolationError, LimitError)) as raised:
        parse_request(request_)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_server_caps_what_a_kernelspec_asks_for():
    config = Config()
    config.NskernelProvisioner.max_memory = "1G"
    config.NskernelProvisioner.max_pids = 256
    config.NskernelProvisioner.force_seccomp = True
    spec, limits = provisioner(config, memory="4G", pids=64).kernel_settings()
    assert limits == Limits(memory=1 << 30, pids=64)  # capped; below the cap as asked
    assert spec.seccomp and not spec.readonly
    _, limits = provisioner(config).kernel_settings()
    assert limits == Limits(memory=1 << 30, pids=256)  # nothing asked: the caps


def test_a_view_reads_back_and_the_server_can_force_it():
    spec = Isolation(pid=True, net=True, visible_only=True, workdir_writable=False,
                     hide=("/srv/answers",), tmpfs_size="1g", hostname="box")
    request = request_for(spec, Limits())
    assert request["visible_only"] is True and request["workdir"] == "ro"
    assert parse_request(request) == (spec, Limits())
    config = Config()
    config.NskernelProvisioner.force_visible_only = True
    config.NskernelProvisioner.force_hide = ["/srv/gradebook/"]
    forced, _ = provisioner(config, hide=["/srv/answers"]).kernel_settings()
    assert forced.visible_only and forced.readonly and forced.workdir_writable
    assert forced.hide == ("/srv/answers", "/srv/gradebook")
    with pytest.raises(IsolationError, match="a kernelspec may not set force_visible_only"):
        provisioner(force_visible_only=False)


def test_a_kernelspec_cannot_set_the_caps():
    with pytest.raises(IsolationError, match="a kernelspec may not set max_memory"):
        provisioner(max_memory="64G")
    with pytest.raises(IsolationError, match="unknown key 'memroy'"):
        provisioner(memroy="1G")


def test_capped_keeps_the_smaller_of_each():
    assert capped(Limits(memory=5, cpus=2.0), Limits(memory=3, pids=7)) == \
        Limits(memory=3, cpus=2.0, pids=7)


def test_a_pool_serves_notebooks_at_or_below_the_root_it_started_in(tmp_path):
    from nskernel.kernel.provisioner import WarmPool

    below = tmp_path / "course" / "week1"
    below.mkdir(parents=True)
    for step in (tmp_path, tmp_path / "course", below):
        step.chmod(0o755)
    pool = WarmPool(["python"], 1, str(tmp_path))
    assert pool.serves(str(tmp_path)) and pool.serves(str(below))
    assert not pool.serves(str(tmp_path.parent)) and not pool.serves("/etc")
    assert not WarmPool(["python"], 1, "/").serves("/home")  # / hides /tmp inside
    (tmp_path / "course").chmod(0o700)  # nobody (a root kernel) could not get through
    assert pool.serves(str(below)) is (os.geteuid() != 0)


def test_a_refill_asked_for_before_the_pool_is_emptied_starts_nothing(tmp_path, monkeypatch):
    """benchmarks/many.py found two launchers alive after the pools were emptied: the refill
    that the last handout asked for ran after empty()."""
    import time

    from nskernel.kernel.provisioner import WarmPool

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    # A stand-in launcher: it waits for its stdin to close, as a pooled kernel does.
    pool = WarmPool(["/bin/sh", "-c", "read -r _", "launcher"], 1, str(tmp_path))
    pool.fill_soon(0.05)
    pool.empty()
    time.sleep(0.3)
    assert pool.idle == []
    pool.fill_soon(0.05)  # asked for after: it fills
    time.sleep(0.3)
    try:
        assert len(pool.idle) == 1
    finally:
        pool.empty()
    assert pool.idle == []
