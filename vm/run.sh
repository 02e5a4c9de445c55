#!/usr/bin/env bash
# `make vm-test`: nskernel on a real systemd + cgroup v2 machine. Builds (once; cached in
# $NSKERNEL_VM_DIR, default ~/.cache/nskernel/vm, which `make vm-clean` removes) a Debian
# bookworm guest from the mirror apt uses here, builds nskernel's wheel and a wheelhouse of
# its dependencies from this checkout, boots the guest under qemu (KVM if it answers within
# a short while, TCG otherwise) with those shared over 9p, and runs vm/guest/in-guest.sh
# there: the cgroup, limit, kernel and notebook 13/14 tests as root in a delegated scope, as
# an ordinary user outside any delegated cgroup, and as that user in a delegated scope of
# their systemd user session; then the JupyterHub test as root (its proxy is the one `make
# proxy` installed beside the venv, copied in). Prints each step's time and one summary line;
# fails if any run failed. Usage: vm/run.sh PYTHON (the checkout venv's python, which makes
# the wheels; its venv must hold node/, from `make proxy`).
set -euo pipefail
# All of it in one block, which bash reads whole before it runs any of it: an edit of this
# file during a run (a checkout, a merge) cannot change what the run does next.
{
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
python=${1:-$repo/.venv/bin/python}
# configurable-http-proxy, as `make proxy` installs it beside the venv (plain JavaScript: the
# guest's own Node runs it).
proxy_dir=$(dirname "$(dirname "$python")")/node
vm_dir=${NSKERNEL_VM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nskernel/vm}
timeout_s=${NSKERNEL_VM_TIMEOUT:-3000}

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mmdebstrap >/dev/null || command -v debootstrap >/dev/null || need+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
    echo "vm-test needs ${need[*]}: apt-get install ${need[*]}" >&2
    exit 2
fi
if [ ! -x "$proxy_dir/node_modules/.bin/configurable-http-proxy" ]; then
    echo "vm-test copies JupyterHub's proxy from $proxy_dir into the guest: make proxy" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "vm-test builds the guest with debootstrap and mkfs.ext4 -d: run it as root" >&2
    exit 2
fi

# One run at a time: another would remove this one's share and overlay (and the guest while
# it is rebuilt). The lock sits beside the cache, so `make vm-clean` leaves it be.
mkdir -p "$(dirname "$vm_dir")"
exec 9>"$vm_dir.lock"
if ! flock -n 9; then
    echo "vm: another vm-test is using $vm_dir: waiting for it"
    flock 9
fi

# The guest: rebuilt when what goes into it changes (the stamp is their hash).
stamp=$(cat "$here/build-guest.sh" "$here/guest/run-tests.sh" \
        "$here/guest/nskernel-vm-tests.service" | sha256sum | cut -c1-16)
if [ "$(cat "$vm_dir/stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$vm_dir/guest.img" ]; then
    start=$SECONDS
    rm -rf "$vm_dir"
    mkdir -p "$vm_dir"
    "$here/build-guest.sh" "$vm_dir"
    echo "$stamp" > "$vm_dir/stamp"
    echo "vm: guest built in $((SECONDS - start)) s (cached in $vm_dir)"
else
    echo "vm: guest cached in $vm_dir"
fi

# What the guest gets: the wheel of this checkout, a wheelhouse of everything it (with its
# hub extra) and the tests need (the guest has no network), the hub's proxy, the tests,
# notebooks and hub configuration (not the nskernel package: the guest imports the wheel's),
# and the script it runs.
run="$vm_dir/run"
rm -rf "$run"
mkdir -p "$run/share/wheels" "$run/share/src" "$run/share/results"
start=$SECONDS
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$run/share/wheels" "$repo"
wheel=$(ls "$run/share/wheels"/nskernel-*.whl)
"$python" -m pip wheel --quiet --wheel-dir "$run/share/wheelhouse" "$wheel[hub]" \
    pytest pytest-timeout nbval nbclient
rm -rf "$repo/build"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard tests notebooks deploy/jupyterhub pyproject.toml | xargs -0 cp --parents -t "$run/share/src")
cp -a "$proxy_dir" "$run/share/node"
cp "$here/guest/in-guest.sh" "$run/share/"
echo "vm: wheel $(basename "$wheel") and a wheelhouse of $(ls "$run/share/wheelhouse" | wc -l) wheels in $((SECONDS - start)) s"

qemu-img create -q -f qcow2 -b "$vm_dir/guest.img" -F raw "$run/disk.qcow2"
boot() {  # boot ACCEL: qemu in the background, its console in $run/console.log
    : > "$run/console.log"
    # timeout stops a guest that hangs (it passes a kill of its own on to qemu too).
    timeout "$timeout_s" qemu-system-x86_64 -accel "$1" -smp 2 -m 3G -display none -monitor none -no-reboot \
        -serial "file:$run/console.log" \
        -kernel "$vm_dir/vmlinuz" -initrd "$vm_dir/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all panic=-1 systemd.show_status=0" \
        -drive "file=$run/disk.qcow2,if=virtio,format=qcow2" \
        -virtfs "local,path=$run/share,mount_tag=share,security_model=none,id=share" \
        -nic none $2 &
    qemu=$!
}
started=$SECONDS
accel=kvm
if [ -w /dev/kvm ]; then
    boot kvm "-cpu host"
    # A guest that KVM runs prints its kernel's first line within seconds; one that hangs
    # (as on some nested machines) prints nothing: then TCG.
    for _ in $(seq 30); do
        grep -q "Linux version" "$run/console.log" 2>/dev/null && break
        kill -0 "$qemu" 2>/dev/null || break
        sleep 1
    done
    if ! grep -q "Linux version" "$run/console.log" 2>/dev/null; then
        kill "$qemu" 2>/dev/null || true
        wait "$qemu" 2>/dev/null || true
        echo "vm: KVM did not boot the guest within 30 s: TCG instead"
        accel=
    fi
else
    accel=
fi
if [ -z "$accel" ]; then
    accel=tcg
    qemu-img create -q -f qcow2 -b "$vm_dir/guest.img" -F raw "$run/disk.qcow2"
    started=$SECONDS
    boot tcg,thread=multi "-cpu max"
fi
# The guest powers itself off when its tests end; one that hangs is stopped by timeout.
status=0
wait "$qemu" || status=$?
total=$((SECONDS - started))
[ "$status" != 124 ] || echo "vm: the guest was still running after $timeout_s s: stopped"
results="$run/share/results"
cp "$run/console.log" "$results/" 2>/dev/null || true
echo "vm: guest ($accel) ran for $total s; its console: $results/console.log"
[ -f "$results/times" ] && sed 's/^/vm: /' "$results/times"
if [ ! -f "$results/summary" ]; then
    echo "vm-test: FAILED: the guest gave no summary (see $results/console.log)" >&2
    tail -30 "$run/console.log" >&2
    exit 1
fi
# CI keeps only the end of what it prints: name the failed tests and their last lines here.
for log in "$results"/*.log; do
    case "$log" in */console.log|*/guest.log) continue ;; esac
    failed=$(grep -E '^(FAILED|ERROR) ' "$log" || true)
    [ -z "$failed" ] || printf 'vm: in %s:\n%s\n' "$(basename "$log")" "$failed" >&2
done
cat "$results/summary"
grep -q '^vm-test: passed' "$results/summary"
exit
}
