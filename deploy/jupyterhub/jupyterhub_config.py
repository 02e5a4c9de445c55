"""JupyterHub on one machine, serving Isolated Python to the machine's own users, or to a
class (deploy/jupyterhub/README.md).

    make hub        # as root; then open http://127.0.0.1:8000 and log in as a local user

Each user logs in with their system password (PAM; a class: one shared password) and gets a
Jupyter server of their own, run as them (LocalProcessSpawner, in a cgroup of the user's own
where the hub may make one; where systemd runs and jupyterhub-systemdspawner is installed, a
systemd unit with MemoryMax and Delegate=yes, see below): no Docker. Its kernel is Isolated
Python (beside the stock one, for notebook 08), started through the ``nskernel-provisioner``
kernel provisioner:
rootless for that user (a user namespace of their own), with its own PIDs, network, mounts,
hostname, IPC and /tmp, a read-only host, seccomp, and limits that the user's kernelspec
cannot raise (the server is started with the provisioner's caps). One user's fork bomb or
memory hog stops at their own limits; nobody sees another's processes, files in /tmp or
network labs. When the hub stops, it stops every user's server, and their kernels with them.

Settings, from the environment (all optional):

- NSKERNEL_HUB_PORT: the public port on 127.0.0.1 (8000); NSKERNEL_HUB_IP to listen
  elsewhere. NSKERNEL_HUB_API_PORT (8081) and NSKERNEL_HUB_PROXY_API_PORT (8001): the
  hub's and the proxy's own ports, on 127.0.0.1.
- NSKERNEL_HUB_STATE: where the hub keeps its database, cookie secret and the kernelspec
  it gives users (``/var/lib/nskernel-hub``).
- NSKERNEL_HUB_MEMORY (1G), NSKERNEL_HUB_PIDS (256): each kernel's limits (rlimits, which
  need nothing of the machine). NSKERNEL_HUB_CPUS (unset): a share of the CPUs for each
  kernel, only where users may make cgroups (a delegated cgroup v2 subtree, as systemd's
  user slices with Delegate=yes); elsewhere such a kernel refuses to start, saying why.
- NSKERNEL_HUB_USERS: space-separated users who may log in (default: every local user).
- NSKERNEL_HUB_ADMIN_TOKEN: a token with admin rights for scripts (the tests use it to add
  users and start their servers through the REST API).
- NSKERNEL_HUB_PROXY: the configurable-http-proxy command (default: the one `make hub`
  installs beside the venv, else the one on PATH).

For a class (deploy/jupyterhub/README.md says more):

- NSKERNEL_HUB_CLASS: a class list, one student a line. The students log in with one shared
  password, NSKERNEL_HUB_PASSWORD (8 characters or more), and the hub makes each one's Unix
  account at their first login, in the group NSKERNEL_HUB_CLASS_GROUP (nskernel-class); it
  opens no account outside that group. Without a class list: PAM, as above (and with
  NSKERNEL_HUB_CLASS_GROUP alone, the accounts are made all the same).
- NSKERNEL_HUB_COURSE: the notebooks copied into each user's ~/nskernel-course when their
  server starts (what they lack; all, the first time), beside ./reset-my-copy (default: this
  checkout's notebooks/; "none": no copy).
- NSKERNEL_HUB_MAX_KERNELS (3): Isolated Python kernels one user runs at once.
- NSKERNEL_HUB_STUDENT_MEMORY (2G), NSKERNEL_HUB_STUDENT_PIDS (1024), NSKERNEL_HUB_STUDENT_CPUS
  (unset): all of one user's processes together, and an equal CPU share for each user, where
  the hub may make cgroups (root on most machines); elsewhere the hub's log says why not.
- NSKERNEL_HUB_STOCK_KERNEL (yes): the stock Python kernel beside Isolated Python (notebook 08
  compares the two); "no" to offer Isolated Python only.
- NSKERNEL_HUB_CULL_IDLE (3600): stop a server idle this many seconds (jupyterhub-idle-culler,
  which `make hub` installs); 0: never.
"""

# ruff: noqa: F821  (get_config is given by JupyterHub when it reads this file)
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from nskernel.isolation import Isolation
from nskernel.kernel import kernelspec
from nskernel.limits import Limits, parse_size

sys.path.insert(0, str(Path(__file__).parent))
import classroom  # noqa: E402  (beside this file)

c = get_config()  # noqa: F821

env = os.environ.get

