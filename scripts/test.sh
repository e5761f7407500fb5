#!/usr/bin/env bash
# The test command: formatting, lints (warnings are errors) and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f "$HOME/.cache/edge-suite/env" ] && . "$HOME/.cache/edge-suite/env"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
