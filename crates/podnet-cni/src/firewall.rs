//! podnet's nftables table for the CNI plugins: masquerading (`ipMasq`) and host ports
//! (`portmap`).
//!
//! Everything lives in one table, `inet podnet-cni`, whose rules never change after it is
//! created: they look addresses up in sets and maps, and attachments only add and remove
//! elements. That keeps each ADD to one small transaction, never touches rules podnet did not
//! create, and makes per-packet cost independent of the number of containers.
//!
//! - Masquerade: a packet from a masqueraded subnet to anywhere outside that same subnet (and not
//!   multicast) leaves with the node's address. Elements are per subnet, added by the subnet's
//!   first attachment (in any network) and removed with its last, because deleting anything from
//!   nftables costs an RCU grace period (10-20 ms) and the common DEL should not pay it.
//! - Host ports: traffic to a local address and a mapped port is DNATed to the container
//!   (`portmap-addr-*` for a specific hostIP, `portmap-any-*` for all). Traffic to a mapped port
//!   from the container's subnet or from localhost is marked on its way in and masqueraded on its
//!   way out, so that the reply comes back through the node (hairpin), as the reference portmap
//!   does with `snat` on. The mark is set only here, before DNAT, so connections DNATed by
//!   anybody else are never masqueraded by this table.

use std::net::IpAddr;

use ipnet::IpNet;
use podnet_nft::registry::{self, CNI_TABLE as TABLE_DEF, HOSTPORT_MASQUERADE_MARK, priority};
use podnet_nft::{Chain, ChainType, Datum, Element, Hook, Operation, Pending, Script, Set};
use serde::{Deserialize, Serialize};

use crate::spec::CniError;

/// The table's name.
pub const TABLE: &str = registry::CNI_TABLE.name;

/// Packet mark bit asking the postrouting chain to masquerade a host-port connection (the
/// reference plugin's default `markMasqBit`, 13).
pub const MASQUERADE_MARK: u32 = HOSTPORT_MASQUERADE_MARK;

/// A host port forwarded to a container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The port on the node.
    pub host_port: u16,
    /// Only this node address, or all when `None`.
    pub host_ip: Option<IpAddr>,
    /// The container's address.
    pub container_ip: IpAddr,
    /// The port in the container.
    pub container_port: u16,
    /// The container's subnet, whose clients (and localhost) are masqueraded so that replies
    /// come back through the node (hairpin); `None` when `snat` is off.
    #[serde(alias = "container_subnet")]
    pub hairpin_subnet: Option<IpNet>,
}

/// The script that creates the table with its sets, maps, chains and rules; it fails if the
/// table exists (a concurrent plugin created it first).
pub fn definition() -> Script {
    let mut sets = Vec::new();
    for (v, addr) in [("v4", "ipv4_addr"), ("v6", "ipv6_addr")] {
        sets.push(Set::new(format!("masq-{v}"), format!("type {addr}")).interval());
        sets.push(Set::new(format!("masq-exempt-{v}"), format!("type {addr} . {addr}")).interval());
        sets.push(Set::map(
            format!("portmap-any-{v}"),
            "type inet_proto . inet_service",
            format!("{addr} . inet_service"),
        ));
        sets.push(Set::map(
            format!("portmap-addr-{v}"),
            format!("type {addr} . inet_proto . inet_service"),
            format!("{addr} . inet_service"),
        ));
        sets.push(
            Set::new(
                format!("portmap-masq-{v}"),
                format!("type {addr} . inet_proto . inet_service"),
            )
            .interval(),
        );
    }
    let mark = format!("0x{MASQUERADE_MARK:x}");
    let mut portmap = vec!["meta l4proto != { tcp, udp, sctp } return".to_owned()];
    let mut postrouting = vec![format!("meta mark & {mark} == {mark} masquerade")];
    for (v, ip, nfproto, multicast) in [
        ("v4", "ip", "ipv4", "224.0.0.0/4"),
        ("v6", "ip6", "ipv6", "ff00::/8"),
    ] {
        portmap.push(format!(
            "{ip} saddr . meta l4proto . th dport @portmap-masq-{v} meta mark set meta mark | {mark}"
        ));
        portmap.push(format!(
            "meta nfproto {nfproto} dnat {ip} to {ip} daddr . meta l4proto . th dport map @portmap-addr-{v}"
        ));
        portmap.push(format!(
            "meta nfproto {nfproto} dnat {ip} to meta l4proto . th dport map @portmap-any-{v}"
        ));
        postrouting.push(format!("{ip} saddr . {ip} daddr @masq-exempt-{v} return"));
        postrouting.push(format!("{ip} daddr {multicast} return"));
        postrouting.push(format!("{ip} saddr @masq-{v} masquerade"));
    }
    let chains = [
        Chain::regular("portmap", portmap),
        // Connections from outside arrive in prerouting; the node's own (localhost) in output.
        Chain::base(
            "prerouting",
            ChainType::Nat,
            Hook::Prerouting,
            priority::DSTNAT,
            vec!["fib daddr type local jump portmap".into()],
        ),
        Chain::base(
            "output",
            ChainType::Nat,
            Hook::Output,
            priority::DSTNAT,
            vec!["fib daddr type local jump portmap".into()],
        ),
        Chain::base(
            "postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
            postrouting,
        ),
    ];
    let mut script = Script::new();
    script.create_table(&TABLE_DEF);
    for set in &sets {
        script.add_set(&TABLE_DEF, set);
    }
    for chain in &chains {
        script.add_chain(&TABLE_DEF, chain);
    }
    for chain in &chains {
        script.add_rules(&TABLE_DEF, chain);
    }
    script
}

