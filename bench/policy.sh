#!/usr/bin/env bash
# NetworkPolicy at scale: time from a policy's publication to its enforcement (p50/p99 over
# CHANGES changes, probed continuously) with POLICIES policies and PODS pods present, and
# pod-to-pod throughput, connect and request/response latency with those policies against the
# hook emptied (BLOCKS pairs) and against none (ROUNDS pairs). See bench/policy.py.
#
#   bench/policy.sh [PODS] [POLICIES] [CHANGES] [BLOCKS] [ROUNDS] [SECONDS]
#                   (default 500 1000 100 30 6 2)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap '"$PODNET" lab down --lab polbench >/dev/null 2>&1' EXIT
python3 bench/policy.py "$PODNET" "${1:-500}" "${2:-1000}" "${3:-100}" "${4:-30}" "${5:-6}" "${6:-2}"