# Every user's server runs this venv's interpreter: they must be able to reach it.
for directory in Path(sys.prefix).parents:
    if not os.stat(directory).st_mode & 0o001:
        sys.exit(f"nskernel hub: other users cannot enter {directory}, so their servers "
                 f"cannot run {sys.executable}: clone nskernel where they can (e.g. /opt), "
                 f"or chmod o+x {directory}")
state = Path(env("NSKERNEL_HUB_STATE", "/var/lib/nskernel-hub"))
state.mkdir(parents=True, exist_ok=True)
state.chmod(0o755)  # users' servers read the kernelspec here

# ---------------------------------------------------------------- where the hub listens
c.JupyterHub.bind_url = f"http://{env('NSKERNEL_HUB_IP', '127.0.0.1')}:" \
                        f"{env('NSKERNEL_HUB_PORT', '8000')}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env('NSKERNEL_HUB_API_PORT', '8081')}"
c.ConfigurableHTTPProxy.api_url = \
    f"http://127.0.0.1:{env('NSKERNEL_HUB_PROXY_API_PORT', '8001')}"
beside_venv = Path(sys.prefix, "node", "node_modules", ".bin", "configurable-http-proxy")
proxy = env("NSKERNEL_HUB_PROXY") or (str(beside_venv) if beside_venv.exists() else
                                      shutil.which("configurable-http-proxy"))
if proxy:
    c.ConfigurableHTTPProxy.command = [proxy]
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every user's server

# ---------------------------------------------------------------- who may log in
users = env("NSKERNEL_HUB_USERS", "").split()
class_group = None
if env("NSKERNEL_HUB_CLASS"):
    # A lab room: the class list and one password; the hub makes the accounts.
    try:
        users += classroom.read_class_list(Path(env("NSKERNEL_HUB_CLASS")))
    except classroom.ClassError as error:
        sys.exit(f"nskernel hub: {error}")
    if len(env("NSKERNEL_HUB_PASSWORD", "")) < 8:
        sys.exit("nskernel hub: a class (NSKERNEL_HUB_CLASS) logs in with one password: set "
                 "NSKERNEL_HUB_PASSWORD, 8 characters or more")
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = env("NSKERNEL_HUB_PASSWORD")
    class_group = "nskernel-class"
# The hub makes the accounts of a class (or of whoever an authenticator of your own lets in,
# with NSKERNEL_HUB_CLASS_GROUP alone: see README.md).
class_group = env("NSKERNEL_HUB_CLASS_GROUP", class_group)
if users:
    c.Authenticator.allowed_users = set(users)
else:
    c.Authenticator.allow_all = True
