//! The result of ADD: the interfaces created, the addresses given, routes and DNS settings.
//!
//! podnet keeps one model, the 1.1.0 result, and writes it in the shape of whatever version the
//! configuration asked for. It reads results (an IPAM plugin's answer, a `prevResult`) of any
//! version back into that model.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::CniError;
use super::version::Version;

/// An interface an ADD created or configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Link name.
    pub name: String,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The network namespace path for an interface inside the container; absent for host links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Socket path for userspace interfaces (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// PCI ID of a hardware interface (1.1.0).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address given to an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, `10.0.0.2/24`.
    pub address: IpNet,
    /// The default gateway for this subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route to install in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteConfig {
    /// Destination prefix.
    pub dst: IpNet,
    /// Next hop; the gateway of the matching IP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Path MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Metric (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Route scope (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl RouteConfig {
    /// A route to `dst`, through `gw` when given.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        RouteConfig {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings for the container's resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when no setting is present.
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// The result of an ADD, in the 1.1.0 model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces created or configured.
    pub interfaces: Vec<Interface>,
    /// Addresses given.
    pub ips: Vec<IpConfig>,
    /// Routes installed in the container.
    pub routes: Vec<RouteConfig>,
    /// DNS settings.
    pub dns: Dns,
}

impl CniResult {
    /// Writes the result in the shape of `version`, as pretty JSON.
    pub fn to_json(&self, version: Version) -> String {
        super::to_pretty_json(&self.to_value(version))
    }

    /// The result in the shape of `version`.
    pub fn to_value(&self, version: Version) -> Value {
        let mut object = Map::new();
        object.insert("cniVersion".into(), version.as_str().into());
        if version.has_legacy_result() {
            for (key, v4) in [("ip4", true), ("ip6", false)] {
                if let Some(legacy) = self.legacy_ip(v4) {
                    object.insert(key.into(), legacy);
                }
            }
        } else {
            let modern_attributes = version.supports_status_and_gc();
            if !self.interfaces.is_empty() {
                let interfaces = self
                    .interfaces
                    .iter()
                    .map(|interface| {
                        let mut interface = interface.clone();
                        if !modern_attributes {
                            interface.mtu = None;
                            interface.socket_path = None;
                            interface.pci_id = None;
                        }
                        serde_json::to_value(interface).expect("interface serializes")
                    })
                    .collect();
                object.insert("interfaces".into(), Value::Array(interfaces));
            }
            if !self.ips.is_empty() {
                let ips = self
                    .ips
                    .iter()
                    .map(|ip| {
                        let mut value = Map::new();
                        if version.tags_ip_version() {
                            let family = if ip.address.addr().is_ipv4() { "4" } else { "6" };
                            value.insert("version".into(), family.into());
                        }
                        if let Some(interface) = ip.interface {
                            value.insert("interface".into(), interface.into());
                        }
                        value.insert("address".into(), ip.address.to_string().into());
                        if let Some(gateway) = ip.gateway {
                            value.insert("gateway".into(), gateway.to_string().into());
                        }
                        Value::Object(value)
                    })
                    .collect();
                object.insert("ips".into(), Value::Array(ips));
            }
            if !self.routes.is_empty() {
                let routes = self
                    .routes
                    .iter()
                    .map(|route| route_value(route, modern_attributes))
                    .collect();
                object.insert("routes".into(), Value::Array(routes));
            }
        }
        object.insert(
            "dns".into(),
            serde_json::to_value(&self.dns).expect("dns serializes"),
        );
        Value::Object(object)
    }

    /// The 0.1.0/0.2.0 `ip4` or `ip6` object: the first address of that family and its routes.
    fn legacy_ip(&self, v4: bool) -> Option<Value> {
        let ip = self.ips.iter().find(|ip| ip.address.addr().is_ipv4() == v4)?;
        let mut value = Map::new();
        value.insert("ip".into(), ip.address.to_string().into());
        if let Some(gateway) = ip.gateway {
            value.insert("gateway".into(), gateway.to_string().into());
        }
        let routes: Vec<Value> = self
            .routes
            .iter()
            .filter(|route| route.dst.addr().is_ipv4() == v4)
            .map(|route| route_value(route, false))
            .collect();
        if !routes.is_empty() {
            value.insert("routes".into(), Value::Array(routes));
        }
        Some(Value::Object(value))
    }

