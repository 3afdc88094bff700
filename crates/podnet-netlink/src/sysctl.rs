//! Per-namespace kernel settings under `/proc/sys/net`.
//!
//! `/proc/sys/net` shows the settings of the network namespace of the thread that opens the
//! file, so these functions act on the caller's namespace; run them inside [`crate::Netns::run`]
//! to act on another one.

use std::fs;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Writes `value` to the sysctl `key`, skipping the write when it already holds that value. The
/// key is dotted (`net.ipv4.ip_forward`) or, when it holds an interface name that may itself
/// contain dots (`eth0.100`), slashed (`net/ipv6/conf/eth0.100/accept_dad`), as sysctl(8)
/// accepts both.
pub fn set(key: &str, value: &str) -> Result<()> {
    let path = path_of(key);
    if get(key).is_ok_and(|current| current == value) {
        return Ok(());
    }
    fs::write(&path, value).map_err(|err| Error::system(format!("set sysctl {key}={value}"), err))
}

/// Reads the sysctl `key`, trimmed.
pub fn get(key: &str) -> Result<String> {
    let path = path_of(key);
    fs::read_to_string(&path)
        .map(|text| text.trim().to_owned())
        .map_err(|err| Error::system(format!("read sysctl {key}"), err))
}

fn path_of(key: &str) -> PathBuf {
    let path = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    PathBuf::from("/proc/sys").join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_slashed_keys_name_their_files() {
        assert_eq!(
            path_of("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path_of("net/ipv6/conf/eth0.100/accept_dad"),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/accept_dad")
        );
    }
}
