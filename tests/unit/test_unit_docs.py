"""docs/kubernetes.md: its values are well-formed and say what `nskernel doctor` asks for."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from nskernel.kernel.provisioner import CAPS

DOC = Path(__file__).parents[2] / "docs" / "kubernetes.md"


def values() -> dict:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1
    return yaml.safe_load(blocks[0])


def test_the_pod_gets_what_doctor_names():
    single = values()["singleuser"]
    assert single["extraPodConfig"]["hostUsers"] is False
    assert single["extraPodConfig"]["securityContext"]["seccompProfile"]["type"] == "Unconfined"
    container = single["extraContainerConfig"]["securityContext"]
    assert container["procMount"] == "Unmasked"
    assert container["appArmorProfile"]["type"] == "Unconfined"
    assert "privileged" not in container and "capabilities" not in container


def test_the_servers_start_with_caps_the_provisioner_knows():
    args = values()["hub"]["config"]["KubeSpawner"]["args"]
    caps = [arg.split("=")[0].removeprefix("--NskernelProvisioner.") for arg in args
            if arg.startswith("--NskernelProvisioner.")]
    assert caps and set(caps) <= set(CAPS)
