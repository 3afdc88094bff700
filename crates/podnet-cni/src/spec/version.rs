//! CNI specification versions and which of them podnet speaks.
//!
//! Every configuration names the spec version it was written for (`cniVersion`) and the plugin
//! must answer in that same version. Results changed shape twice: 0.1.0/0.2.0 carried one `ip4`
//! and one `ip6` object, 0.3.0 introduced `interfaces` and an `ips` list with a `version` field,
//! and 1.0.0 dropped that field. 1.1.0 added the STATUS and GC commands.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A CNI specification version podnet understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.1.0: `ip4`/`ip6` results.
    V0_1_0,
    /// 0.2.0: like 0.1.0.
    V0_2_0,
    /// 0.3.0: `interfaces` and `ips` with a `version` field.
    V0_3_0,
    /// 0.3.1: like 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops the per-IP `version` field.
    V1_0_0,
    /// 1.1.0: adds STATUS and GC, route and interface attributes.
    V1_1_0,
}

/// Every version podnet accepts, oldest first, as VERSION reports them.
pub const SUPPORTED: [Version; 7] = [
    Version::V0_1_0,
    Version::V0_2_0,
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

impl Version {
    /// The newest version podnet implements.
    pub const LATEST: Version = Version::V1_1_0;

    /// The version as it is written in configurations.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Results of this version use the `ip4`/`ip6` shape.
    pub fn has_legacy_result(self) -> bool {
        self < Version::V0_3_0
    }

    /// Results of this version tag each IP with `"version": "4"` or `"6"`.
    pub fn tags_ip_version(self) -> bool {
        (Version::V0_3_0..Version::V1_0_0).contains(&self)
    }

    /// CHECK exists from 0.4.0 on.
    pub fn supports_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// STATUS, GC and the 1.1 result attributes exist from 1.1.0 on.
    pub fn supports_status_and_gc(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `cniVersion` value podnet does not implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVersion(pub String);

impl FromStr for Version {
    type Err = UnknownVersion;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SUPPORTED
            .into_iter()
            .find(|version| version.as_str() == text)
            .ok_or_else(|| UnknownVersion(text.to_owned()))
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|UnknownVersion(text)| {
            serde::de::Error::custom(format!("unsupported cniVersion {text:?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version_and_nothing_else() {
        for version in SUPPORTED {
            assert_eq!(version.as_str().parse::<Version>(), Ok(version));
        }
        assert_eq!("9.9.9".parse::<Version>(), Err(UnknownVersion("9.9.9".into())));
        assert!("1.0".parse::<Version>().is_err());
    }

    #[test]
    fn result_shapes_follow_the_spec_history() {
        assert!(Version::V0_2_0.has_legacy_result());
        assert!(!Version::V0_3_0.has_legacy_result());
        assert!(Version::V0_4_0.tags_ip_version());
        assert!(!Version::V1_0_0.tags_ip_version());
        assert!(!Version::V0_3_1.supports_check());
        assert!(Version::V1_1_0.supports_status_and_gc());
    }
}