/// Element commands for masquerading `subnets`.
pub fn masquerade_elements(script: &mut Script, verb: Verb, subnets: &[IpNet]) {
    for subnet in subnets {
        let prefix = Datum::Prefix(subnet.trunc());
        let v = family_suffix(subnet.addr());
        verb.push(script, &format!("masq-{v}"), Element::key([prefix]));
        verb.push(
            script,
            &format!("masq-exempt-{v}"),
            Element::key([prefix, prefix]),
        );
    }
}

/// DNAT element commands for host-port `forwards`.
pub fn port_forward_elements(script: &mut Script, verb: Verb, forwards: &[PortForward]) {
    for forward in forwards {
        let (set, element) = port_forward_element(forward);
        verb.push(script, &set, element);
    }
}

/// The DNAT element of a host-port forward, and its map.
pub fn port_forward_element(forward: &PortForward) -> (String, Element) {
    let v = family_suffix(forward.container_ip);
    let target = [address(forward.container_ip), Datum::Port(forward.container_port)];
    let (proto, port) = (protocol(&forward.protocol), Datum::Port(forward.host_port));
    match forward.host_ip {
        Some(host_ip) => (
            format!("portmap-addr-{v}"),
            Element::mapping([address(host_ip), proto, port], target),
        ),
        None => (
            format!("portmap-any-{v}"),
            Element::mapping([proto, port], target),
        ),
    }
}

/// Hairpin element commands for `forwards` with a hairpin subnet: clients in that subnet (and
/// localhost) connecting to the host port are masqueraded. Forwards of one subnet and host port
/// share these elements (they differ by host address), so callers count their holders.
pub fn hairpin_elements(script: &mut Script, verb: Verb, forwards: &[PortForward]) {
    for forward in forwards {
        let Some(subnet) = forward.hairpin_subnet else {
            continue;
        };
        let set = format!("portmap-masq-{}", family_suffix(forward.container_ip));
        let (proto, port) = (protocol(&forward.protocol), Datum::Port(forward.host_port));
        let mut clients = vec![Element::key([Datum::Prefix(subnet.trunc()), proto, port])];
        if forward.container_ip.is_ipv4() {
            clients.push(Element::key([Datum::Ipv4([127, 0, 0, 1].into()), proto, port]));
        }
        verb.push_all(script, &set, &clients);
    }
}

fn address(ip: IpAddr) -> Datum {
    match ip {
        IpAddr::V4(v4) => Datum::Ipv4(v4),
        IpAddr::V6(v6) => Datum::Ipv6(v6),
    }
}

/// `tcp`, `udp`, `sctp` as protocol numbers (the configuration was validated).
fn protocol(name: &str) -> Datum {
    Datum::Protocol(match name {
        "udp" => 17,
        "sctp" => 132,
        _ => 6,
    })
}

/// Whether element commands add or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Add elements (idempotent for identical elements).
    Add,
    /// Delete elements, succeeding when they are already gone.
    Delete,
}

impl Verb {
    fn push(self, script: &mut Script, set: &str, element: Element) {
        self.push_all(script, set, &[element]);
    }

