#!/usr/bin/env bash
# System packages for building and running the images without a registry
# (scripts/build-images.sh, PARITY_TEST_IMAGES in tests/e2e/parity_test.py; Debian):
#   buildah, podman, runc   build (chroot isolation, vfs) and run (runc; crun is refused here)
#   debootstrap             the Debian bookworm base standing in for distroless
#   tini                    /usr/bin/tini-static, PID 1 of the provisioner image
#   binutils                objcopy (strips the host-built binaries before they are copied in)
# Idempotent. Only as root (how Debian's buildah/podman run on these machines).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "images: not root; the image build and the containerised parity run are skipped"
    exit 0
fi
need=()
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ -x /usr/bin/tini-static ] || need+=(tini)
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    echo "images: apt-get install ${need[*]}"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
