#!/usr/bin/env bash
# Lab start and teardown at scale: 4 nodes and 100 whoami pods. Measures `podnet lab up`
# (which returns when every pod is ready), the time until every pod answers an HTTP request
# from another node, and `podnet lab down`, over ROUNDS rounds (medians). There is no peer to
# run here (kind needs container images); the targets are up <= 10 s and down <= 5 s.
#
#   bench/lab-scale.sh [ROUNDS]     (default 3)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}
WORK=$(mktemp -d /tmp/podnet-bench-scale.XXXXXX)
trap '"$PODNET" lab down --lab pnscale >/dev/null 2>&1; rm -rf "$WORK"' EXIT
cat > "$WORK/lab.yaml" <<'YAML'
apiVersion: podnet.dev/v1alpha1
kind: Lab
metadata: {name: pnscale}
spec: {nodes: 4}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: whoami}
spec:
  replicas: 100
  selector:
    matchLabels: {app: whoami}
  template:
    metadata:
      labels: {app: whoami}
    spec:
      containers:
      - {name: whoami, image: traefik/whoami}
YAML
now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
"$PODNET" lab down --lab pnscale >/dev/null
for round in $(seq 1 "$ROUNDS"); do
  start=$(now)
  "$PODNET" lab up "$WORK/lab.yaml" >/dev/null 2>&1
  ready=$(now)
  # Every pod, asked from node1 (three quarters of them on other nodes).
  ips=$("$PODNET" lab status --lab pnscale | awk '$1 == "default" {print $6}')
  ip netns exec pnscale_node1 bash -c 'for ip in '"$(echo $ips)"'; do curl -s --max-time 5 -o /dev/null -w "%{http_code}\n" http://$ip/ & done; wait' > "$WORK/codes"
  answered=$(now)
  ok=$(grep -c '^200$' "$WORK/codes" || true)
  daemon_rss=$(awk '/VmRSS/ {print $2}' /proc/"$(pgrep -f 'podnet lab daemon pnscale')"/status)
  agent_rss=$(for pid in $(pgrep -f 'podnet agent --lab pnscale'); do awk '/VmRSS/ {print $2}' /proc/$pid/status; done | sort -n | tail -1)
  down_start=$(now)
  "$PODNET" lab down --lab pnscale >/dev/null
  down_end=$(now)
  echo "$(ms $start $ready) $(ms $start $answered) $(ms $down_start $down_end) $ok $daemon_rss $agent_rss" >> "$WORK/results"
  echo "round $round: up $(ms $start $ready) ms, all answering $(ms $start $answered) ms ($ok/100 answered), down $(ms $down_start $down_end) ms" >&2
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { awk -v c="$1" '{print $c}' "$WORK/results" | median; }
printf '\nLab of 4 nodes and 100 whoami pods, median of %s rounds\n' "$ROUNDS"
printf '  lab up (returns when every pod is ready)   %6s ms   (target <= 10000)\n' "$(col 1)"
printf '  until all 100 pods answer HTTP from node1  %6s ms\n' "$(col 2)"
printf '  lab down                                   %6s ms   (target <= 5000)\n' "$(col 3)"
printf '  pods answering                             %6s / 100\n' "$(col 4)"
printf '  daemon RSS %s kB, largest agent RSS %s kB\n' "$(col 5)" "$(col 6)"
