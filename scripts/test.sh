#!/usr/bin/env bash
# The test command: formatting, lints (warnings are errors) and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f "$HOME/.cache/edge-suite/env" ] && . "$HOME/.cache/edge-suite/env"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== gateway layers (ARCHITECTURE.md)"
python3 scripts/check-layers.py
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --no-fail-fast
echo "== fuzz targets, 10 s each from the committed corpus (docs/security.md)"
CARGO_TARGET_DIR="$HOME/.cache/edge-suite/target-fuzz" bash scripts/fuzz.sh 10
echo "== deploy files (compose, Dockerfiles, workflows; no Docker engine)"
CHECK_DEPLOY_NO_BUILD=1 bash scripts/check-deploy-files.sh
echo "== dev stack end to end (scripts/dev-up.sh)"
DEVSTACK_TEST_SKIP_BUILD=1 python3 tests/e2e/devstack_test.py
echo "== production-parity stack (staging's task definition as local processes; docs/provisioner.md)"
python3 tests/e2e/parity_test.py
if [ "$(id -u)" -eq 0 ]; then
    echo "== images (buildah, local base, the binaries above) and the parity stack on them (podman)"
    bash scripts/build-images.sh
    PARITY_TEST_IMAGES=local python3 tests/e2e/parity_test.py
else
    echo "== images: skipped (buildah/podman run as root here; see docs/provisioner.md)"
fi
