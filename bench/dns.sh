#!/usr/bin/env bash
# Cluster DNS: podnet dns against unbound and dnsmasq from Debian serving the same records, on
# the same core budget, in one run: throughput and latency (dnsperf) for cluster names and for
# cached external names, and memory as services grow. See bench/dns.py.
#
#   bench/dns.sh [SIZES] [THROUGHPUT_SIZE]     (default 1000,10000,100000 and 10000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The peers and the load generator. unbound's package would start a host-wide resolver: its
# service is kept from starting while it installs (policy-rc.d), and it runs here only in the
# benchmark's own namespace.
missing=()
for tool in dnsperf unbound dnsmasq; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  packages=(dnsperf unbound dnsmasq-base)
  policy=/usr/sbin/policy-rc.d
  own_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null
  if $own_policy; then rm -f "$policy"; fi
fi

trap '"$PODNET" lab down --lab dnsbench >/dev/null 2>&1; ip netns delete dnsbench-servers 2>/dev/null || true' EXIT
python3 bench/dns.py "$PODNET" "${1:-1000,10000,100000}" "${2:-10000}"
