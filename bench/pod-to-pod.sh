#!/usr/bin/env bash
# Pod-to-pod across two nodes: podnet's vxlan and host-gw backends against the same topology
# built by hand with iproute2 (flannel's VXLAN layout; plain host-gw routes), and the underlay
# itself for context. All in one run, setups interleaved, medians of ROUNDS.
#
# podnet masquerades pod egress (as flannel does with iptables), so conntrack sees every packet
# on its nodes. The hand-built twins are measured twice: bare, as the issue defines them, and
# with the same masquerade rule in the nodes (`+masq`), which isolates what conntrack costs.
#
# Per setup: iperf3 TCP throughput with 1 and 4 streams (client pinned to CPU 0, server to
# CPU 1), ping RTT, and a 1-byte TCP request/response latency (bench/tcp_rr.py). Afterwards:
# IP fragmentation and checksum-error counters of the podnet nodes and pods, and agent RSS.
# Everything runs in namespaces this script creates and removes.
#
#   bench/pod-to-pod.sh [ROUNDS] [SECONDS]     (defaults: 5 rounds of 5 s per iperf3 run)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-5}
RR=$PWD/bench/tcp_rr.py
WORK=$(mktemp -d /tmp/podnet-bench-p2p.XXXXXX)
RESULTS=$WORK/results

cleanup() {
  for lab in pnbvx pnbgw; do "$PODNET" lab down --lab $lab >/dev/null 2>&1 || true; done
  for ns in $(ip netns list | awk '/^hb-/ {print $1}'); do ip netns pids "$ns" | xargs -r kill -9; ip netns delete "$ns"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cleanup_start() { for ns in $(ip netns list | awk '/^hb-/ {print $1}'); do ip netns delete "$ns"; done; }
cleanup_start

# --- podnet: two labs, a server pod on node1 (iperf3 and the RR server), a client on node2 ---
podnet_lab() { # NAME BACKEND
  iperf_lab "$1" "$2" "  - {name: rr, image: python, command: [taskset, -c, \"1\", python3, $RR, server, \"9000\"]}" > "$WORK/$1.yaml"
  "$PODNET" lab up "$WORK/$1.yaml" >/dev/null 2>&1
}
podnet_lab pnbvx vxlan
podnet_lab pnbgw host-gw

# --- hand-built twins on one underlay: hb-n1 and hb-n2 with a pod each per backend ---
ip netns add hb-fabric
ip -n hb-fabric link add br0 type bridge
ip -n hb-fabric link set br0 up
for n in 1 2; do
  ip netns add hb-n$n
  ip -n hb-fabric link add n$n type veth peer name eth0 netns hb-n$n
  ip -n hb-fabric link set n$n master br0 up
  ip -n hb-n$n addr add 192.168.30.$n/24 dev eth0
  ip -n hb-n$n link set eth0 up
  ip -n hb-n$n link set lo up
  ip netns exec hb-n$n sysctl -qw net.ipv4.ip_forward=1
done
handbuilt_pods() { # BACKEND SUBNET_PREFIX MTU  (pods hb-<backend>-p1 on hb-n1, -p2 on hb-n2)
  local backend=$1 prefix=$2 mtu=$3
  for n in 1 2; do
    local node=hb-n$n pod=hb-$backend-p$n bridge=br-$backend subnet=$prefix.$((n - 1))
    ip -n $node link add $bridge type bridge
    ip -n $node link set $bridge mtu "$mtu" up
    ip -n $node addr add $subnet.1/24 dev $bridge
    ip netns add $pod
    ip -n $node link add v-$backend type veth peer name eth0 netns $pod
    ip -n $node link set v-$backend mtu "$mtu" master $bridge up
    ip -n $pod link set eth0 mtu "$mtu" up
    ip -n $pod link set lo up
    ip -n $pod addr add $subnet.2/24 dev eth0
    ip -n $pod route add default via $subnet.1
  done
}
handbuilt_pods vxlan 10.31 1450
handbuilt_pods hostgw 10.32 1500
for n in 1 2; do
  peer=$((3 - n))
  # flannel's VXLAN layout
  ip -n hb-n$n link add flannel.1 address 0e:00:00:00:00:0$n type vxlan id 1 local 192.168.30.$n dev eth0 dstport 8472 nolearning
  ip -n hb-n$n link set flannel.1 mtu 1450 up
  ip -n hb-n$n addr add 10.31.$((n - 1)).0/32 dev flannel.1
  ip -n hb-n$n route add 10.31.$((peer - 1)).0/24 via 10.31.$((peer - 1)).0 dev flannel.1 onlink
  ip -n hb-n$n neigh add 10.31.$((peer - 1)).0 lladdr 0e:00:00:00:00:0$peer dev flannel.1 nud permanent
  ip netns exec hb-n$n bridge fdb add 0e:00:00:00:00:0$peer dev flannel.1 dst 192.168.30.$peer self permanent
  # host-gw
  ip -n hb-n$n route add 10.32.$((peer - 1)).0/24 via 192.168.30.$peer dev eth0
done
for ns in hb-n1 hb-vxlan-p1 hb-hostgw-p1; do
  ip netns exec $ns taskset -c 1 iperf3 -s -D
  (ip netns exec $ns taskset -c 1 python3 "$RR" server 9000 >/dev/null 2>&1 &)
done
sleep 1
handbuilt_masquerade() { # add|delete: podnet's egress rule on the hand-built nodes
  for n in 1 2; do
    if [ "$1" = add ]; then
      printf 'table ip hb-egress {\n chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  ip saddr { 10.31.%s.0/24, 10.32.%s.0/24 } ip daddr != { 10.31.0.0/23, 10.32.0.0/23, 224.0.0.0/4 } masquerade\n }\n}\n' $((n - 1)) $((n - 1))
    else
      echo 'delete table ip hb-egress'
    fi | ip netns exec hb-n$n nft -f -
  done
}

# --- measurements ---
measure() { # LABEL CLIENT_NETNS SERVER_IP
  local label=$1 client=$2 server=$3
  local one four rtt rr
  one=$(ip netns exec "$client" taskset -c 0 iperf3 -c "$server" -t "$SECONDS_PER_RUN" -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))')
  four=$(ip netns exec "$client" taskset -c 0 iperf3 -c "$server" -t "$SECONDS_PER_RUN" -P 4 -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))')
  rtt=$(ip netns exec "$client" ping -q -c 200 -i 0.005 "$server" | awk -F/ '/^rtt/ {print $5 * 1000}')
  rr=$(ip netns exec "$client" taskset -c 0 python3 "$RR" client "$server" 9000 5000 | awk '{print $1}')
  echo "$label $one $four $rtt $rr" | tee -a "$RESULTS" >&2
}
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round" >&2
  measure underlay hb-n2 192.168.30.1
  measure handbuilt-vxlan hb-vxlan-p2 10.31.0.2
  measure podnet-vxlan pnbvx_default_client "$(ip netns exec pnbvx_default_server ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)"
  measure handbuilt-host-gw hb-hostgw-p2 10.32.0.2
  measure podnet-host-gw pnbgw_default_client "$(ip netns exec pnbgw_default_server ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)"
  handbuilt_masquerade add
  measure handbuilt-vxlan+masq hb-vxlan-p2 10.31.0.2
  measure handbuilt-host-gw+masq hb-hostgw-p2 10.32.0.2
  handbuilt_masquerade delete
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { awk -v l="$1" -v f="$2" '$1==l {print $f}' "$RESULTS" | median; }
printf '\nPod to pod across two nodes, median of %s rounds (iperf3 %s s per run)\n' "$ROUNDS" "$SECONDS_PER_RUN"
printf '%-23s %10s %10s %10s %12s\n' setup "1 stream" "4 streams" "ping RTT" "TCP RR p50"
printf '%-23s %10s %10s %10s %12s\n' "" "Gbit/s" "Gbit/s" "us" "us"
for label in underlay handbuilt-vxlan handbuilt-vxlan+masq podnet-vxlan handbuilt-host-gw handbuilt-host-gw+masq podnet-host-gw; do
  printf '%-23s %10s %10s %10s %12s\n' $label "$(field $label 2)" "$(field $label 3)" "$(field $label 4)" "$(field $label 5)"
