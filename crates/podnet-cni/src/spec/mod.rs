//! The CNI specification (1.1.0, reading configurations down to 0.1.0): versions, the
//! invocation environment, configurations, results and errors.

mod config;
mod env;
mod error;
mod result;
mod version;

pub use config::{IpamConf, NetConf, decode, version_of};
pub use env::{Command, Environment};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, RouteConfig};
pub use version::{SUPPORTED, Version};

/// Whether `name` is a valid container ID or network name (the spec gives both the same rule): a
/// letter or digit, then letters, digits, '_', '.' and '-'.
pub(crate) fn is_identifier(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Serializes like the reference plugins print: pretty JSON indented by four spaces.
pub(crate) fn to_pretty_json(value: &impl serde::Serialize) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer).expect("JSON values serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}
