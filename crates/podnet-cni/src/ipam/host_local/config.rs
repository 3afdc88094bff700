//! host-local's configuration: range sets, routes, data directory, resolv.conf.
//!
//! A *range* is a subnet with an optional `[rangeStart, rangeEnd]` window and a gateway. A
//! *range set* is a list of ranges of one family; host-local hands out exactly one address per
//! range set, so `[[v4 ranges], [v6 ranges]]` gives a dual-stack pod one address of each. The
//! legacy top-level `subnet`/`rangeStart`/`rangeEnd`/`gateway` keys form a single range set.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::spec::{CniError, RouteConfig};

/// The default data directory, shared with the reference host-local.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// A range as written in the configuration; addresses are parsed later for precise errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeKeys {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamKeys {
    #[serde(flatten)]
    legacy: RangeKeys,
    #[serde(default)]
    ranges: Vec<Vec<RangeKeys>>,
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    resolv_conf: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Keys {
    ipam: Option<IpamKeys>,
}

/// One allocatable range, validated and with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet; addresses are given with its prefix length.
    pub subnet: IpNet,
    /// First allocatable address.
    pub start: IpAddr,
    /// Last allocatable address.
    pub end: IpAddr,
    /// The gateway, never handed out.
    pub gateway: IpAddr,
}

/// The validated host-local configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Range sets; one address is allocated from each.
    pub range_sets: Vec<Vec<Range>>,
    /// Routes reported in the result.
    pub routes: Vec<RouteConfig>,
    /// Where allocations are recorded (the network's directory is below it).
    pub data_dir: PathBuf,
    /// A resolv.conf whose settings are reported as the result's DNS.
    pub resolv_conf: Option<PathBuf>,
}

