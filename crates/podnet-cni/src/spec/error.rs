//! CNI errors: what a plugin prints on stdout when a command fails.
//!
//! The spec defines a JSON object `{"cniVersion", "code", "msg", "details"}` and reserves codes
//! 1-99 for well-known failures; a runtime may act on the code (for instance, code 3 tells it
//! that there is nothing to clean up). Codes of 100 and above are plugin-specific; the reference
//! plugins use 999 for everything else, and so does podnet.

use std::fmt;

use serde::Serialize;

use super::version::Version;

/// A well-known CNI error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the configuration's `cniVersion` is not supported.
    IncompatibleVersion,
    /// 2: a configuration field is not supported.
    UnsupportedField,
    /// 3: the container (its network namespace) does not exist.
    UnknownContainer,
    /// 4: a required `CNI_*` environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: an I/O failure.
    Io,
    /// 6: the configuration could not be decoded.
    Decoding,
    /// 7: the configuration is decodable but invalid.
    InvalidConfig,
    /// 11: a transient condition; try again later.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot serve ADD now.
    NotAvailable,
    /// 51: STATUS: the plugin can serve ADD, with limited connectivity.
    LimitedConnectivity,
    /// 999: any other failure.
    Generic,
}

impl ErrorCode {
    /// The code for a number read from another plugin's error object (999 when not well-known).
    pub fn from_value(value: u32) -> Self {
        [
            ErrorCode::IncompatibleVersion,
            ErrorCode::UnsupportedField,
            ErrorCode::UnknownContainer,
            ErrorCode::InvalidEnvironment,
            ErrorCode::Io,
            ErrorCode::Decoding,
            ErrorCode::InvalidConfig,
            ErrorCode::TryAgainLater,
            ErrorCode::NotAvailable,
            ErrorCode::LimitedConnectivity,
        ]
        .into_iter()
        .find(|code| code.value() == value)
        .unwrap_or(ErrorCode::Generic)
    }

    /// The numeric code written in the error object.
    pub fn value(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decoding => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::Generic => 999,
        }
    }
}

/// A CNI error: a code, a message saying what went wrong, and details saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The error code.
    pub code: ErrorCode,
    /// What failed.
    pub msg: String,
    /// More context: the underlying cause and what to do about it.
    pub details: String,
}

impl CniError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details (the cause, what to do).
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// A generic (999) failure.
    pub fn generic(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Generic, msg)
    }

    /// An invalid configuration (7).
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, msg)
    }

    /// A missing or invalid environment variable (4).
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidEnvironment, msg)
    }

    /// An I/O failure (5).
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Io, msg)
    }

    /// The error object in the JSON form the spec defines, for a configuration of `version`.
    pub fn to_json(&self, version: Version) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: Version,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let wire = Wire {
            cni_version: version,
            code: self.code.value(),
            msg: &self.msg,
            details: &self.details,
        };
        super::to_pretty_json(&wire)
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

impl From<podnet_netlink::Error> for CniError {
    fn from(err: podnet_netlink::Error) -> Self {
        CniError::generic(err.to_string())
    }
}

impl From<podnet_nft::Error> for CniError {
    fn from(err: podnet_nft::Error) -> Self {
        match err {
            podnet_nft::Error::Spawn(_) => CniError::generic(err.to_string())
                .details("install nftables (apt-get install nftables) or put nft on PATH"),
            podnet_nft::Error::Rejected { stderr, .. } => {
                CniError::generic("nftables rejected podnet's rules").details(stderr)
            }
            podnet_nft::Error::Netlink(err) => {
                CniError::generic("nftables rejected podnet's rules").details(err.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_carries_version_code_msg_and_details() {
        let err = CniError::invalid_env("required env variable CNI_NETNS is missing")
            .details("the runtime must set CNI_NETNS for ADD");
        let json: serde_json::Value = serde_json::from_str(&err.to_json(Version::V1_0_0)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "code": 4,
                "msg": "required env variable CNI_NETNS is missing",
                "details": "the runtime must set CNI_NETNS for ADD",
            })
        );
    }

    #[test]
    fn empty_details_are_omitted() {
        let json = CniError::generic("boom").to_json(Version::V1_1_0);
        assert!(!json.contains("details"), "{json}");
    }
}