done
ratio() { echo "scale=3; $(field "$1" "$3") / $(field "$2" "$3")" | bc; }
printf '\npodnet / hand-built twin:  vxlan %s (1 stream), %s (4 streams), RTT %s, RR %s\n' \
  "$(ratio podnet-vxlan handbuilt-vxlan 2)" "$(ratio podnet-vxlan handbuilt-vxlan 3)" "$(ratio podnet-vxlan handbuilt-vxlan 4)" "$(ratio podnet-vxlan handbuilt-vxlan 5)"
printf '                          host-gw %s (1 stream), %s (4 streams), RTT %s, RR %s\n' \
  "$(ratio podnet-host-gw handbuilt-host-gw 2)" "$(ratio podnet-host-gw handbuilt-host-gw 3)" "$(ratio podnet-host-gw handbuilt-host-gw 4)" "$(ratio podnet-host-gw handbuilt-host-gw 5)"
printf 'podnet / twin+masq:        vxlan %s (1 stream), %s (4 streams), RTT %s, RR %s\n' \
  "$(ratio podnet-vxlan handbuilt-vxlan+masq 2)" "$(ratio podnet-vxlan handbuilt-vxlan+masq 3)" "$(ratio podnet-vxlan handbuilt-vxlan+masq 4)" "$(ratio podnet-vxlan handbuilt-vxlan+masq 5)"
printf '                          host-gw %s (1 stream), %s (4 streams), RTT %s, RR %s\n' \
  "$(ratio podnet-host-gw handbuilt-host-gw+masq 2)" "$(ratio podnet-host-gw handbuilt-host-gw+masq 3)" "$(ratio podnet-host-gw handbuilt-host-gw+masq 4)" "$(ratio podnet-host-gw handbuilt-host-gw+masq 5)"
printf 'twin / underlay (context): vxlan %s, host-gw %s (1 stream)\n' "$(ratio handbuilt-vxlan underlay 2)" "$(ratio handbuilt-host-gw underlay 2)"

printf '\nFragmentation and checksum errors on the podnet path (should all be 0):\n'
for ns in pnbvx_node1 pnbvx_node2 pnbvx_default_server pnbgw_node1 pnbgw_node2 pnbgw_default_server; do
  printf '  %-22s %s\n' $ns "$(ip netns exec $ns nstat -az IpFragCreates IpReasmReqds TcpInCsumErrors UdpInCsumErrors 2>/dev/null | awk 'NR>1 {printf "%s=%s ", $1, $2}')"
done
printf '\nAgent memory (VmRSS):\n'
for lab in pnbvx pnbgw; do
  for pid in $(pgrep -f "podnet agent --lab $lab"); do
    printf '  %-8s %s\n' $lab "$(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
  done
done
