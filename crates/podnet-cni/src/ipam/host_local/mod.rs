//! host-local: IP address management from ranges configured per node, recorded on local disk.
//!
//! The bridge plugin does not choose addresses itself: it executes the IPAM plugin named in its
//! configuration with the same environment and stdin, and host-local answers with one address
//! per range set. Kubernetes nodes typically give it the node's `podCIDR`, so addresses are
//! unique cluster-wide without any coordination between nodes.

mod allocator;
mod config;
mod store;

use std::net::IpAddr;

use ipnet::IpNet;

pub use config::{Config, DEFAULT_DATA_DIR, Range};
use store::Store;

use crate::skel::{Call, Plugin};
use crate::spec::{CniError, CniResult, Dns, ErrorCode, IpConfig};

/// The host-local IPAM plugin.
pub struct HostLocal;

impl Plugin for HostLocal {
    fn add(&self, call: &Call) -> Result<CniResult, CniError> {
        let config = Config::parse(&call.config)?;
        let name = network_name(call)?;
        let (id, ifname) = (&call.env.container_id, &call.env.ifname);
        let mut requested = requested_ips(call)?;
        let store = Store::lock(&config.data_dir, &name)?;
        // A runtime may ADD an attachment twice by mistake; podnet's index finds the addresses
        // it gave the attachment without reading every address file (those the reference
        // plugin gave, or an ADD killed before indexing, are not in it).
        let held = store.indexed(id, ifname)?.unwrap_or_default();
        let mut ips = Vec::new();
        let mut allocated = Vec::new();
        let outcome = (|| {
            for (index, ranges) in config.range_sets.iter().enumerate() {
                if let Some(ip) = held.iter().find(|ip| in_ranges(ranges, **ip)) {
                    return Err(CniError::generic(format!(
                        "failed to allocate for range {index}: {ip} has been allocated to {id}, duplicate allocation is not allowed"
                    ))
                    .details("DEL the attachment before adding it again"));
                }
                let range_of = |ip: IpAddr| ranges.iter().find(|range| range.start <= ip && ip <= range.end);
                let ip = match requested.iter().position(|&ip| range_of(ip).is_some()) {
                    Some(position) => {
                        let ip = requested.remove(position);
                        if ip == range_of(ip).expect("matched above").gateway
                            || !store.reserve(ip, id, ifname, index)?
                        {
                            return Err(CniError::generic(format!(
                                "requested IP address {ip} is not available in range set {}",
                                describe_set(ranges)
                            )));
                        }
                        ip
                    }
                    None => loop {
                        let candidate = allocator::select(ranges, store.last_reserved(index), |ip| store.is_reserved(ip))
                            .ok_or_else(|| {
                                CniError::generic(format!(
                                    "failed to allocate for range {index}: no IP addresses available in range set: {}",
                                    describe_set(ranges)
                                ))
                                .details("release addresses (DEL, GC) or widen the range")
                            })?;
                        if store.reserve(candidate, id, ifname, index)? {
                            break candidate;
                        }
                    },
                };
                allocated.push(ip);
                let range = range_of(ip).expect("allocated inside the set");
                ips.push(IpConfig {
                    address: IpNet::new(ip, range.subnet.prefix_len()).expect("prefix of a valid subnet"),
                    gateway: Some(range.gateway),
                    interface: None,
                });
            }
            if !requested.is_empty() {
                return Err(CniError::generic(format!(
                    "requested IPs {requested:?} are not in any configured range"
                )));
            }
            store.index(id, ifname, &allocated)
        })();
        if let Err(err) = outcome {
            // Give back what this call took before failing.
            for ip in allocated {
                let _ = store.release(ip);
            }
            return Err(err);
        }
        Ok(CniResult {
            interfaces: Vec::new(),
            ips,
            routes: config.routes,
            dns: match &config.resolv_conf {
                Some(path) => read_resolv_conf(path)?,
                None => Dns::default(),
            },
        })
    }

    fn del(&self, call: &Call) -> Result<(), CniError> {
        let config = Config::parse(&call.config)?;
        let name = network_name(call)?;
        let Some(store) = Store::lock_existing(&config.data_dir, &name)? else {
            return Ok(());
        };
        let (id, ifname) = (&call.env.container_id, &call.env.ifname);
        for ip in store.held_by(id, ifname)? {
            store.release(ip)?;
        }
        store.unindex(id, ifname)
    }

