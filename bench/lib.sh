# Shared by the benchmark scripts: run from the repository root, as root, with the Debian
# packages installed and podnet built in release mode.
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "benchmarks create network namespaces: run as root" >&2; exit 1; }
scripts/install-deps.sh
cargo build --release --quiet
PODNET=$PWD/target/release/podnet

# A two-node lab file on stdout: an iperf3 server pod on node1 (with EXTRA, more container list
# items, if given) and an idle client pod on node2.
iperf_lab() { # NAME BACKEND [EXTRA]
  cat <<YAML
apiVersion: podnet.dev/v1alpha1
kind: Lab
metadata: {name: $1}
spec: {nodes: 2, backend: $2}
---
apiVersion: v1
kind: Pod
metadata: {name: server}
spec:
  nodeName: node1
  containers:
  - {name: iperf, image: networkstatic/iperf3, command: [taskset, -c, "1", iperf3, -s]}
${3:-}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node2
  containers:
  - {name: c, image: busybox, command: [sleep, infinity]}
YAML
}
