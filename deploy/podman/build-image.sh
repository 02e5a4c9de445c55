#!/usr/bin/env bash
# Build the local single-user image the pod tests run, with no image registry: a minimal
# Debian bookworm root filesystem (mmdebstrap from the Debian mirror apt uses here) imported
# into podman, then deploy/podman/Containerfile on top, which installs the nskernel wheel
# built from this checkout and its dependencies (wheels fetched from PyPI by pip on the host:
# the build itself runs without network).
#
# Both layers are cached, each under a tag keyed on what it is made of: the base on its
# package list, the image on the wheels. A second run with nothing changed builds nothing.
# Prints the image's name (the last line); needs root (mmdebstrap, rootful podman).
#
# Usage: deploy/podman/build-image.sh [PYTHON]   (PYTHON runs pip; default: .venv/bin/python)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${1:-$repo/.venv/bin/python}
podman=$here/podman.sh  # podman as this machine needs it run (see there)

# What the kernel and its tests use in the container: Python with venv, libseccomp
# (--seccomp), ip and ping (the lab's tests), ps (the tests' process checks).
packages=python3,python3-venv,libseccomp2,iproute2,iputils-ping,procps,ca-certificates
base=localhost/nskernel-base:$(printf '%s bookworm minbase' "$packages" | sha256sum | cut -c1-12)
if ! "$podman" image exists "$base"; then
    start=$SECONDS
    mirror=$("$repo/vm/mirror.sh" bookworm)
    tarball=$(mktemp --suffix=.tar)
    trap 'rm -f "$tarball"' EXIT
    mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "$tarball" "$mirror"
    "$podman" import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$base" >/dev/null
    rm -f "$tarball"
    echo "build-image: base $base from $mirror: $((SECONDS - start)) s" >&2
fi

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
# The checkout's wheel, then its dependencies and Jupyter Server's (the pod's server).
log=$wheels/pip.log
if ! { "$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels/own" "$repo" &&
       "$python" -m pip download --quiet --only-binary=:all: --dest "$wheels/deps" \
           "$wheels"/own/nskernel-*.whl jupyter_server; } >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
# Keyed on the wheels' contents (names and CRCs: a rebuilt wheel differs in its timestamps only).
key=$("$python" - "$wheels" "$here/Containerfile" <<'PY'
import hashlib, pathlib, sys, zipfile
digest = hashlib.sha256(pathlib.Path(sys.argv[2]).read_bytes())
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*/*.whl")):
    digest.update(wheel.name.encode())
    for info in sorted(zipfile.ZipFile(wheel).infolist(), key=lambda info: info.filename):
        digest.update(f"{info.filename}:{info.CRC}".encode())
print(digest.hexdigest()[:12])
PY
)
image=localhost/nskernel-singleuser:$key
if ! "$podman" image exists "$image"; then
    start=$SECONDS
    "$podman" build --quiet --network=none --build-arg "BASE=$base" --tag "$image" \
        --file "$here/Containerfile" "$wheels" >/dev/null
    echo "build-image: $image: $((SECONDS - start)) s" >&2
fi
"$podman" tag "$image" localhost/nskernel-singleuser:latest
echo "$image"
