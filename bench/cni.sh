#!/usr/bin/env bash
# CNI plugin latency: podnet's bridge + host-local against the reference plugins from Debian's
# containernetworking-plugins, same configuration, same machine, interleaved rounds.
#
# Per implementation and ipMasq setting: 100 sequential ADDs, 100 sequential DELs (medians and
# p90 of the per-call wall time), and the wall time of 50 ADDs started at once. Then where
# podnet's ADD spends its time, phase by phase (the plugin reports them with PODNET_CNI_PHASES
# set; "start and exit" is the rest of the wall time), beside the floor: the same kernel
# operations issued by one already-running process (crates/podnet-cni/benches/add_floor.rs).
# Everything runs inside network namespaces this script creates and removes.
#
#   bench/cni.sh [ROUNDS]      (default 3; the medians are over all rounds)
#   CPU_HOG=1 bench/cni.sh     the same with a busy loop on every core meanwhile (a loaded node)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}
SEQUENTIAL=100
PARALLEL=50
WORK=$(mktemp -d /tmp/podnet-bench-cni.XXXXXX)
PODNET_BIN=$WORK/podnet-bin
REFERENCE_BIN=/usr/lib/cni
"$PODNET" cni install --dir "$PODNET_BIN" >/dev/null
FLOOR=$(cargo bench -p podnet-cni --bench add_floor --no-run 2>&1 | grep -o 'target/release/deps/add_floor-[0-9a-f]*' | head -1)
NODE=pnbench-node

HOGS=()
cleanup() {
  for hog in "${HOGS[@]}"; do kill "$hog" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '/^pnbench-/ {print $1}'); do ip netns delete "$ns"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ "${CPU_HOG:-0}" = 1 ]; then
  for _ in $(seq "$(nproc)"); do (while :; do :; done) & HOGS+=($!); done
  echo "with a busy loop on each of $(nproc) cores" >&2
fi

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
  sync  # the previous measurement's files are on disk, not written back during this one
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
    settle() { while pgrep -f "^podnet-cni-rea[p] " >/dev/null; do sleep 0.05; done; }
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

# Where podnet's ADD goes, against the floor: SEQUENTIAL ADDs with the phase report, ipMasq off
# and on (on: the first ADD adds the subnet's masquerade elements, the others only claim them).
phases() { # MASQ
  sync
  ip netns list | awk '/^pnbench-/ {print $1}' | xargs -r -n1 ip netns delete
  ip netns add $NODE
  ip netns exec $NODE ip link set lo up
  for i in $(seq 1 $SEQUENTIAL); do ip netns add pnbench-c$i; done
  local conf="{\"cniVersion\":\"1.0.0\",\"name\":\"benchnet\",\"type\":\"bridge\",\"bridge\":\"cnibench0\",\"isGateway\":true,\"ipMasq\":$1,\"stateDir\":\"$WORK/phases-$1/state\",\"ipam\":{\"type\":\"host-local\",\"subnet\":\"10.99.0.0/16\",\"dataDir\":\"$WORK/phases-$1/ipam\"}}"
  ip netns exec $NODE env BIN="$PODNET_BIN" CONF="$conf" SEQ=$SEQUENTIAL OUT="$WORK/phases-$1.txt" bash -c '
    for i in $(seq 1 $SEQ); do
      start=$EPOCHREALTIME
      CNI_COMMAND=ADD CNI_CONTAINERID=bench$i CNI_NETNS=/run/netns/pnbench-c$i CNI_IFNAME=eth0 \
        CNI_PATH=$BIN PODNET_CNI_PHASES=1 "$BIN/bridge" <<<"$CONF" >/dev/null 2>"$OUT.call"
      end=$EPOCHREALTIME
      echo "$(( (${end/./} - ${start/./}) )) $(<"$OUT.call")" >> "$OUT"
    done
  '
}
phases false
ip netns exec $NODE "$FLOOR" $SEQUENTIAL > "$WORK/floor.json"
phases true
python3 - "$WORK/phases-false.txt" "$WORK/phases-true.txt" "$WORK/floor.json" <<'PY'
import json, statistics, sys
def calls_of(path):
    calls = []
    for line in open(path):
        total, phases = line.split(" ", 1)
        phases = json.loads(phases)
        phases["start and exit"] = int(total) - sum(phases.values())
        phases["total"] = int(total)
        calls.append(phases)
    return calls
off, on = calls_of(sys.argv[1]), calls_of(sys.argv[2])
floor = json.load(open(sys.argv[3]))
names = ["start and exit", "decode", "netns", "ipam", "record", "veth", "bridge", "container", "masquerade", "answer", "total"]
print(f"\npodnet ADD by phase, median of {len(off)} calls (us), ipMasq off and on, beside the floor (one running process, kernel work only)")
print(f"{'phase':<16} {'off':>8} {'on':>8} {'floor':>8}")
median = lambda calls, name: statistics.median(call.get(name, 0) for call in calls)
for name in names:
    print(f"{name:<16} {median(off, name):>8.0f} {median(on, name):>8.0f} {floor.get(name, ''):>8}")
print(f"ADD / floor: {median(off, 'total') / floor['total']:.1f}x off, {median(on, 'total') / floor['total']:.1f}x on")
PY
