//! Per-namespace kernel settings under `/proc/sys/net`.
//!
//! `/proc/sys/net` shows the settings of the network namespace of the thread that opens the
//! file, so these functions act on the caller's namespace; run them inside [`crate::Netns::run`]
//! to act on another one.

use std::fs;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Writes `value` to the sysctl `key` (dotted form, e.g. `net.ipv4.ip_forward`), skipping the
/// write when it already holds that value.
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
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}
