//! The main and meta plugins: bridge, loopback and portmap.

pub mod bridge;
pub mod loopback;
pub mod portmap;

use std::hash::{BuildHasher, Hasher};

/// A random locally administered unicast MAC address.
pub(crate) fn random_mac() -> [u8; 6] {
    let bits = random_bits().to_be_bytes();
    [
        (bits[0] & 0xfe) | 0x02,
        bits[1],
        bits[2],
        bits[3],
        bits[4],
        bits[5],
    ]
}

/// Eight random hex digits for link names (`veth1a2b3c4d`), like the reference plugins use.
///
/// Not cryptographic: it only has to make collisions between concurrent ADDs unlikely, and a
/// collision is detected (EEXIST) and retried.
pub(crate) fn random_suffix() -> String {
    format!("{:08x}", random_bits() as u32)
}

/// 64 unpredictable-enough bits: the process's random hasher keys, its PID and the time.
fn random_bits() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(elapsed) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(elapsed.as_nanos());
    }
    hasher.finish()
}
