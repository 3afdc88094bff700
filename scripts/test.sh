#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests, root tests (network
# namespaces, CNI plugins, podman, labs). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the tests create network namespaces: run as root" >&2; exit 1; }
scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