    fn push_all(self, script: &mut Script, set: &str, elements: &[Element]) {
        match self {
            Verb::Add => script.elements(&TABLE_DEF, set, Operation::Add, elements),
            Verb::Delete => script.delete_elements_if_present(&TABLE_DEF, set, elements),
        };
    }
}

/// `v4` or `v6`: the suffix of the sets and maps for `ip`'s family.
pub fn family_suffix(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "v4" } else { "v6" }
}

/// Applies element changes, creating the table first when it does not exist yet.
///
/// Returns at once with the `nft` process still running, so the caller can overlap its own
/// work with the kernel commit; [`Applying::wait`] collects the outcome.
pub fn start(elements: Script) -> Result<Applying, CniError> {
    let first = with_table(&elements)?.start()?;
    Ok(Applying { elements, first })
}

/// Element changes being applied.
pub struct Applying {
    elements: Script,
    first: Pending,
}

impl Applying {
    /// Waits for the kernel's answer. A concurrent plugin may have created the table between
    /// the existence check and this transaction (which then fails as a whole); the elements are
    /// then simply sent again.
    pub fn wait(self) -> Result<(), CniError> {
        match self.first.wait() {
            Ok(()) => Ok(()),
            Err(podnet_nft::Error::Rejected { .. }) if table_present()? => Ok(self.elements.apply()?),
            Err(err) => Err(err.into()),
        }
    }
}

/// `elements`, preceded by the table definition when the table does not exist.
fn with_table(elements: &Script) -> Result<Script, CniError> {
    if table_present()? {
        return Ok(elements.clone());
    }
    let mut script = definition();
    script.append(elements);
    Ok(script)
}

/// Whether podnet's CNI table exists.
pub fn table_present() -> Result<bool, CniError> {
    podnet_nft::table_exists(&TABLE_DEF)
        .map_err(|err| CniError::generic("cannot query nftables").details(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_creates_the_table_atomically_once() {
        let script = definition().text().to_owned();
        assert!(
            script.starts_with("create table inet podnet-cni"),
            "create fails if it exists"
        );
        assert_eq!(script.matches("add rule").count(), 16);
        assert!(script.contains("hook postrouting priority 100;"), "{script}");
    }

    #[test]
    fn masquerade_elements_are_per_subnet() {
        let mut tx = Script::new();
        masquerade_elements(&mut tx, Verb::Add, &["10.88.7.2/24".parse().unwrap()]);
        assert_eq!(
            tx.text(),
            "add element inet podnet-cni masq-v4 { 10.88.7.0/24 }\n\
             add element inet podnet-cni masq-exempt-v4 { 10.88.7.0/24 . 10.88.7.0/24 }\n"
        );
    }

    #[test]
    fn port_forwards_map_host_ports_and_mark_hairpin_clients() {
        let forward = PortForward {
            protocol: "tcp".into(),
            host_port: 8080,
            host_ip: None,
            container_ip: "10.88.7.2".parse().unwrap(),
            container_port: 80,
            hairpin_subnet: Some("10.88.7.0/24".parse().unwrap()),
        };
        let mut tx = Script::new();
        port_forward_elements(&mut tx, Verb::Add, std::slice::from_ref(&forward));
        hairpin_elements(&mut tx, Verb::Add, std::slice::from_ref(&forward));
        assert_eq!(
            tx.text(),
            "add element inet podnet-cni portmap-any-v4 { tcp . 8080 : 10.88.7.2 . 80 }\n\
             add element inet podnet-cni portmap-masq-v4 { 10.88.7.0/24 . tcp . 8080, 127.0.0.1 . tcp . 8080 }\n"
        );
        // snat off: forwarded, never masqueraded.
        let mut tx = Script::new();
        let unmasqueraded = PortForward {
            hairpin_subnet: None,
            ..forward.clone()
        };
        hairpin_elements(&mut tx, Verb::Add, &[unmasqueraded]);
        assert!(tx.text().is_empty(), "{}", tx.text());
        let specific = PortForward {
            host_ip: Some("192.0.2.10".parse().unwrap()),
            ..forward
        };
        let mut tx = Script::new();
        port_forward_elements(&mut tx, Verb::Delete, &[specific]);
        assert!(
            tx.text()
                .contains("delete element inet podnet-cni portmap-addr-v4 { 192.0.2.10 . tcp . 8080 }")
        );
    }
}
