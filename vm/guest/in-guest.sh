#!/bin/bash
# Runs in the guest (as root, from the nskernel-vm-tests unit at boot), from the share the
# host made (vm/run.sh): install nskernel from the wheel with its dependencies from the
# wheelhouse (no network here), then the focused tests three ways, and the hub test:
#   root     as root, in a scope with Delegate=yes (systemd-run --scope)
#   outside  as the user learner, in this unit's cgroup (not theirs): limits are rlimits
#   user     as learner, in a scope with Delegate=yes of their lingering systemd user session
#   hub      tests/test_jupyterhub.py as root in such a scope: a real JupyterHub, its proxy
#            run by the guest's Node, serving Isolated Python to users the test makes
# Writes results/times, results/summary (one line) and a log per run beside them.
set -u
share=/mnt/share
results=$share/results
mkdir -p "$results"
exec > >(tee -a "$results/guest.log") 2>&1
uptime_s() { cut -d. -f1 /proc/uptime; }
echo "booted in $(uptime_s) s (to the test unit)" >> "$results/times"
cgroup_fs=$(stat -fc %T /sys/fs/cgroup)
echo "guest: $(uname -r), systemd $(systemctl --version | head -1 | cut -d' ' -f2), /sys/fs/cgroup is $cgroup_fs: $(cat /sys/fs/cgroup/cgroup.controllers)"

start=$(uptime_s)
python3 -m venv /opt/nskernel
wheel=$(ls "$share"/wheels/nskernel-*.whl)
/opt/nskernel/bin/pip install --quiet --no-compile --no-index --find-links "$share/wheelhouse" \
    "$wheel[hub]" pytest pytest-timeout nbval nbclient
# The hub's proxy where deploy/jupyterhub/jupyterhub_config.py and the test look: beside the venv.
cp -a "$share/node" /opt/nskernel/node
echo "installed the wheel and its wheelhouse in $(( $(uptime_s) - start )) s" >> "$results/times"
# The tests and notebooks, without the package: `import nskernel` finds the wheel's.
rm -rf /opt/src && cp -r "$share/src" /opt/src && chmod -R a+rX /opt/src
bin=/opt/nskernel/bin

# Slow Python (TCG): each test and cell gets far more time than on the host, and the hub
# test's own waits are multiplied (NSKERNEL_TEST_TIME_FACTOR: upper bounds, never shortened).
# Bytecode is written as modules are first imported (by the root run), not for all of every
# wheel.
tests=(tests/test_vm_cgroup_v2.py tests/test_kernel_limits.py tests/test_walls_kernel_cgroup.py
       tests/test_locks.py::test_past_the_memory_limit_allocation_fails_and_below_it_works
       tests/test_locks.py::test_a_fork_bomb_stops_at_the_pids_limit_with_eagain
       tests/test_locks.py::test_past_the_cpu_time_the_cell_ends_with_one_line
       tests/test_locks.py::test_memory_limit_holds_for_all_the_processes_together
       tests/test_locks.py::test_cpus_gives_the_cell_a_share_or_says_why_it_cannot
       tests/test_locks.py::test_cpu_time_is_counted_over_the_whole_cell
       tests/test_locks.py::test_stats_say_what_the_cell_used
       tests/test_locks.py::test_a_cell_cannot_loosen_or_leave_its_cgroups
       notebooks/13-cgroups.ipynb notebooks/14-your-own-container.ipynb
       notebooks/solutions/13-cgroups.ipynb notebooks/solutions/14-your-own-container.ipynb)
hub_tests=(tests/test_jupyterhub.py)
# The walls of the hostile rounds that a systemd + cgroup v2 machine could change: a cell's
# own cgroups, tmpfs and shared memory past --memory, the kernel's /dev, descriptors from
# outside, the login session's keys (each with its rootless half, as another user).
walls_tests=(tests/test_walls_cgroups.py tests/test_walls_memory.py tests/test_walls_devices.py
             tests/test_locks_view.py
             tests/test_walls.py::test_no_descriptor_from_outside_reaches_the_host
             tests/test_walls_keyring_seccomp.py::test_the_sessions_key_is_out_of_reach_and_unchanged)
pytest=(env PATH=$bin:/usr/sbin:/usr/bin:/sbin:/bin NSKERNEL_TEST_TIME_FACTOR=20
        "$bin/python" -m pytest -p no:randomly
        -o addopts= -p no:cacheprovider --nbval --nbval-sanitize-with notebooks/sanitize.cfg
        --nbval-cell-timeout=600 --timeout=900 -rfEs -q)
user_env=(XDG_RUNTIME_DIR=/run/user/1000 DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus
          HOME=/home/learner)
summary=()
failed=0
run() {  # run NAME EXPECT TESTS COMMAND...: one run of the tests named in the array TESTS,
         # its log and junit in results/
    local name=$1 expect=$2
    local -n chosen=$3
    shift 3
    local begin=$(uptime_s)
    echo "== $name: $*"
    (cd /opt/src && "$@" env NSKERNEL_VM_EXPECT="$expect" "${pytest[@]}" \
        --junitxml=/tmp/junit-$name.xml "${chosen[@]}") > "$results/$name.log" 2>&1
    local status=$?
    cp /tmp/junit-$name.xml "$results/" 2>/dev/null
    tail -15 "$results/$name.log"
    local line=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$results/$name.log" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    echo "$name tests: $(( $(uptime_s) - begin )) s ($line)" >> "$results/times"
    summary+=("$name: ${line:-no result}")
    [ $status = 0 ] || failed=1
}
doctor() {  # doctor NAME COMMAND...: what nskernel doctor says there
    echo "== doctor, $1"
    local name=$1
    shift
    (cd /opt/src && "$@" "$bin/nskernel" doctor) > "$results/doctor-$name.txt" 2>&1
    cat "$results/doctor-$name.txt"
}
scope=(systemd-run --quiet --scope -p Delegate=yes)
user_scope=(runuser -u learner -- env "${user_env[@]}" systemd-run --user --quiet --scope
            -p Delegate=yes)
outside=(runuser -u learner -- env "${user_env[@]}")

doctor root "${scope[@]}"
doctor outside "${outside[@]}"
doctor user "${user_scope[@]}"
run root delegated tests "${scope[@]}"
run outside rlimits tests "${outside[@]}"
run user delegated tests "${user_scope[@]}"
run hub delegated hub_tests "${scope[@]}"
run walls delegated walls_tests "${scope[@]}"

# The kernel's log (the OOM killer's choices, among others), for whoever reads a failure.
dmesg > "$results/dmesg.txt" 2>&1

# Nothing of ours may be left in any cgroup.
left=$(find /sys/fs/cgroup -name 'nskernel.*' -type d)
if [ -n "$left" ]; then
    echo "cgroups left behind: $left"
    failed=1
fi
verdict=passed
[ $failed = 0 ] || verdict=FAILED
echo "vm-test: $verdict on $cgroup_fs (pure cgroup v2, systemd as PID 1; controllers $(cat /sys/fs/cgroup/cgroup.controllers)): $(IFS=';'; echo "${summary[*]}" | sed 's/;/; /g')" > "$results/summary"
cat "$results/summary"
sync
