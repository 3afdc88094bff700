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

/// The claim of the hairpin elements of `forward` (`hairpin-tcp-8080-10.88.0.0/24`), which
/// forwards of one subnet and host port on different host addresses share.
fn hairpin_claim(forward: &PortForward) -> Option<String> {
    let subnet = forward.hairpin_subnet?;
    Some(format!(
        "hairpin-{}-{}-{}",
        forward.protocol,
        forward.host_port,
        subnet.trunc()
    ))
}

/// Every claim an attachment with `forwards` holds: host ports and hairpin elements.
fn claims_of(forwards: &[PortForward]) -> Vec<String> {
    let mut claims: Vec<String> = forwards.iter().map(host_port_claim).collect();
    claims.extend(forwards.iter().filter_map(hairpin_claim));
    claims.sort();
    claims.dedup();
    claims
}

/// The claim of a host port (`tcp-8080-any-v4`, `udp-53-192.0.2.1`): one attachment at most
/// holds it.
fn host_port_claim(forward: &PortForward) -> String {
    let (protocol, port) = (&forward.protocol, forward.host_port);
    match forward.host_ip {
        Some(ip) => format!("{protocol}-{port}-{ip}"),
        None => format!(
            "{protocol}-{port}-any-{}",
            firewall::family_suffix(forward.container_ip)
        ),
    }
}

