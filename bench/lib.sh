# Shared by the benchmark scripts: run from the repository root, as root, with the Debian
# packages installed and podnet built in release mode.
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "benchmarks create network namespaces: run as root" >&2; exit 1; }
scripts/install-deps.sh
cargo build --release --quiet
PODNET=$PWD/target/release/podnet
