#!/usr/bin/env bash
# Brings up the example lab (three nodes, flannel-style VXLAN, seed 004's pods and Services) and
# shows it working: a pod on one node answers a pod on another without NAT, a ClusterIP is
# DNATed to its pod, a NodePort answers from outside the cluster with the node as the client,
# traffic to "the internet" leaves with the node's address, and pods find Services, pods and the
# internet by name through the cluster DNS (kube-system/coredns behind kube-dns, 10.96.0.10), and
# a NetworkPolicy closes a pod to all but the pods it names, until the client is labelled so. The lab keeps running
# afterwards: explore it with target/release/podnet lab status|get|exec|logs, remove it with
# `target/release/podnet lab down`.
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
cluster_ip=$("$podnet" lab get services clusterip-dnat | python3 -c 'import json, sys; print(json.load(sys.stdin)["items"][0]["spec"]["clusterIP"])')
# The agents program the Services as soon as they see them; wait until the first one answers.
for _ in $(seq 50); do "$podnet" lab exec client -- curl -s --max-time 1 -o /dev/null "http://$cluster_ip" && break; sleep 0.1; done
printf '\nA pod on k8s-w2 asks the whoami pod on k8s-w1: RemoteAddr is the client pod itself (no NAT).'
step "$podnet" lab exec client -- curl -s http://10.244.0.2
printf 'The same pod asks the Service clusterip-dnat (ClusterIP %s): DNAT to the pod, whose own IP whoami shows.' "$cluster_ip"
step "$podnet" lab exec client -- curl -s "http://$cluster_ip"
printf 'A client outside the cluster asks NodePort 31010 on k8s-w2: the pod runs on k8s-w1, so k8s-w2 SNATs (RemoteAddr: its tunnel address).'
step ip netns exec seed004_external curl -s http://192.168.10.12:31010
printf 'The pod asks "the internet" (external namespace): RemoteAddr is node k8s-w2 (masquerade).'
step "$podnet" lab exec client -- curl -s http://203.0.113.10
printf 'Names: the pod'"'"'s resolv.conf points at the kube-dns Service, whose pods answer the cluster domain.'
step "$podnet" lab exec client -- cat /etc/resolv.conf
step "$podnet" lab exec client -- dig +short nginx-test.default.svc.cluster.local
printf 'The short name works through the search path; curl by name, through the ClusterIP, to an nginx pod.'
step "$podnet" lab exec client -- curl -s -o /dev/null -w '%{http_code} from %{remote_ip}\n' http://nginx-test
printf 'A pod by its dashed address, and a name of "the internet" forwarded to its DNS server (192.0.2.53).'
step "$podnet" lab exec client -- dig +short 10-244-0-2.default.pod.cluster.local
step "$podnet" lab exec client -- dig +short www.example.com
printf 'How k8s-w1 reaches the other nodes'"'"' pod subnets: VXLAN routes, neighbours and FDB entries.'
step ip netns exec seed004_k8s-w1 ip route
step ip netns exec seed004_k8s-w1 bridge fdb show dev podnet.1
printf 'How k8s-w1 maps Services to pods: verdict maps and endpoint maps, no chain per service.'
step ip netns exec seed004_k8s-w1 nft list map ip podnet-proxy service-ips
step ip netns exec seed004_k8s-w1 nft list map ip podnet-proxy cluster-endpoints

printf 'NetworkPolicy: the whoami pod behind clusterip-dnat admits only pods labelled access=true on port 80.'
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
policy='---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: whoami-access}
spec:
  podSelector: {matchLabels: {name: clusterip-dnat}}
  ingress:
  - from: [{podSelector: {matchLabels: {access: "true"}}}]
    ports: [{port: 80}]'
{ cat "$example"; echo "$policy"; } > "$work/policy.yaml"
python3 -c 'import sys; text = open(sys.argv[1]).read(); open(sys.argv[2], "w").write(text.replace("  name: client\nspec:", "  name: client\n  labels: {access: \"true\"}\nspec:", 1))' \
  "$work/policy.yaml" "$work/labelled.yaml"
step "$podnet" lab apply "$work/policy.yaml"
printf 'The client carries no such label: its connection is dropped (curl gives up, 000), and counted.'
step "$podnet" lab exec client -- curl -s --max-time 2 -o /dev/null -w '%{http_code}\n' "http://$cluster_ip" || true
step sh -c "ip netns exec seed004_k8s-w1 curl -s http://127.0.0.1:10249/metrics | grep '^podnet_policy_dropped'"
printf 'How k8s-w1 judges it: the pod'"'"'s address jumps to a chain of its own, with sets of its own.'
step ip netns exec seed004_k8s-w1 nft list map ip podnet-policy ingress-pods
printf 'The client is labelled in place (same pod, same address): admitted.'
step "$podnet" lab apply "$work/labelled.yaml"
step "$podnet" lab exec client -- curl -s --max-time 2 -o /dev/null -w '%{http_code}\n' "http://$cluster_ip"
printf 'Back to the example as written (no policy, no label).'
step "$podnet" lab apply "$example"

printf '\nThe lab keeps running: try `%s lab status`, `%s lab get endpointslices`;\nremove it with `%s lab down`.\n' "$podnet" "$podnet" "$podnet"