    fn check(&self, call: &Call) -> Result<(), CniError> {
        let config = Config::parse(&call.config)?;
        let name = network_name(call)?;
        let held = match Store::lock_existing(&config.data_dir, &name)? {
            Some(store) => !store
                .held_by(&call.env.container_id, &call.env.ifname)?
                .is_empty(),
            None => false,
        };
        if held {
            return Ok(());
        }
        Err(CniError::generic(format!(
            "host-local: Failed to find address added by container {}",
            call.env.container_id
        )))
    }

    fn status(&self, call: &Call) -> Result<(), CniError> {
        let config = Config::parse(&call.config)?;
        let name = network_name(call)?;
        let store = Store::lock(&config.data_dir, &name)
            .map_err(|err| CniError::new(ErrorCode::NotAvailable, err.msg).details(err.details))?;
        for (index, ranges) in config.range_sets.iter().enumerate() {
            if allocator::select(ranges, store.last_reserved(index), |ip| store.is_reserved(ip)).is_none() {
                return Err(CniError::new(
                    ErrorCode::NotAvailable,
                    format!("no IP addresses available in range set {}", describe_set(ranges)),
                )
                .details("ADD would fail until addresses are released or the range is widened"));
            }
        }
        Ok(())
    }

    fn gc(&self, call: &Call) -> Result<(), CniError> {
        let config = Config::parse(&call.config)?;
        let name = network_name(call)?;
        let valid = call.valid_attachments()?;
        let Some(store) = Store::lock_existing(&config.data_dir, &name)? else {
            return Ok(());
        };
        store.remove_old_temporaries()?;
        for (ip, owner) in store.reservations()? {
            let kept = valid.iter().any(|(id, ifname)| owner.is(id, ifname));
            if !kept {
                store.release(ip)?;
            }
        }
        for (id, ifname) in store.indexed_owners() {
            if !valid.contains(&(id.clone(), ifname.clone())) {
                store.unindex(&id, &ifname)?;
            }
        }
        Ok(())
    }
}

fn network_name(call: &Call) -> Result<String, CniError> {
    crate::spec::NetConf::<serde::de::IgnoredAny>::parse(&call.config).map(|conf| conf.name)
}

fn in_ranges(ranges: &[Range], ip: IpAddr) -> bool {
    ranges.iter().any(|range| range.start <= ip && ip <= range.end)
}

fn describe_set(ranges: &[Range]) -> String {
    ranges.iter().map(config::describe).collect::<Vec<_>>().join(",")
}

/// Addresses the runtime asked for: `CNI_ARGS` `IP=a,b`, `runtimeConfig.ips` or `args.cni.ips`.
fn requested_ips(call: &Call) -> Result<Vec<IpAddr>, CniError> {
    let mut texts: Vec<String> = Vec::new();
    if let Some(list) = call.env.arg("IP") {
        texts.extend(list.split(',').map(str::to_owned));
    }
    for pointer in ["/runtimeConfig/ips", "/args/cni/ips"] {
        if let Some(serde_json::Value::Array(items)) = call.config.pointer(pointer) {
            texts.extend(items.iter().filter_map(|item| item.as_str().map(str::to_owned)));
        }
    }
    texts
        .iter()
        .map(|text| {
            let text = text.trim();
            text.parse::<IpAddr>()
                .or_else(|_| text.parse::<IpNet>().map(|net| net.addr()))
                .map_err(|_| CniError::invalid_config(format!("invalid requested IP address {text:?}")))
        })
        .collect()
}

/// The DNS settings of a resolv.conf file.
fn read_resolv_conf(path: &std::path::Path) -> Result<Dns, CniError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        CniError::io(format!("host-local: cannot read resolvConf {}", path.display()))
            .details(err.to_string())
    })?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_owned)),
            Some("domain") => dns.domain = words.next().map(str::to_owned),
            Some("search") => dns.search = words.map(str::to_owned).collect(),
            Some("options") => dns.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    Ok(dns)
}
