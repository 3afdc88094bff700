//! The CNI specification (1.1.0, reading configurations down to 0.1.0): versions, the
//! invocation environment, configurations, results and errors.

mod config;
mod env;
mod error;
mod result;
mod version;

pub use config::{IpamConf, NetConf, decode, version_of};
pub use env::{Command, Environment, validate_ifname};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, RouteConfig};
pub use version::{SUPPORTED, UnknownVersion, Version};

/// Serializes like the reference plugins print: pretty JSON indented by four spaces.
pub(crate) fn to_pretty_json(value: &impl serde::Serialize) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer).expect("JSON values serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}