impl Config {
    /// Reads the `ipam` section of a decoded network configuration.
    pub fn parse(config: &serde_json::Value) -> Result<Self, CniError> {
        let keys = Keys::deserialize(config)
            .map_err(|err| CniError::invalid_config("invalid ipam configuration").details(err.to_string()))?;
        let ipam = keys
            .ipam
            .ok_or_else(|| CniError::invalid_config("host-local needs an \"ipam\" section"))?;
        let written_sets = if ipam.legacy.subnet.is_some() {
            let mut sets = vec![vec![ipam.legacy.clone()]];
            sets.extend(ipam.ranges.iter().cloned());
            sets
        } else {
            ipam.ranges.clone()
        };
        if written_sets.is_empty() {
            return Err(CniError::invalid_config("no IP ranges specified")
                .details("give ipam.subnet, or ipam.ranges as a list of range sets"));
        }
        let range_sets = written_sets
            .iter()
            .enumerate()
            .map(|(index, set)| {
                range_set(set).map_err(|err| {
                    CniError::invalid_config(format!("invalid range set {index}: {}", err.msg))
                        .details(err.details)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let all: Vec<&Range> = range_sets.iter().flatten().collect();
        for (index, a) in all.iter().enumerate() {
            if let Some(b) = all[index + 1..]
                .iter()
                .find(|b| a.start <= b.end && b.start <= a.end)
            {
                return Err(CniError::invalid_config(format!(
                    "ranges overlap: {} and {}",
                    describe(a),
                    describe(b)
                ))
                .details("every address may belong to one range only"));
            }
        }
        Ok(Config {
            range_sets,
            routes: ipam.routes,
            data_dir: ipam.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            resolv_conf: ipam.resolv_conf,
        })
    }
}

fn range_set(written: &[RangeKeys]) -> Result<Vec<Range>, CniError> {
    if written.is_empty() {
        return Err(CniError::invalid_config("empty range set"));
    }
    let ranges = written.iter().map(range).collect::<Result<Vec<_>, _>>()?;
    let family = ranges[0].subnet.addr().is_ipv4();
    if ranges.iter().any(|range| range.subnet.addr().is_ipv4() != family) {
        return Err(CniError::invalid_config("a range set mixes IPv4 and IPv6 ranges")
            .details("put IPv4 and IPv6 ranges in separate range sets"));
    }
    Ok(ranges)
}

fn range(written: &RangeKeys) -> Result<Range, CniError> {
    let text = written.subnet.as_deref().unwrap_or_default();
    let subnet: IpNet = text.parse().map_err(|_| {
        CniError::invalid_config(format!("invalid CIDR address: {text}"))
            .details("write the subnet as ADDRESS/PREFIX, e.g. 10.22.0.0/16")
    })?;
    if subnet.network() != subnet.addr() {
        return Err(
            CniError::invalid_config(format!("network {subnet} has host bits set")).details(format!(
                "for a /{} the network address is {}",
                subnet.prefix_len(),
                subnet.trunc()
            )),
        );
    }
    let usable_bits = subnet.max_prefix_len() - subnet.prefix_len();
    if usable_bits < 2 {
        return Err(
            CniError::invalid_config(format!("network {subnet} too small to allocate from"))
                .details("use a prefix of at most /30 (IPv4) or /126 (IPv6)"),
        );
    }
    let network = subnet.network();
    // IPv4 reserves the broadcast address; IPv6 has none.
    let last = match subnet {
        IpNet::V4(v4) => IpAddr::V4(offset_v4(v4.broadcast(), -1)),
        IpNet::V6(v6) => IpAddr::V6(v6.broadcast()),
    };
    let first = next(network);
    let start = written.range_start.unwrap_or(first);
    let end = written.range_end.unwrap_or(last);
    let gateway = written.gateway.unwrap_or(first);
    for (what, ip) in [("rangeStart", start), ("rangeEnd", end)] {
        if !subnet.contains(&ip) || ip == network || ip > last {
            return Err(CniError::invalid_config(format!(
                "{what} {ip} is not a usable address of {subnet}"
            )));
        }
    }
    if start > end {
        return Err(CniError::invalid_config(format!(
            "rangeStart {start} is after rangeEnd {end}"
        )));
    }
    if !subnet.contains(&gateway) {
        return Err(CniError::invalid_config(format!(
            "gateway {gateway} is outside {subnet}"
        )));
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

/// `10.0.0.2-10.0.0.254`, as errors show a range.
pub fn describe(range: &Range) -> String {
    format!("{}-{}", range.start, range.end)
}

/// The address after `ip` (wrapping at the end of the space).
pub fn next(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(offset_v4(v4, 1)),
        IpAddr::V6(v6) => IpAddr::V6(u128::from(v6).wrapping_add(1).into()),
    }
}

fn offset_v4(ip: std::net::Ipv4Addr, delta: i64) -> std::net::Ipv4Addr {
    ((u32::from(ip) as i64 + delta) as u32).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(ipam: serde_json::Value) -> Result<Config, CniError> {
        Config::parse(&json!({"cniVersion": "1.0.0", "name": "n", "ipam": ipam}))
    }

    #[test]
    fn legacy_subnet_gets_reference_defaults() {
        let config = parse(json!({"type": "host-local", "subnet": "10.0.10.0/24"})).unwrap();
        let range = &config.range_sets[0][0];
        assert_eq!(range.start.to_string(), "10.0.10.1");
        assert_eq!(range.end.to_string(), "10.0.10.254");
        assert_eq!(range.gateway.to_string(), "10.0.10.1");
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn ipv6_range_ends_at_the_last_address() {
        let config = parse(json!({"ranges": [[{"subnet": "fd00:10::/64"}]]})).unwrap();
        assert_eq!(
            config.range_sets[0][0].end.to_string(),
            "fd00:10::ffff:ffff:ffff:ffff"
        );
    }

    #[test]
    fn explicit_window_and_gateway_are_kept() {
        let config = parse(json!({
            "subnet": "10.88.11.0/24", "rangeStart": "10.88.11.100",
            "rangeEnd": "10.88.11.102", "gateway": "10.88.11.254",
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/tmp/x"
        }))
        .unwrap();
        let range = &config.range_sets[0][0];
        assert_eq!(
            (range.start.to_string(), range.end.to_string()),
            ("10.88.11.100".into(), "10.88.11.102".into())
        );
        assert_eq!(config.routes.len(), 1);
    }

    #[test]
    fn refuses_bad_ranges_with_reasons() {
        let cases = [
            (json!({}), "no IP ranges"),
            (json!({"subnet": "10.88.7.0/33"}), "invalid CIDR"),
            (json!({"subnet": "notacidr"}), "invalid CIDR"),
            (json!({"subnet": "10.0.0.5/24"}), "host bits"),
            (json!({"subnet": "10.0.0.0/31"}), "too small"),
            (
                json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}),
                "not a usable address",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.3"}),
                "after",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
                "mixes",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]}),
                "overlap",
            ),
        ];
        for (ipam, expected) in cases {
            let err = parse(ipam.clone()).unwrap_err();
            let text = format!("{} {}", err.msg, err.details);
            assert!(text.contains(expected), "{ipam}: {text}");
        }
    }
}
