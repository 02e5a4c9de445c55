#!/bin/sh
# podman, as the build and the pod tests run it on this machine, with no setting of
# seccomp, /proc, AppArmor or user namespaces changed: containers.conf beside this file
# (rlimits a machine without CAP_SYS_RESOURCE can set), and runc instead of crun where the
# cgroups are hybrid (v1 controllers and a v2 hierarchy with controllers of its own at
# /sys/fs/cgroup/unified), which crun refuses ("cgroups in hybrid mode not supported").
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF="$here/containers.conf"
if grep -q . /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
    exec podman --runtime runc "$@"
fi
exec podman "$@"