/// The claims that stand in `forward`'s way among those `held`: its own, and the other side of
/// "all addresses" against "one address" of the same port (the more specific DNAT rule would
/// silently win).
fn conflicting_claims(forward: &PortForward, held: &[String]) -> Vec<String> {
    let own = host_port_claim(forward);
    let any = host_port_claim(&PortForward {
        host_ip: None,
        ..forward.clone()
    });
    let same_port = format!("{}-{}-", forward.protocol, forward.host_port);
    let v6 = forward.container_ip.is_ipv6();
    held.iter()
        .filter(|claim| {
            **claim == own
                || (forward.host_ip.is_some() && **claim == any)
                || (forward.host_ip.is_none()
                    && claim
                        .strip_prefix(&same_port)
                        .is_some_and(|rest| rest.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6() == v6)))
        })
        .cloned()
        .collect()
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
        if keys
            .mark_masq_bit
            .is_some_and(|bit| 1u32.checked_shl(bit) != Some(firewall::MASQUERADE_MARK))
            || keys.external_set_mark_chain.is_some()
            || keys.conditions_v4.is_some()
            || keys.conditions_v6.is_some()
        {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                "podnet's portmap does not support markMasqBit other than 13, externalSetMarkChain or conditions",
            )
            .details("remove these keys; podnet marks hairpin traffic with bit 13 in its own nftables table"));
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
                    hairpin_subnet: self.net.plugin.snat.then(|| ip.address.trunc()),
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
        let forwards = conf.forwards()?;
        if forwards.is_empty() {
            return Ok(prev);
        }
        let (id, ifname) = (&call.env.container_id, &call.env.ifname);
        let claims = claims_of(&forwards);
        {
            let lock = conf.records.lock()?;
            // An ADD repeated for the same attachment replaces what the first one installed.
            release(&conf, &lock, id, ifname)?;
            let own = format!("{id}:{ifname}");
            let held = conf.claims.resources();
            for forward in &forwards {
                for claim in conflicting_claims(forward, &held) {
                    if let Some(holder) = conf
                        .claims
                        .holders(&claim)?
                        .into_iter()
                        .find(|holder| *holder != own)
                    {
                        return Err(CniError::generic(format!(
                            "host port {}/{} is already mapped by another container",
                            forward.host_port, forward.protocol
                        ))
                        .details(format!(
                            "{holder} holds it ({claim}); choose another hostPort or remove that container first"
                        )));
                    }
                }
            }
            for claim in &claims {
                conf.claims.add(&lock, claim, id, ifname)?;
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
        // Localhost clients reach the container only if the kernel may route 127/8 out of the
        // bridge; the reference plugin enables the same setting.
        let localnet = match prev
            .interfaces
            .iter()
            .find(|interface| interface.sandbox.is_none())
        {
            Some(bridge) if conf.net.plugin.snat => {
                sysctl::set(&format!("net/ipv4/conf/{}/route_localnet", bridge.name), "1")
                    .map_err(CniError::from)
            }
            _ => Ok(()),
        };
        let mut elements = podnet_nft::Script::new();
        firewall::port_forward_elements(&mut elements, Verb::Add, &forwards);
        firewall::hairpin_elements(&mut elements, Verb::Add, &forwards);
        // One transaction: when it fails, nothing of it reached the kernel.
        let applied = localnet.and_then(|()| firewall::start(elements)?.wait());
        if let Err(err) = applied {
            let _ = conf.records.lock().and_then(|lock| {
                conf.claims.release(&lock, &claims, id, ifname, |_| Ok(()))?;
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
            // `get element` fails unless the element exists.
            let (set, element) = firewall::port_forward_element(forward);
            let mut probe = podnet_nft::Script::new();
            probe.get_elements(&podnet_nft::registry::CNI_TABLE, &set, [&element]);
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
        errors.extend(
            conf.claims
                .release_orphans(&lock, &conf.records, |_| Ok(()))
                .err(),
        );
        errors.into_iter().next().map_or(Ok(()), Err)
    }
}

/// Removes an attachment's forwards, claims and record: the kernel's elements first, so that a
/// failure leaves the claims and the record for a retry.
fn release(conf: &Conf, lock: &RecordLock, container_id: &str, ifname: &str) -> Result<(), CniError> {
    let Some(record) = conf.records.read::<Record>(container_id, ifname)? else {
        return Ok(());
    };
    let claims = claims_of(&record.forwards);
    conf.claims
        .release(lock, &claims, container_id, ifname, |unheld| {
            let unheld_by = |claim: Option<String>| claim.is_some_and(|claim| unheld.contains(&claim));
            let forwarded: Vec<PortForward> = record
                .forwards
                .iter()
                .filter(|forward| unheld_by(Some(host_port_claim(forward))))
                .cloned()
                .collect();
            let hairpins: Vec<PortForward> = record
                .forwards
                .iter()
                .filter(|forward| unheld_by(hairpin_claim(forward)))
                .cloned()
                .collect();
            let mut tx = podnet_nft::Script::new();
            firewall::port_forward_elements(&mut tx, Verb::Delete, &forwarded);
            firewall::hairpin_elements(&mut tx, Verb::Delete, &hairpins);
            if tx.is_empty() || !firewall::table_present().unwrap_or(true) {
                return Ok(());
            }
            tx.apply().map_err(CniError::from)
        })?;
    conf.records.remove(lock, container_id, ifname)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(host_ip: Option<&str>, container_ip: &str) -> PortForward {
        PortForward {
            protocol: "tcp".into(),
            host_port: 8080,
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
            container_ip: container_ip.parse().unwrap(),
            container_port: 80,
            hairpin_subnet: None,
        }
    }

    #[test]
    fn all_addresses_and_one_address_of_a_port_stand_in_each_other_s_way() {
        let held: Vec<String> = [
            "tcp-8080-192.0.2.1",
            "tcp-8080-fd00::1",
            "udp-8080-any-v4",
            "tcp-80801-any-v4",
        ]
        .map(String::from)
        .to_vec();
        // All IPv4 addresses: blocked by one IPv4 address of the port, not by IPv6 or UDP.
        assert_eq!(
            conflicting_claims(&forward(None, "10.88.0.2"), &held),
            ["tcp-8080-192.0.2.1"]
        );
        // One address: blocked by itself and by all addresses.
        let held = ["tcp-8080-any-v4", "tcp-8080-192.0.2.2"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            conflicting_claims(&forward(Some("192.0.2.1"), "10.88.0.2"), &held),
            ["tcp-8080-any-v4"]
        );
        assert!(conflicting_claims(&forward(Some("fd00::1"), "fd00:88::2"), &held).is_empty());
    }
}
