"""The locks a process is shut in by beyond its namespaces: cgroups (memory, pids, cpu), the
seccomp filter, the filesystem view (read-only host, private /dev, hidden cgroups) and the
cgroup parking that lets a kernel start cells already inside their cgroups."""
