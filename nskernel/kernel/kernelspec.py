"""Write and install "Isolated Python" kernelspecs (the steps of ipykernel's kernelspec.py).

``make_argv`` -> ``kernel_dict`` -> ``write_spec`` -> ``install``: each step is usable alone,
and the top-level ``kernelspec/`` directory of the repository is what ``write_spec`` writes
for the default settings (a test keeps them equal).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, _is_valid_kernel_name

from nskernel.isolation import Isolation, IsolationError
from nskernel.kernel.argv import make_argv
from nskernel.limits import Limits

KERNEL_NAME = "isolated-python"
DISPLAY_NAME = "Isolated Python"
RESOURCES = Path(__file__).parent.parent / "resources"


def kernel_dict(spec: Isolation, display_name: str = DISPLAY_NAME,
                executable: str | None = None, limits: Limits | None = None,
                provisioner: bool = False, remote: list[str] | None = None) -> dict[str, Any]:
    """kernel.json. With ``provisioner``, the kernel is started through
    :mod:`nskernel.kernel.provisioner`, whose config carries the settings (the argv is the same
    command, for a reader and for a client that knows no provisioners). With ``remote`` (a
    list of hosts, or empty: the server's configuration names them), on another host by
    gateway-provisioners' DistributedProvisioner, through :mod:`nskernel.kernel.remote`."""
    described = {"namespaces": list(spec.namespaces), "hostname": spec.hostname}
    if spec.readonly or spec.seccomp:
        described.update(readonly=spec.readonly, seccomp=spec.seccomp)
    if spec.visible_only:
        described.update(visible_only=True, workdir="rw" if spec.workdir_writable else "ro")
    if spec.hide:
        described["hide"] = list(spec.hide)
    if limits:
        described["limits"] = dict(limits.describe())
    metadata: dict[str, Any] = {"debugger": True, "nskernel": described}
    if provisioner:
        from nskernel.kernel import provisioner as the_provisioner

        metadata["kernel_provisioner"] = {
            "provisioner_name": the_provisioner.NAME,
            "config": the_provisioner.request_for(spec, limits or Limits())}
    argv = make_argv(spec, executable, limits)
    if remote is not None:
        from nskernel.kernel.remote import kernelspec_argv

        argv = kernelspec_argv(argv)
        metadata["supported_encryption"] = ["curve"]
        metadata["kernel_provisioner"] = {
            "provisioner_name": "distributed-provisioner",
            "config": {"remote_hosts": remote} if remote else {}}
    return {
        "argv": argv,
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": metadata,
        "kernel_protocol_version": "5.5",
    }


def write_spec(path: Path, spec: Isolation, display_name: str = DISPLAY_NAME,
               executable: str | None = None, limits: Limits | None = None,
               provisioner: bool = False, remote: list[str] | None = None) -> Path:
    """Write kernel.json and the logos into ``path`` (created; must not exist)."""
    shutil.copytree(RESOURCES, path)
    with open(path / "kernel.json", "w") as handle:
        json.dump(kernel_dict(spec, display_name, executable, limits, provisioner, remote),
                  handle, indent=1)
        handle.write("\n")
    return path


def check_name(name: str) -> str:
    if not _is_valid_kernel_name(name):
        raise IsolationError(
            f"bad kernel name {name!r}: use only letters, digits, '.', '_' and '-'")
    return name


def install(spec: Isolation, kernel_name: str = KERNEL_NAME, display_name: str = DISPLAY_NAME,
            user: bool = False, prefix: str | None = None,
            kernel_spec_manager: KernelSpecManager | None = None,
            limits: Limits | None = None, provisioner: bool = False,
            remote: list[str] | None = None) -> str:
    """Install the kernelspec where Jupyter finds it; return the installed directory."""
    check_name(kernel_name)
    manager = kernel_spec_manager or KernelSpecManager()
    with tempfile.TemporaryDirectory() as tmp:
        source = write_spec(Path(tmp) / kernel_name, spec, display_name, limits=limits,
                            provisioner=provisioner, remote=remote)
        return manager.install_kernel_spec(str(source), kernel_name, user=user, prefix=prefix)
