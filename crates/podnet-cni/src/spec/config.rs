//! The network configuration a runtime writes on the plugin's stdin.
//!
//! A runtime reads a network configuration list (`.conflist`) and runs its plugins in order,
//! giving each its own object: the plugin's entry plus the list's `cniVersion` and `name`, the
//! `runtimeConfig` for the capabilities the plugin declared, and the previous plugin's result as
//! `prevResult`. Keys a plugin does not know are ignored, as the reference plugins do.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{CniError, ErrorCode};
use super::result::{CniResult, Dns};
use super::version::Version;

/// The keys every plugin configuration has, with the plugin's own keys in `plugin`.
#[derive(Debug, Clone)]
pub struct NetConf<P> {
    /// The spec version the configuration was written for; results use it too.
    pub cni_version: Version,
    /// The network name, unique on the host.
    pub name: String,
    /// The IPAM section, handed to the IPAM plugin named by its `type`.
    pub ipam: Option<IpamConf>,
    /// DNS settings to report in the result.
    pub dns: Option<Dns>,
    /// The previous plugin's result, in a chain.
    pub prev_result: Option<CniResult>,
    /// The plugin's own keys.
    pub plugin: P,
}

/// The `ipam` section: its `type` names the IPAM plugin; the rest is that plugin's business.
#[derive(Debug, Clone, Deserialize)]
pub struct IpamConf {
    /// The IPAM plugin to execute.
    #[serde(rename = "type")]
    pub plugin_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommonKeys {
    name: Option<String>,
    ipam: Option<IpamConf>,
    dns: Option<Dns>,
    prev_result: Option<Value>,
}

/// Decodes stdin into a JSON object; malformed or empty input is error 6.
pub fn decode(stdin: &[u8]) -> Result<Value, CniError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Err(
            CniError::new(ErrorCode::Decoding, "empty network configuration on stdin")
                .details("the runtime must write the network configuration JSON to the plugin's stdin"),
        );
    }
    let value: Value = serde_json::from_slice(stdin).map_err(|err| {
        CniError::new(ErrorCode::Decoding, "cannot decode network configuration").details(err.to_string())
    })?;
    if !value.is_object() {
        return Err(CniError::new(
            ErrorCode::Decoding,
            "network configuration must be a JSON object",
        ));
    }
    Ok(value)
}

/// The configuration's `cniVersion`: 0.1.0 when absent (as libcni assumes), error 1 when podnet
/// does not implement it.
pub fn version_of(config: &Value) -> Result<Version, CniError> {
    match config.get("cniVersion") {
        None => Ok(Version::V0_1_0),
        Some(Value::String(text)) => text.parse().map_err(|_| {
            CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "incompatible CNI versions: cniVersion {text:?} is not supported (the plugin supports {})",
                    supported_list()
                ),
            )
        }),
        Some(other) => Err(CniError::invalid_config(format!(
            "cniVersion must be a string, not {other}"
        ))),
    }
}

fn supported_list() -> String {
    super::version::SUPPORTED
        .iter()
        .map(|version| format!("{:?}", version.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<P: DeserializeOwned> NetConf<P> {
    /// Reads the common keys and the plugin's keys from a decoded configuration.
    pub fn parse(config: &Value) -> Result<Self, CniError> {
        let cni_version = version_of(config)?;
        let invalid = |err: serde_json::Error| {
            CniError::invalid_config("invalid network configuration").details(err.to_string())
        };
        let common = CommonKeys::deserialize(config).map_err(invalid)?;
        let name = common
            .name
            .ok_or_else(|| CniError::invalid_config("network configuration has no \"name\""))?;
        validate_network_name(&name)?;
        let prev_result = common
            .prev_result
            .as_ref()
            .map(CniResult::from_value)
            .transpose()?;
        Ok(NetConf {
            cni_version,
            name,
            ipam: common.ipam,
            dns: common.dns,
            prev_result,
            plugin: P::deserialize(config).map_err(invalid)?,
        })
    }
}

/// A network name names directories on disk: letters, digits, `_`, `.` and `-`, starting with a
/// letter or digit (the spec's rule).
fn validate_network_name(name: &str) -> Result<(), CniError> {
    if super::is_identifier(name) {
        return Ok(());
    }
    Err(
        CniError::invalid_config(format!("invalid network name {name:?}")).details(
            "a network name starts with a letter or digit and holds only letters, digits, '_', '.' and '-'",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Keys {
        #[serde(default)]
        mtu: Option<u32>,
    }

    #[test]
    fn empty_and_malformed_input_is_error_6() {
        assert_eq!(decode(b"  \n").unwrap_err().code, ErrorCode::Decoding);
        assert_eq!(decode(b"{\"name\": ").unwrap_err().code, ErrorCode::Decoding);
        assert_eq!(decode(b"[1]").unwrap_err().code, ErrorCode::Decoding);
    }

    #[test]
    fn unknown_version_is_error_1_and_missing_version_is_0_1_0() {
        let err = version_of(&json!({"cniVersion": "9.9.9"})).unwrap_err();
        assert_eq!(err.code, ErrorCode::IncompatibleVersion);
        assert!(err.msg.contains("9.9.9"));
        assert_eq!(version_of(&json!({})).unwrap(), Version::V0_1_0);
    }

    #[test]
    fn parses_common_and_plugin_keys_and_ignores_unknown_ones() {
        let conf = NetConf::<Keys>::parse(&json!({
            "cniVersion": "1.0.0", "name": "net1", "type": "bridge", "mtu": 1400,
            "somethingElse": true, "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}
        }))
        .unwrap();
        assert_eq!(conf.name, "net1");
        assert_eq!(conf.plugin.mtu, Some(1400));
        assert_eq!(conf.ipam.unwrap().plugin_type, "host-local");
    }

    #[test]
    fn wrong_types_and_bad_names_are_error_7() {
        let wrong_type = NetConf::<Keys>::parse(&json!({"cniVersion": "1.0.0", "name": "n", "mtu": "big"}));
        assert_eq!(wrong_type.unwrap_err().code, ErrorCode::InvalidConfig);
        let traversal = NetConf::<Keys>::parse(&json!({"cniVersion": "1.0.0", "name": "../x"}));
        assert_eq!(traversal.unwrap_err().code, ErrorCode::InvalidConfig);
    }
}
