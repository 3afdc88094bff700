#!/usr/bin/env bash
# What egress masquerading costs pod-to-pod traffic. Any nat rule in a node's namespace makes
# conntrack track every packet there, including pod-to-pod traffic that is never translated.
# This A/B runs on one podnet lab (two nodes, vxlan): the agents are paused, and the egress table
# is removed and restored between interleaved runs. Per run it measures iperf3 throughput
# (1 stream, 3 s) and the CPU it took per GB (busy jiffies of both CPUs, steal excluded),
# which is steadier on a shared machine than throughput.
#
#   bench/egress-conntrack.sh [PAIRS]     (default 8)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
PAIRS=${1:-8}
WORK=$(mktemp -d /tmp/podnet-bench-ct.XXXXXX)
LAB=pnbct
cleanup() {
  pkill -CONT -f "podnet agent --lab $LAB" 2>/dev/null || true
  "$PODNET" lab down --lab $LAB >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
iperf_lab $LAB vxlan > "$WORK/lab.yaml"
"$PODNET" lab up "$WORK/lab.yaml" >/dev/null 2>&1
server=$(ip netns exec ${LAB}_default_server ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
for n in 1 2; do ip netns exec ${LAB}_node$n nft list table ip podnet-egress > "$WORK/egress-$n.nft"; done
pkill -STOP -f "podnet agent --lab $LAB"

busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
run() { # LABEL
  local before after gbits
  before=$(busy)
  gbits=$(ip netns exec ${LAB}_default_client taskset -c 0 iperf3 -c "$server" -t 3 -J \
    | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(round(e["bits_per_second"]/1e9, 2), e["bytes"])')
  after=$(busy)
  read -r rate bytes <<<"$gbits"
  echo "$1 $rate $(echo "scale=1; ($after - $before) * 1000000000 / $bytes" | bc)" >> "$WORK/results"
}
for i in $(seq 1 "$PAIRS"); do
  run with-egress-table
  for n in 1 2; do ip netns exec ${LAB}_node$n nft delete table ip podnet-egress; done
  run without
  for n in 1 2; do ip netns exec ${LAB}_node$n nft -f "$WORK/egress-$n.nft"; done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { awk -v l="$1" -v f="$2" '$1==l {print $f}' "$WORK/results" | median; }
printf 'Pod to pod across two nodes (vxlan), median of %s interleaved pairs\n' "$PAIRS"
printf '%-18s %10s %16s\n' "" "Gbit/s" "jiffies per GB"
for label in with-egress-table without; do
  printf '%-18s %10s %16s\n' $label "$(field $label 2)" "$(field $label 3)"
done
printf 'with / without: throughput %s, CPU per GB %s\n' \
  "$(echo "scale=3; $(field with-egress-table 2) / $(field without 2)" | bc)" \
  "$(echo "scale=3; $(field with-egress-table 3) / $(field without 3)" | bc)"
