#!/usr/bin/env bash
# Builds the gateway, metrics-agent and provisioner images with buildah on a machine that
# reaches no image registry (docs/provisioner.md, "Production-parity test"):
#   - the runtime base, localhost/edge-suite-base:bookworm, is made here: a Debian bookworm
#     minbase (debootstrap, Debian's mirror) with glibc and CA certificates, pruned of docs,
#     standing in for gcr.io/distroless/cc-debian12 (RUNTIME_IMAGE);
#   - the binaries are the ones cargo built on this machine, stripped of debug info and
#     staged in docker/prebuilt/ (BINARIES=prebuilt; no Rust toolchain in an image).
# Tags localhost/edge-suite/{gateway,metrics-agent,provisioner}:${IMAGES_TAG:-local}.
#
#   IMAGES_PROFILE=debug|release   which cargo build to package (default debug)
#   CARGO_TARGET_DIR               where cargo put it
# Needs root (buildah/podman as Debian ships them here), buildah, podman, debootstrap and
# tini (.ci/deps/images.sh). Storage: vfs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PROFILE="${IMAGES_PROFILE:-debug}"
TAG="${IMAGES_TAG:-local}"
TARGET_DIR="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')}"
BIN="$TARGET_DIR/$PROFILE"
BASE=localhost/edge-suite-base:bookworm
PODMAN=(podman --storage-driver vfs)
BUILDAH=(buildah --storage-driver vfs)
say() { printf 'build-images: %s\n' "$*"; }

for b in gateway echo-upstream metrics-agent provisioner; do
    [ -x "$BIN/$b" ] || { say "$BIN/$b is missing (cargo build --workspace)"; exit 1; }
done

if ! "${PODMAN[@]}" image exists "$BASE"; then
    rootfs="$(mktemp -d)"
    # mktemp makes it 0700; as the image's / it would lock the non-root user out.
    chmod 755 "$rootfs"
    say "making $BASE (debootstrap bookworm minbase)"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" >/dev/null
    rm -rf "$rootfs"/usr/share/{doc,man,info,locale,zoneinfo} "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
    rm -rf "$rootfs"
fi

say "staging the $PROFILE binaries in docker/prebuilt/"
rm -rf docker/prebuilt
mkdir -p docker/prebuilt/bin docker/prebuilt/wal
hc_target="$TARGET_DIR/healthcheck"
hc_flags=()
[ "$PROFILE" = release ] && hc_flags=(--release)
# A tiny crate of its own; built when missing or older than its source.
if [ ! -x "$hc_target/$PROFILE/healthcheck" ] || [ docker/healthcheck/src/main.rs -nt "$hc_target/$PROFILE/healthcheck" ]; then
    cargo build --quiet "${hc_flags[@]}" --manifest-path docker/healthcheck/Cargo.toml --target-dir "$hc_target"
fi
for b in gateway echo-upstream metrics-agent provisioner; do
    objcopy --strip-debug "$BIN/$b" "docker/prebuilt/bin/$b"
done
objcopy --strip-debug "$hc_target/$PROFILE/healthcheck" docker/prebuilt/bin/healthcheck
cp /usr/bin/tini-static docker/prebuilt/bin/tini-static

build() { # dockerfile target image
    say "buildah bud $1 --target $2 -> $3"
    "${BUILDAH[@]}" bud --quiet --format docker --isolation chroot --layers=false \
        --build-arg BINARIES=prebuilt --build-arg RUNTIME_IMAGE="$BASE" --build-arg RUST_IMAGE="$BASE" \
        -f "$1" --target "$2" -t "$3" "$ROOT" >/dev/null
}
build docker/gateway/Dockerfile gateway "localhost/edge-suite/gateway:$TAG"
build docker/metrics-agent/Dockerfile metrics-agent "localhost/edge-suite/metrics-agent:$TAG"
build docker/provisioner/Dockerfile provisioner "localhost/edge-suite/provisioner:$TAG"
rm -rf docker/prebuilt
# Only the newest build of each tag is kept (vfs stores every layer whole).
"${PODMAN[@]}" image prune -f >/dev/null 2>&1 || true
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep 'edge-suite' | sed 's/^/build-images: /'
