"""docs/kubernetes.md: its values are well-formed, say what `nskernel doctor` asks for, and
are what deploy/kubernetes/singleuser-pod.yaml (the pod tests/test_pods.py plays) carries."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from nskernel.kernel.provisioner import CAPS

REPO = Path(__file__).parents[2]
DOC = REPO / "docs" / "kubernetes.md"
MANIFEST = REPO / "deploy" / "kubernetes" / "singleuser-pod.yaml"


def values() -> dict:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1
    return yaml.safe_load(blocks[0])


def test_the_pod_gets_what_doctor_names():
    single = values()["singleuser"]
    assert single["extraPodConfig"]["hostUsers"] is False
    profile = single["extraPodConfig"]["securityContext"]["seccompProfile"]
    assert profile == {"type": "Localhost", "localhostProfile": "nskernel.json"}
    assert (REPO / "deploy" / "seccomp" / profile["localhostProfile"]).is_file()
    container = single["extraContainerConfig"]["securityContext"]
    assert container["procMount"] == "Unmasked"
    assert container["appArmorProfile"]["type"] == "Unconfined"
    assert "privileged" not in container and "capabilities" not in container


def test_the_servers_start_with_caps_the_provisioner_knows():
    args = values()["hub"]["config"]["KubeSpawner"]["args"]
    caps = [arg.split("=")[0].removeprefix("--NskernelProvisioner.") for arg in args
            if arg.startswith("--NskernelProvisioner.")]
    assert caps and set(caps) <= set(CAPS)


def test_the_played_pod_is_the_one_the_values_make():
    single = values()["singleuser"]
    pod = yaml.safe_load(MANIFEST.read_text())
    notebook = pod["spec"]["containers"][0]
    assert pod["spec"]["hostUsers"] is single["extraPodConfig"]["hostUsers"]
    assert pod["spec"]["securityContext"]["seccompProfile"] == (
        single["extraPodConfig"]["securityContext"]["seccompProfile"])
    wanted = single["extraContainerConfig"]["securityContext"]
    assert {key: notebook["securityContext"][key] for key in wanted} == wanted
    assert notebook["args"] == [single["cmd"], *values()["hub"]["config"]["KubeSpawner"]["args"]]
    assert notebook["resources"]["limits"] == {"memory": single["memory"]["limit"],
                                               "cpu": str(single["cpu"]["limit"])}
