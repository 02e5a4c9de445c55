"""Isolation settings: flags to object and back, and every refusal in one line."""

from __future__ import annotations

import argparse

import pytest

from nskernel import isolation
from nskernel.isolation import Isolation, IsolationError


def parser(user_flag: str | None = None) -> argparse.ArgumentParser:
    made = argparse.ArgumentParser()
    isolation.add_arguments(made, user_flag=user_flag)
    return made


@pytest.mark.parametrize("spec", [
    Isolation(pid=True, net=True, mount=True, uts=True, ipc=True, hostname="isolated"),
    Isolation(net=True, loopback_up=False),
    Isolation(pid=True),
    Isolation(uts=True, hostname="box.lab"),
    Isolation(ipc=True, user=True),
    Isolation(mount=True, uts=True, net=True, user=True, hostname="a-b"),
])
def test_flags_turn_back_into_the_same_isolation(spec):
    back = isolation.from_args(parser("--user").parse_args(spec.to_argv("--user")))
    assert back == spec


@pytest.mark.parametrize("spec", [
    Isolation.kernel_default(),
    Isolation(pid=True, net=True, readonly=True, seccomp=True, tmpfs_size="1g"),
    Isolation(pid=True, readonly=True, binds=(("/data", False), ("/out", True)),
              tmpfs_size="256m"),
    Isolation(net=True, tmpfs_size="2g", seccomp=True),
    Isolation(pid=True, net=True, visible_only=True, tmpfs_size="1g", hide=("/srv/x",)),
    Isolation(pid=True, visible_only=True, workdir_writable=False, tmpfs_size="1g",
              binds=(("/data", False),)),
    Isolation(pid=True, uts=True, hide=("/etc/motd", "/opt"), tmpfs_size="1g"),
])
def test_a_kernels_flags_with_its_locks_turn_back_into_the_same_isolation(spec):
    from nskernel.kernel.setup import add_kernel_arguments

    made = argparse.ArgumentParser()
    add_kernel_arguments(made)
    flags = spec.to_argv(locks=True, tmpfs_default=isolation.KERNEL_TMP_SIZE)
    assert isolation.from_args(made.parse_args(flags)) == spec
    assert Isolation.kernel_default().to_argv(locks=True, tmpfs_default="1g") == [
        "--pid", "--net", "--mount", "--uts", "--ipc", "--hostname", "isolated"]


@pytest.mark.parametrize(("spec", "unsayable"), [
    (Isolation(net=True, user=False), "user"),
    (Isolation(net=True, user=True), "user"),  # no user flag given to to_argv
    (Isolation(uts=True, netns="a"), "netns"),
    (Isolation(net=True, map_root_to=65534), "map_root_to"),
])
def test_settings_that_no_flag_can_say_are_refused_not_dropped(spec, unsayable):
    with pytest.raises(IsolationError, match=f"^{unsayable} cannot be given as flags"):
        spec.to_argv()


def test_pid_net_and_ipc_bring_a_mount_namespace_and_a_hostname_brings_uts():
    assert Isolation(pid=True).mount and Isolation(net=True).mount and Isolation(ipc=True).mount
    assert Isolation(mount=True, hostname="h").uts


def test_with_no_namespace_named_the_default_set_minus_the_no_flags():
    args = parser().parse_args(["--no-ipc", "--no-net"])
    spec = isolation.from_args(args, isolation.KERNEL_DEFAULT, isolation.DEFAULT_HOSTNAME)
    assert spec.namespaces == ("pid", "mount", "uts") and spec.hostname == "isolated"


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "no namespace chosen: give at least one of --pid"),
    ({"uts": True, "hostname": "under_score"}, "bad hostname 'under_score'"),
    ({"uts": True, "hostname": "-dash"}, "bad hostname '-dash'"),
    ({"uts": True, "hostname": "x" * 100_000}, "... (100000 characters)"),
    ({"net": True, "netns": "a"}, "join a named network namespace or make a new one"),
])
def test_bad_settings_say_what_to_change_in_one_line(settings, message):
    with pytest.raises(IsolationError) as raised:
        Isolation(**settings)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize(("text", "bind"), [
    ("/data", ("/data", False)), ("/data:rw", ("/data", True)), ("/data:ro", ("/data", False)),
    ("/odd:name", ("/odd:name", False)),
])
def test_a_bind_is_a_path_and_maybe_rw(text, bind):
    assert isolation.parse_bind(text) == bind


def test_readonly_brings_a_mount_namespace_and_binds_need_it():
    assert Isolation(uts=True, readonly=True).mount
    with pytest.raises(IsolationError, match="add --readonly"):
        Isolation(mount=True, binds=(("/data", True),))
    with pytest.raises(IsolationError, match="cannot be given as flags"):
        Isolation(mount=True, readonly=True).to_argv()


def test_a_view_of_listed_directories_is_read_only_and_needs_a_pid_namespace():
    spec = Isolation(uts=True, visible_only=True)
    # Else /proc/PID/root of a process outside the view would lead around it.
    assert spec.readonly and spec.pid and spec.mount
    assert Isolation(uts=True, hide=("/srv",)).pid
    with pytest.raises(IsolationError, match="^--workdir says how --visible-only"):
        Isolation(uts=True, workdir_writable=False)
    with pytest.raises(IsolationError, match="^hide 'srv': give an absolute path below /"):
        Isolation(uts=True, hide=("srv",))
    with pytest.raises(IsolationError, match="^hide '/': give an absolute path below /"):
        Isolation(uts=True, hide=("/",))
    with pytest.raises(IsolationError, match="cannot be given as flags"):
        Isolation(uts=True, hide=("/srv",)).to_argv()


def test_hidden_paths_are_read_as_normal_paths():
    made = argparse.ArgumentParser()
    isolation.add_arguments(made)
    isolation.add_lock_arguments(made)
    args = made.parse_args(["--uts", "--hide", "/srv/x/", "--hide", "/a//b", "--visible-only",
                            "--workdir", "ro"])
    spec = isolation.from_args(args)
    assert spec.hide == ("/srv/x", "/a/b") and spec.visible_only and not spec.workdir_writable
