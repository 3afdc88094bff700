#!/usr/bin/env bash
# Brings up the example lab and shows it working. The lab keeps running afterwards:
# explore it with target/release/podnet lab status|exec|logs, remove it with `lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the lab creates network namespaces: run as root" >&2; exit 1; }
scripts/install-deps.sh
cargo build --release --quiet
podnet=target/release/podnet
example=examples/seed-002-pause-nginx.yaml

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

"$podnet" lab down --lab seed002 >/dev/null
step "$podnet" lab up "$example"
step "$podnet" lab exec client -- curl -s http://10.0.10.2
step ip netns exec seed002_default_web ip route
step ip netns exec seed002_node1 ip -br addr show cni_net0
printf '\nThe lab keeps running: try `%s lab status`, `%s lab exec web -- hostname`;\nremove it with `%s lab down`.\n' "$podnet" "$podnet" "$podnet"