c.JupyterHub.services = []
c.JupyterHub.load_roles = []
admin_token = env("NSKERNEL_HUB_ADMIN_TOKEN")
if admin_token:
    c.JupyterHub.services.append({"name": "nskernel-admin", "api_token": admin_token})
    c.JupyterHub.load_roles.append({
        "name": "nskernel-admin", "services": ["nskernel-admin"],
        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"]})

# An idle server is stopped (its kernels with it): a class of 30 leaves many open tabs.
cull_idle = int(env("NSKERNEL_HUB_CULL_IDLE", "3600"))
if cull_idle:
    try:
        import jupyterhub_idle_culler  # noqa: F401

        c.JupyterHub.services.append({
            "name": "idle-culler",
            "command": [sys.executable, "-m", "jupyterhub_idle_culler",
                        f"--timeout={cull_idle}"]})
        c.JupyterHub.load_roles.append({
            "name": "idle-culler", "services": ["idle-culler"],
            "scopes": ["list:users", "read:users:activity", "read:servers",
                       "delete:servers"]})
    except ImportError:
        print("nskernel hub: jupyterhub-idle-culler is not installed: idle servers run on "
              "(pip install jupyterhub-idle-culler, or NSKERNEL_HUB_CULL_IDLE=0)",
              file=sys.stderr)

# ---------------------------------------------------------------- what each user gets
limits = Limits(memory=parse_size(env("NSKERNEL_HUB_MEMORY", "1G"), "NSKERNEL_HUB_MEMORY"),
                pids=int(env("NSKERNEL_HUB_PIDS", "256")),
                cpus=float(env("NSKERNEL_HUB_CPUS")) if env("NSKERNEL_HUB_CPUS") else None)
kernels = state / "kernels"
if kernels.exists():
    shutil.rmtree(kernels)
kernels.mkdir()
spec = Isolation(**{**{name: True for name in ("pid", "net", "mount", "uts", "ipc")},
                    "hostname": "isolated", "readonly": True, "seccomp": True,
                    "tmpfs_size": "1g"})
written = kernelspec.write_spec(kernels / kernelspec.KERNEL_NAME, spec,
                                executable=sys.executable, limits=limits, provisioner=True)
os.chmod(written, 0o755)
for path in written.iterdir():
    path.chmod(0o644)
caps = [f"--NskernelProvisioner.max_memory={limits.memory}",
        f"--NskernelProvisioner.max_pids={limits.pids}",
        "--NskernelProvisioner.force_readonly=True", "--NskernelProvisioner.force_seccomp=True",
        f"--NskernelProvisioner.max_kernels={int(env('NSKERNEL_HUB_MAX_KERNELS', '3'))}"]
if limits.cpus:
    caps.append(f"--NskernelProvisioner.max_cpus={limits.cpus}")

# Each user's processes together (server, kernels, terminals), where the spawner can bind them.
student_memory = parse_size(env("NSKERNEL_HUB_STUDENT_MEMORY", "2G"), "NSKERNEL_HUB_STUDENT_MEMORY")
student_pids = int(env("NSKERNEL_HUB_STUDENT_PIDS", "1024"))
student_cpus = float(env("NSKERNEL_HUB_STUDENT_CPUS")) if env("NSKERNEL_HUB_STUDENT_CPUS") else None

# Where systemd runs (and jupyterhub-systemdspawner is installed: `pip install
# jupyterhub-systemdspawner`), each user's server is a systemd unit with MemoryMax and
# TasksMax (the user's, for all of their processes together) and Delegate=yes: the user's
# kernels then get cgroups of their own inside it, so --memory holds for each kernel's
# whole tree, tmpfs files and shared memory included, as rlimits alone cannot. Elsewhere
# (no systemd, as on the machines the tests run on) each server is a plain process, in a
# cgroup the hub makes for the user where it may, and each kernel's limits are rlimits
# (see `nskernel doctor`). NSKERNEL_HUB_SPAWNER=local chooses the plain process anyway.
systemd_spawner = None
if Path("/run/systemd/system").is_dir() and env("NSKERNEL_HUB_SPAWNER") != "local":
    try:
        import systemdspawner  # noqa: F401

        systemd_spawner = "systemdspawner.SystemdSpawner"
    except ImportError:
        print("nskernel hub: systemd runs here, but jupyterhub-systemdspawner is not "
              "installed: a user gets a cgroup only where the hub may make one, and kernels "
              "get rlimits (pip install jupyterhub-systemdspawner for a delegated cgroup "
              "per user)", file=sys.stderr)
if systemd_spawner:
    c.JupyterHub.spawner_class = systemd_spawner
    c.SystemdSpawner.mem_limit = str(student_memory)
    c.SystemdSpawner.unit_extra_properties = {"Delegate": "yes", "TasksMax": str(student_pids)}
    if student_cpus:
        c.SystemdSpawner.cpu_limit = student_cpus
    c.SystemdSpawner.isolate_tmp = True
else:
    # A cgroup per user, where the hub may make one: an equal CPU share each, and limits
    # for all of a user's processes together (see classroom.py).
    c.JupyterHub.spawner_class = classroom.ClassroomSpawner
    c.ClassroomSpawner.student_memory = student_memory
    c.ClassroomSpawner.student_pids = student_pids
    c.ClassroomSpawner.student_cpus = student_cpus

# The course, copied into each home as its user (an account made first, for a class).
course = env("NSKERNEL_HUB_COURSE", str(Path(__file__).resolve().parents[2] / "notebooks"))
published = None if course == "none" else classroom.publish_course(Path(course),
                                                                   state / "course")
c.Spawner.pre_spawn_hook = classroom.student_hook(published, class_group)

# Notebook 08 compares Isolated Python with the stock kernel (ipykernel's own "python3"),
# which runs as the user, unisolated, within their cgroup where there is one.
offered = [kernelspec.KERNEL_NAME]
if env("NSKERNEL_HUB_STOCK_KERNEL", "yes") != "no":
    offered.append("python3")
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.args = [*caps, *(f"--KernelSpecManager.allowed_kernelspecs={name}" for name in offered)]
c.Spawner.environment = {"JUPYTER_PATH": str(state)}
c.Spawner.default_url = "/lab" if published is None else f"/lab/tree/{classroom.COURSE_DIR}"
c.Spawner.http_timeout = 60