    /// Reads a result of any version (an IPAM answer or a `prevResult`).
    pub fn from_value(value: &Value) -> Result<Self, CniError> {
        let invalid = |err: serde_json::Error| {
            CniError::new(super::ErrorCode::Decoding, "cannot decode CNI result").details(err.to_string())
        };
        let object = value
            .as_object()
            .ok_or_else(|| CniError::new(super::ErrorCode::Decoding, "a CNI result must be a JSON object"))?;
        let dns = match object.get("dns") {
            Some(dns) => Dns::deserialize(dns).map_err(invalid)?,
            None => Dns::default(),
        };
        if object.contains_key("ip4") || object.contains_key("ip6") {
            #[derive(Deserialize)]
            struct LegacyIp {
                ip: IpNet,
                gateway: Option<IpAddr>,
                #[serde(default)]
                routes: Vec<RouteConfig>,
            }
            let mut result = CniResult {
                dns,
                ..CniResult::default()
            };
            for key in ["ip4", "ip6"] {
                if let Some(legacy) = object.get(key) {
                    let legacy = LegacyIp::deserialize(legacy).map_err(invalid)?;
                    result.ips.push(IpConfig {
                        address: legacy.ip,
                        gateway: legacy.gateway,
                        interface: None,
                    });
                    result.routes.extend(legacy.routes);
                }
            }
            return Ok(result);
        }
        let field = |key: &str| object.get(key).cloned().unwrap_or(Value::Array(Vec::new()));
        Ok(CniResult {
            interfaces: Vec::<Interface>::deserialize(field("interfaces")).map_err(invalid)?,
            ips: Vec::<IpConfig>::deserialize(field("ips")).map_err(invalid)?,
            routes: Vec::<RouteConfig>::deserialize(field("routes")).map_err(invalid)?,
            dns,
        })
    }
}

fn route_value(route: &RouteConfig, modern_attributes: bool) -> Value {
    let mut route = route.clone();
    if !modern_attributes {
        route.mtu = None;
        route.advmss = None;
        route.priority = None;
        route.table = None;
        route.scope = None;
    }
    serde_json::to_value(route).expect("route serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: Some("aa:bb:cc:dd:ee:01".into()),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("aa:bb:cc:dd:ee:02".into()),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/c1".into()),
                    ..Interface::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.0.10.2/24".parse().unwrap(),
                    gateway: Some("10.0.10.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::2/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![
                RouteConfig::new("0.0.0.0/0".parse().unwrap(), None),
                RouteConfig {
                    priority: Some(10),
                    ..RouteConfig::new("1.1.1.1/32".parse().unwrap(), Some("10.0.10.1".parse().unwrap()))
                },
            ],
            dns: Dns::default(),
        }
    }

    #[test]
    fn writes_1_1_0_with_every_attribute() {
        let value = sample().to_value(Version::V1_1_0);
        assert_eq!(value["interfaces"][1]["mtu"], json!(1500));
        assert_eq!(value["routes"][1]["priority"], json!(10));
        assert!(value["ips"][0].get("version").is_none());
    }

    #[test]
    fn writes_1_0_0_without_1_1_attributes() {
        let value = sample().to_value(Version::V1_0_0);
        assert_eq!(value["cniVersion"], json!("1.0.0"));
        assert!(value["interfaces"][1].get("mtu").is_none());
        assert!(value["routes"][1].get("priority").is_none());
        assert_eq!(value["ips"][0]["interface"], json!(1));
    }

    #[test]
    fn writes_0_4_0_with_ip_versions() {
        let value = sample().to_value(Version::V0_4_0);
        assert_eq!(value["ips"][0]["version"], json!("4"));
        assert_eq!(value["ips"][1]["version"], json!("6"));
    }

    #[test]
    fn writes_0_2_0_as_ip4_and_ip6_objects() {
        let value = sample().to_value(Version::V0_2_0);
        assert_eq!(
            value,
            json!({
                "cniVersion": "0.2.0",
                "ip4": {
                    "ip": "10.0.10.2/24",
                    "gateway": "10.0.10.1",
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "1.1.1.1/32", "gw": "10.0.10.1"}]
                },
                "ip6": {"ip": "fd00::2/64"},
                "dns": {}
            })
        );
    }

    #[test]
    fn reads_back_every_shape() {
        let original = sample();
        for version in [Version::V1_1_0, Version::V1_0_0, Version::V0_4_0, Version::V0_3_1] {
            let parsed = CniResult::from_value(&original.to_value(version)).unwrap();
            assert_eq!(parsed.ips, original.ips, "{version}");
            assert_eq!(parsed.interfaces.len(), 2);
        }
        let legacy = CniResult::from_value(&original.to_value(Version::V0_2_0)).unwrap();
        assert_eq!(legacy.ips.len(), 2);
        assert_eq!(legacy.routes.len(), 2);
        assert_eq!(legacy.ips[0].interface, None);
    }

    #[test]
    fn refuses_garbage() {
        assert!(CniResult::from_value(&json!([1, 2])).is_err());
        assert!(CniResult::from_value(&json!({"ips": [{"address": "not-an-ip"}]})).is_err());
    }
}
