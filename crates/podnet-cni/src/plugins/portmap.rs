//! portmap: forwards ports of the host to a container (`hostPort` in Kubernetes, `-p` in podman).
//!
//! A chained plugin: it runs after the main plugin, reads the container's addresses from
//! `prevResult` and the wanted mappings from `runtimeConfig.portMappings` (the runtime fills it
//! in because the plugin declares the `portMappings` capability). Each mapping becomes an
//! element of a DNAT map in podnet's nftables table; see [`crate::firewall`].

use std::net::IpAddr;
use std::path::PathBuf;

use podnet_netlink::sysctl;
use serde::{Deserialize, Serialize};

use crate::firewall::{self, PortForward, Verb};
use crate::skel::{Call, Plugin};
use crate::spec::{CniError, CniResult, ErrorCode, NetConf};
use crate::state::{Claims, PluginState, RecordLock, Records};

/// The portmap plugin.
pub struct Portmap;

/// Name of this plugin's record directory.
const RECORDS: &str = "portmap";
/// The packet mark bit the reference plugin uses by default (`markMasqBit`), and podnet always.
const MARK_MASQ_BIT: u32 = 13;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keys {
    #[serde(default)]
    runtime_config: RuntimeConfig,
    #[serde(default = "enabled")]
    snat: bool,
    #[serde(default)]
    mark_masq_bit: Option<u32>,
    #[serde(default)]
    external_set_mark_chain: Option<String>,
    #[serde(default)]
    conditions_v4: Option<serde_json::Value>,
    #[serde(default)]
    conditions_v6: Option<serde_json::Value>,
    /// Where attachment records are kept (podnet's own key).
    #[serde(default)]
    state_dir: Option<PathBuf>,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
}

/// One entry of `runtimeConfig.portMappings`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortMapping {
    host_port: u16,
    container_port: u16,
    #[serde(default = "default_protocol")]
    protocol: String,
    #[serde(default, rename = "hostIP")]
    host_ip: Option<String>,
}

fn default_protocol() -> String {
    "tcp".into()
}

/// The forwards installed for one attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    forwards: Vec<PortForward>,
}

/// The claim of a host port (`tcp-8080-any-v4`, `udp-53-192.0.2.1`): one attachment at most
/// holds it.
fn host_port_claim(forward: &PortForward) -> String {
    let (protocol, port) = (&forward.protocol, forward.host_port);
    match forward.host_ip {
        Some(ip) => format!("{protocol}-{port}-{ip}"),
        None => format!(
            "{protocol}-{port}-any-{}",
            if forward.container_ip.is_ipv4() {
                "v4"
            } else {
                "v6"
            }
        ),
    }
}

struct Conf {
    net: NetConf<Keys>,
    records: Records,
    /// Host ports and the attachment holding each.
    claims: Claims,
}

