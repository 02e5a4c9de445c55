#!/bin/sh
# Baked into the guest image (/usr/local/sbin/nskernel-vm-tests): mount the host's share and
# hand over to the script it carries (vm/guest/in-guest.sh, so that changing what the guest
# runs needs no new image).
set -e
mkdir -p /mnt/share
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /mnt/share
exec /bin/bash /mnt/share/in-guest.sh
