#!/usr/bin/env bash
# Build the cached guest for `make vm-test`: Debian bookworm from the mirror apt already uses
# here, systemd as PID 1, cgroup v2 only. Writes into $1 (the cache directory):
#   guest.img  the root filesystem (ext4, raw; never booted itself: each run boots a qcow2
#              overlay on it, so a run leaves it as it was)
#   vmlinuz, initrd.img  the guest's own kernel and initramfs, for qemu -kernel/-initrd
#   stamp      what it was built from (this script's hash): a changed script rebuilds
# Needs root (debootstrap, mkfs.ext4 -d keeps the owners), mmdebstrap or debootstrap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
mirror=$("$here/mirror.sh" bookworm)
# What the focused tests need in the guest: systemd (+ logind and D-Bus for a user session),
# the kernel, Python with venv (nskernel goes in from a wheel), the tools the tests and
# notebooks call (ip, ps/pgrep, mount/setpriv/unshare/ipcmk, nft, ping, useradd), libseccomp,
# and Node for the hub test's proxy (configurable-http-proxy, plain JavaScript, comes from the
# host's npm install at each run: the guest has no network to fetch it).
packages=systemd-sysv,udev,dbus,libpam-systemd,linux-image-amd64,kmod,python3,python3-venv,iproute2,util-linux,procps,libseccomp2,nftables,iputils-ping,passwd,login,nodejs
root="$out/root.tmp"
rm -rf "$root" "$out/guest.img.tmp"
mkdir -p "$out"
start=$SECONDS
if command -v mmdebstrap >/dev/null; then
    mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "$root" "$mirror"
else
    debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >/dev/null
fi
echo "vm: debootstrap of bookworm from $mirror: $((SECONDS - start)) s"

# The guest's own configuration: no network, a console on ttyS0, root without a password on
# the console only, the share (a 9p mount tag "share") mounted by the test unit itself.
echo nskernel-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nskernel-vm\n' > "$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
chroot "$root" passwd -d root >/dev/null
# An ordinary user for the rootless runs, with a lingering systemd user session.
chroot "$root" useradd --create-home --shell /bin/bash --uid 1000 learner
mkdir -p "$root/var/lib/systemd/linger"
touch "$root/var/lib/systemd/linger/learner"
install -m 0755 "$here/guest/run-tests.sh" "$root/usr/local/sbin/nskernel-vm-tests"
install -m 0644 "$here/guest/nskernel-vm-tests.service" "$root/etc/systemd/system/"
ln -sf /etc/systemd/system/nskernel-vm-tests.service \
    "$root/etc/systemd/system/multi-user.target.wants/nskernel-vm-tests.service"
# Nothing in the guest waits for a network or a clock it does not have.
for unit in systemd-timesyncd apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
            fstrim.timer systemd-networkd-wait-online; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit.service" 2>/dev/null || true
done
ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
cp -L "$root/vmlinuz" "$out/vmlinuz.tmp"
cp -L "$root/initrd.img" "$out/initrd.img.tmp"
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
start=$SECONDS
truncate -s 4G "$out/guest.img.tmp"
mkfs.ext4 -q -F -L nskernel-vm -d "$root" "$out/guest.img.tmp"
echo "vm: mkfs.ext4 -d of the 4 GB image: $((SECONDS - start)) s"
rm -rf "$root"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/guest.img.tmp" "$out/guest.img"