impl Conf {
    fn parse(call: &Call) -> Result<Self, CniError> {
        let net = NetConf::<Keys>::parse(&call.config)?;
        let keys = &net.plugin;
        if keys.mark_masq_bit.is_some_and(|bit| bit != MARK_MASQ_BIT)
            || keys.external_set_mark_chain.is_some()
            || keys.conditions_v4.is_some()
            || keys.conditions_v6.is_some()
        {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                "podnet's portmap does not support markMasqBit, externalSetMarkChain or conditions",
            )
            .details(
                "remove these keys; podnet marks hairpin traffic with bit 13 in its own nftables table",
            ));
        }
        let PluginState { records, claims } = PluginState::new(keys.state_dir.as_deref(), RECORDS, &net.name);
        Ok(Conf { net, records, claims })
    }

    fn prev_result(&self) -> Result<&CniResult, CniError> {
        self.net.prev_result.as_ref().ok_or_else(|| {
            CniError::generic("must be called as chained plugin")
                .details("portmap needs the prevResult of a main plugin")
        })
    }

    /// The forwards the configuration asks for, one per mapping and container address.
    fn forwards(&self) -> Result<Vec<PortForward>, CniError> {
        let prev = self.prev_result()?;
        let container_ips: Vec<_> = prev
            .ips
            .iter()
            .filter(|ip| {
                ip.interface
                    .and_then(|index| prev.interfaces.get(index))
                    .is_none_or(|interface| interface.sandbox.is_some())
            })
            .collect();
        let mut forwards = Vec::new();
        for mapping in &self.net.plugin.runtime_config.port_mappings {
            let protocol = mapping.protocol.to_ascii_lowercase();
            if !["tcp", "udp", "sctp"].contains(&protocol.as_str()) {
                return Err(CniError::invalid_config(format!(
                    "unsupported port mapping protocol {:?}",
                    mapping.protocol
                ))
                .details("use tcp, udp or sctp"));
            }
            if mapping.host_port == 0 || mapping.container_port == 0 {
                return Err(CniError::invalid_config(
                    "port mappings need a non-zero hostPort and containerPort",
                ));
            }
            let host_ip = match mapping.host_ip.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                    CniError::invalid_config(format!("invalid hostIP {text:?} in port mapping"))
                })?)
                .filter(|ip| !ip.is_unspecified()),
            };
            for ip in &container_ips {
                let container_ip = ip.address.addr();
                if host_ip.is_some_and(|host_ip| host_ip.is_ipv4() != container_ip.is_ipv4()) {
                    continue;
                }
                forwards.push(PortForward {
                    protocol: protocol.clone(),
                    host_port: mapping.host_port,
                    host_ip,
                    container_ip,
                    container_port: mapping.container_port,
                    container_subnet: ip.address.trunc(),
                });
            }
        }
        Ok(forwards)
    }
}

impl Plugin for Portmap {
    fn add(&self, call: &Call) -> Result<CniResult, CniError> {
        let conf = Conf::parse(call)?;
        let prev = conf.prev_result()?.clone();
        let mut forwards = conf.forwards()?;
        if forwards.is_empty() {
            return Ok(prev);
        }
        if !conf.net.plugin.snat {
            // Without SNAT, hairpin and localhost clients are not masqueraded.
            for forward in &mut forwards {
                forward.container_subnet = ipnet::IpNet::new(
                    forward.container_ip,
                    if forward.container_ip.is_ipv4() { 32 } else { 128 },
                )
                .expect("host prefix");
            }
        }
        {
            let lock = conf.records.lock()?;
            let (id, ifname) = (&call.env.container_id, &call.env.ifname);
            let own = format!("{id}:{ifname}");
            for (index, forward) in forwards.iter().enumerate() {
                let claim = host_port_claim(forward);
                let holders = conf.claims.holders(&claim)?;
                if let Some(holder) = holders.iter().find(|holder| **holder != own) {
                    for taken in &forwards[..index] {
                        conf.claims.remove(&lock, &host_port_claim(taken), id, ifname)?;
                    }
                    return Err(CniError::generic(format!(
                        "host port {}/{} is already mapped by another container",
                        forward.host_port, forward.protocol
                    ))
                    .details(format!(
                        "{holder} holds it; choose another hostPort or remove that container first"
                    )));
                }
                conf.claims.add(&lock, &claim, id, ifname)?;
            }
            conf.records.write(
                &lock,
                id,
                ifname,
                &Record {
                    forwards: forwards.clone(),
                },
            )?;
        }
        let mut elements = podnet_nft::Transaction::new();
        firewall::port_forward_elements(&mut elements, Verb::Add, &forwards);
        let applied = firewall::start(elements).and_then(|applying| {
            // Localhost clients reach the container only if the kernel may route 127/8 out of
            // the bridge; the reference plugin enables the same setting.
            if conf.net.plugin.snat
                && let Some(bridge) = prev
                    .interfaces
                    .iter()
                    .find(|interface| interface.sandbox.is_none())
            {
                sysctl::set(&format!("net.ipv4.conf.{}.route_localnet", bridge.name), "1")?;
            }
            applying.wait()
        });
        if let Err(err) = applied {
            // The transaction failed as a whole: only the claims and the record remain.
            let (id, ifname) = (&call.env.container_id, &call.env.ifname);
            let _ = conf.records.lock().and_then(|lock| {
                for forward in &forwards {
                    conf.claims.remove(&lock, &host_port_claim(forward), id, ifname)?;
                }
                conf.records.remove(&lock, id, ifname)
            });
            return Err(err);
        }
        Ok(prev)
    }

