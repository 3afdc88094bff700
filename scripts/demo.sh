#!/usr/bin/env bash
# Brings up the example lab (three nodes, flannel-style VXLAN) and shows it working: a pod on
# one node answers a pod on another without NAT, and traffic to "the internet" leaves with the
# node's address. The lab keeps running afterwards: explore it with
# target/release/podnet lab status|exec|logs, remove it with `target/release/podnet lab down`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the lab creates network namespaces: run as root" >&2; exit 1; }
scripts/install-deps.sh
cargo build --release --quiet
podnet=target/release/podnet
example=examples/seed-004-cross-node.yaml

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

"$podnet" lab down --lab seed004 >/dev/null
step "$podnet" lab up "$example"
printf '\nA pod on k8s-w2 asks the whoami pod on k8s-w1: RemoteAddr is the client pod itself (no NAT).'
step "$podnet" lab exec client -- curl -s http://10.244.0.2
printf 'The same pod asks "the internet" (external namespace): RemoteAddr is node k8s-w2 (masquerade).'
step "$podnet" lab exec client -- curl -s http://203.0.113.10
printf 'How k8s-w1 reaches the other nodes'"'"' pod subnets: VXLAN routes, neighbours and FDB entries.'
step ip netns exec seed004_k8s-w1 ip route
step ip netns exec seed004_k8s-w1 ip neigh show dev podnet.1
step ip netns exec seed004_k8s-w1 bridge fdb show dev podnet.1
printf '\nThe lab keeps running: try `%s lab status`, `%s lab exec client -- ip route`;\nremove it with `%s lab down`.\n' "$podnet" "$podnet" "$podnet"
