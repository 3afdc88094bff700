#!/usr/bin/env bash
# Installs the Debian packages podnet's lab, tests and benchmarks use (idempotent, quiet when
# everything is present). Run as root on Debian 12.
set -euo pipefail

packages=(
  nftables iproute2 iputils-ping procps util-linux curl conntrack busybox-static  # lab and tests
  dnsutils                                                                         # dig, in DNS tests
  podman runc containernetworking-plugins                                         # runtime and reference peers
  iperf3 hyperfine bc python3                                                      # benchmarks
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
