#!/usr/bin/env bash
# CNI plugin latency: podnet's bridge + host-local against the reference plugins from Debian's
# containernetworking-plugins, same configuration, same machine, interleaved rounds.
#
# Per implementation and ipMasq setting: 100 sequential ADDs, 100 sequential DELs (medians and
# p90 of the per-call wall time), and the wall time of 50 ADDs started at once.
# Everything runs inside network namespaces this script creates and removes.
#
#   bench/cni.sh [ROUNDS]      (default 3; the medians are over all rounds)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}
SEQUENTIAL=100
PARALLEL=50
WORK=$(mktemp -d /tmp/podnet-bench-cni.XXXXXX)
PODNET_BIN=$WORK/podnet-bin
REFERENCE_BIN=/usr/lib/cni
"$PODNET" cni install --dir "$PODNET_BIN" >/dev/null
NODE=pnbench-node

cleanup() {
  for ns in $(ip netns list | awk '/^pnbench-/ {print $1}'); do ip netns delete "$ns"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# One measurement: IMPL (podnet|reference), MASQ (true|false). Prints
# "impl masq add_p50 add_p90 del_p50 del_p90 parallel_ms" with times in milliseconds.
measure() {
  local impl=$1 masq=$2 bin
  [ "$impl" = podnet ] && bin=$PODNET_BIN || bin=$REFERENCE_BIN
  ip netns list | awk '/^pnbench-/ {print $1}' | xargs -r -n1 ip netns delete
  ip netns add $NODE
  ip netns exec $NODE ip link set lo up
  for i in $(seq 1 $((SEQUENTIAL + PARALLEL))); do ip netns add pnbench-c$i; done
  local data=$WORK/data-$impl-$masq
  rm -rf "$data"
  local conf="{\"cniVersion\":\"1.0.0\",\"name\":\"benchnet\",\"type\":\"bridge\",\"bridge\":\"cnibench0\",\"isGateway\":true,\"ipMasq\":$masq,\"stateDir\":\"$data/state\",\"ipam\":{\"type\":\"host-local\",\"subnet\":\"10.99.0.0/16\",\"dataDir\":\"$data/ipam\"}}"
  ip netns exec $NODE env BIN="$bin" CONF="$conf" SEQ=$SEQUENTIAL PAR=$PARALLEL bash -c '
    call() { # COMMAND INDEX
      CNI_COMMAND=$1 CNI_CONTAINERID=bench$2 CNI_NETNS=/run/netns/pnbench-c$2 CNI_IFNAME=eth0 CNI_PATH=$BIN \
        "$BIN/bridge" <<<"$CONF" >/dev/null || { echo "$1 $2 failed" >&2; exit 1; }
    }
    time_calls() { # COMMAND -> one duration in microseconds per line
      for i in $(seq 1 $SEQ); do
        start=$EPOCHREALTIME; call $1 $i; end=$EPOCHREALTIME
        echo $(( (${end/./} - ${start/./}) ))
      done
    }
    # podnet destroys veth pairs in background processes after DEL: let them finish before
    # the next phase, so that neither implementation pays for the other'"'"'s work.
    settle() { while pgrep -f "podnet cni rea[p]" >/dev/null; do sleep 0.05; done; }
    time_calls ADD > /tmp/pnbench-add
    time_calls DEL > /tmp/pnbench-del
    settle
    start=$EPOCHREALTIME
    for i in $(seq $((SEQ + 1)) $((SEQ + PAR))); do call ADD $i & done
    wait
    end=$EPOCHREALTIME
    echo $(( (${end/./} - ${start/./}) )) > /tmp/pnbench-par
    for i in $(seq $((SEQ + 1)) $((SEQ + PAR))); do call DEL $i; done
    settle
  '
  local stats
  stats() { sort -n "$1" | awk '{a[NR]=$1} END {printf "%.2f %.2f", a[int(NR*0.5)+1]/1000, a[int(NR*0.9)+1]/1000}'; }
  echo "$impl $masq $(stats /tmp/pnbench-add) $(stats /tmp/pnbench-del) $(awk '{printf "%.0f", $1/1000}' /tmp/pnbench-par)"
  rm -f /tmp/pnbench-add /tmp/pnbench-del /tmp/pnbench-par
  ip netns list | awk '/^pnbench-/ {print $1}' | xargs -r -n1 ip netns delete
}

RESULTS=$WORK/results
for round in $(seq 1 "$ROUNDS"); do
  for masq in false true; do
    for impl in podnet reference; do
      line=$(measure $impl $masq)
      echo "round $round: $line" >&2
      echo "$line" >> "$RESULTS"
    done
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { awk -v i="$1" -v m="$2" -v f="$3" '$1==i && $2==m {print $f}' "$RESULTS" | median; }
printf '\n%s\n' "CNI bridge + host-local, $SEQUENTIAL sequential calls and $PARALLEL parallel ADDs, median of $ROUNDS rounds (ms)"
printf '%-9s %-10s %9s %9s %9s %9s %13s\n' ipMasq impl "ADD p50" "ADD p90" "DEL p50" "DEL p90" "50 par. ADD"
for masq in false true; do
  for impl in podnet reference; do
    printf '%-9s %-10s %9s %9s %9s %9s %13s\n' $masq $impl $(field $impl $masq 3) $(field $impl $masq 4) $(field $impl $masq 5) $(field $impl $masq 6) $(field $impl $masq 7)
  done
  printf '%-9s %-10s %9.1fx %8sx %8.1fx %8sx %12.1fx\n' $masq "ref/podnet" \
    "$(echo "$(field reference $masq 3) / $(field podnet $masq 3)" | bc -l)" "" \
    "$(echo "$(field reference $masq 5) / $(field podnet $masq 5)" | bc -l)" "" \
    "$(echo "$(field reference $masq 7) / $(field podnet $masq 7)" | bc -l)"
done
