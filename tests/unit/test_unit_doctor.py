"""nskernel doctor's verdict from its checks."""

from __future__ import annotations

from nskernel.isolation import NAMESPACES
from nskernel.kernel.doctor import Check, container_checks, report


def checks(failing: str | None) -> list[Check]:
    names = ["user", *NAMESPACES, "init"]
    return [Check(name, name != failing, "refused" if name == failing else "ok")
            for name in names]


def test_everything_ok_means_the_kernel_can_start():
    assert report(checks(None)).endswith("The Isolated Python kernel can start here.")


def test_no_user_namespaces_means_no_kernel_even_as_root():
    """The kernel always has a user namespace of its own."""
    text = report(checks("user"))
    assert "NO  user   refused" in text
    assert text.endswith("cannot start here until the above is fixed.")


# ---------------------------------------------------------------------------- containers
def fake_root(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_plain_machine_has_nothing_to_say(tmp_path):
    root = fake_root(tmp_path, {"/proc/1/status": "Name:\tsystemd\nSeccomp:\t0\n",
                                "/proc/self/cgroup": "0::/user.slice/session-1.scope\n",
                                "/proc/sys/user/max_user_namespaces": "63000\n"})
    assert container_checks(root, environ={}) == []


def test_a_kubernetes_pod_with_the_runtimes_defaults_names_each_setting(tmp_path):
    mountinfo = "".join(f"{n} 1 0:5 / {p} ro - tmpfs tmpfs ro\n" for n, p in enumerate(
        ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sys"]))
    root = fake_root(tmp_path, {"/proc/1/status": "Name:\tpause\nSeccomp:\t2\n",
                                "/proc/self/cgroup": "0::/\n",
                                "/proc/self/attr/apparmor/current": "cri-containerd (enforce)\n",
                                "/proc/self/mountinfo": mountinfo})
    found = {check.namespace: check for check in
             container_checks(root, environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})}
    assert found["runtime"].detail == "inside a Kubernetes container"
    assert "seccompProfile.type: Unconfined" in found["seccomp"].detail
    assert "appArmorProfile.type: Unconfined" in found["apparmor"].detail
    assert "procMount: Unmasked" in found["proc"].detail and "/proc/kcore" in found["proc"].detail
    assert "delegated" in found["cgroup"].detail
    assert not any(check.ok for name, check in found.items() if name not in ("runtime", "cgroup"))
    text = report(checks(None), container=list(found.values()))
    assert "NO  seccomp" in text and "The container or machine around this one" in text


def test_user_namespaces_turned_off_name_the_sysctl(tmp_path):
    root = fake_root(tmp_path, {"/proc/sys/user/max_user_namespaces": "0\n",
                                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1\n",
                                "/.dockerenv": ""})
    details = [check.detail for check in container_checks(root, environ={})]
    assert details[0] == "inside a Docker container"
    assert any("sysctl user.max_user_namespaces=" in d for d in details)
    assert any("kernel.apparmor_restrict_unprivileged_userns=0" in d for d in details)