    fn del(&self, call: &Call) -> Result<(), CniError> {
        let conf = Conf::parse(call)?;
        let lock = conf.records.lock()?;
        release(&conf, &lock, &call.env.container_id, &call.env.ifname)
    }

    fn check(&self, call: &Call) -> Result<(), CniError> {
        let conf = Conf::parse(call)?;
        let wanted = conf.forwards()?;
        let record: Option<Record> = conf.records.read(&call.env.container_id, &call.env.ifname)?;
        let installed = record.map(|record| record.forwards).unwrap_or_default();
        if installed != wanted {
            return Err(
                CniError::generic("port mappings differ from what ADD installed").details(format!(
                    "wanted {}, installed {}",
                    wanted.len(),
                    installed.len()
                )),
            );
        }
        for forward in &installed {
            let mut probe = podnet_nft::Transaction::new();
            // `get element` fails unless the element exists.
            let v = if forward.container_ip.is_ipv4() {
                "v4"
            } else {
                "v6"
            };
            match forward.host_ip {
                Some(host_ip) => probe.push_fmt(format_args!(
                    "get element inet {} portmap-addr-{v} {{ {host_ip} . {} . {} }}",
                    firewall::TABLE,
                    forward.protocol,
                    forward.host_port
                )),
                None => probe.push_fmt(format_args!(
                    "get element inet {} portmap-any-{v} {{ {} . {} }}",
                    firewall::TABLE,
                    forward.protocol,
                    forward.host_port
                )),
            };
            probe.apply().map_err(|_| {
                CniError::generic(format!(
                    "host port {}/{} is not forwarded",
                    forward.host_port, forward.protocol
                ))
            })?;
        }
        Ok(())
    }

    fn status(&self, _call: &Call) -> Result<(), CniError> {
        let nft_installed = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("nft").is_file()));
        if nft_installed {
            Ok(())
        } else {
            Err(CniError::new(ErrorCode::NotAvailable, "nft is not installed")
                .details("apt-get install nftables"))
        }
    }

    fn gc(&self, call: &Call) -> Result<(), CniError> {
        let conf = Conf::parse(call)?;
        let valid = call.valid_attachments()?;
        let lock = conf.records.lock()?;
        let mut errors = Vec::new();
        for (container_id, ifname, _) in conf.records.list::<Record>()? {
            if !valid.contains(&(container_id.clone(), ifname.clone())) {
                errors.extend(release(&conf, &lock, &container_id, &ifname).err());
            }
        }
        // A claim without a record never reached the kernel: just drop it.
        errors.extend(conf.claims.release_orphans(&lock, &conf.records).err());
        errors.into_iter().next().map_or(Ok(()), Err)
    }
}

/// Removes an attachment's forwards, claims and record. Only forwards whose host port the
/// attachment still held are deleted from the kernel.
fn release(conf: &Conf, lock: &RecordLock, container_id: &str, ifname: &str) -> Result<(), CniError> {
    let Some(record) = conf.records.read::<Record>(container_id, ifname)? else {
        return Ok(());
    };
    let mut held = Vec::new();
    for forward in record.forwards {
        if conf
            .claims
            .remove(lock, &host_port_claim(&forward), container_id, ifname)?
        {
            held.push(forward);
        }
    }
    conf.records.remove(lock, container_id, ifname)?;
    if held.is_empty() || !podnet_nft::table_exists(podnet_nft::Family::Inet, firewall::TABLE).unwrap_or(true)
    {
        return Ok(());
    }
    let mut tx = podnet_nft::Transaction::new();
    firewall::port_forward_elements(&mut tx, Verb::Delete, &held);
    tx.apply().map_err(CniError::from)
}
