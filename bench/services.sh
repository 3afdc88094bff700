#!/usr/bin/env bash
# The service proxy at scale (cold sync, one endpoint change, connect latency, RSS and CPU)
# for each size, against kube-proxy's iptables-mode ruleset loaded with iptables-restore in the
# same run (up to PEER_MAX services: the peer takes minutes beyond). See bench/services.py.
#
#   bench/services.sh [SIZES] [PEER_MAX]     (default 1000,10000,30000,100000 and 30000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap '"$PODNET" lab down --lab svcbench >/dev/null 2>&1' EXIT
python3 bench/services.py "$PODNET" "${1:-1000,10000,30000,100000}" "${2:-30000}"
