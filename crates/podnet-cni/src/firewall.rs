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

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use podnet_nft::{Family, Pending, Transaction};
use serde::{Deserialize, Serialize};

use crate::spec::CniError;

/// The table's name.
pub const TABLE: &str = "podnet-cni";

/// Packet mark bit asking the postrouting chain to masquerade a host-port connection (the
/// reference plugin's default `markMasqBit`, 13).
pub const MASQUERADE_MARK: u32 = 0x2000;

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

/// The commands that create the table with its sets, maps, chains and rules.
pub fn definition() -> Transaction {
    let mut tx = Transaction::new();
    let t = TABLE;
    tx.push_fmt(format_args!(
        "create table inet {t} {{ comment \"podnet CNI plugins: ipMasq and portmap\"; }}"
    ));
    for (v, addr) in [("v4", "ipv4_addr"), ("v6", "ipv6_addr")] {
        tx.push_fmt(format_args!(
            "add set inet {t} masq-{v} {{ type {addr}; flags interval; }}"
        ));
        tx.push_fmt(format_args!(
            "add set inet {t} masq-exempt-{v} {{ type {addr} . {addr}; flags interval; }}"
        ));
        tx.push_fmt(format_args!(
            "add map inet {t} portmap-any-{v} {{ type inet_proto . inet_service : {addr} . inet_service; }}"
        ));
        tx.push_fmt(format_args!(
            "add map inet {t} portmap-addr-{v} {{ type {addr} . inet_proto . inet_service : {addr} . inet_service; }}"
        ));
        tx.push_fmt(format_args!(
            "add set inet {t} portmap-masq-{v} {{ type {addr} . inet_proto . inet_service; flags interval; }}"
        ));
    }
    let mark = format!("0x{MASQUERADE_MARK:x}");
    tx.push_fmt(format_args!("add chain inet {t} portmap"));
    tx.push_fmt(format_args!(
        "add rule inet {t} portmap meta l4proto != {{ tcp, udp, sctp }} return"
    ));
    for (v, ip, nfproto) in [("v4", "ip", "ipv4"), ("v6", "ip6", "ipv6")] {
        tx.push_fmt(format_args!(
            "add rule inet {t} portmap {ip} saddr . meta l4proto . th dport @portmap-masq-{v} meta mark set meta mark | {mark}"
        ));
        tx.push_fmt(format_args!(
            "add rule inet {t} portmap meta nfproto {nfproto} dnat {ip} to {ip} daddr . meta l4proto . th dport map @portmap-addr-{v}"
        ));
        tx.push_fmt(format_args!(
            "add rule inet {t} portmap meta nfproto {nfproto} dnat {ip} to meta l4proto . th dport map @portmap-any-{v}"
        ));
    }
    // Connections from outside arrive in prerouting; the node's own (localhost) in output.
    tx.push_fmt(format_args!(
        "add chain inet {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"
    ));
    tx.push_fmt(format_args!(
        "add rule inet {t} prerouting fib daddr type local jump portmap"
    ));
    tx.push_fmt(format_args!(
        "add chain inet {t} output {{ type nat hook output priority -100; policy accept; }}"
    ));
    tx.push_fmt(format_args!(
        "add rule inet {t} output fib daddr type local jump portmap"
    ));
    tx.push_fmt(format_args!(
        "add chain inet {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
    ));
    tx.push_fmt(format_args!(
        "add rule inet {t} postrouting meta mark & {mark} == {mark} masquerade"
    ));
    for (v, ip, multicast) in [("v4", "ip", "224.0.0.0/4"), ("v6", "ip6", "ff00::/8")] {
        tx.push_fmt(format_args!(
            "add rule inet {t} postrouting {ip} saddr . {ip} daddr @masq-exempt-{v} return"
        ));
        tx.push_fmt(format_args!(
            "add rule inet {t} postrouting {ip} daddr {multicast} return"
        ));
        tx.push_fmt(format_args!(
            "add rule inet {t} postrouting {ip} saddr @masq-{v} masquerade"
        ));
    }
    tx
}

/// Element commands for masquerading `subnets`: `verb` is `add` or `delete`.
pub fn masquerade_elements(tx: &mut Transaction, verb: Verb, subnets: &[IpNet]) {
    for subnet in subnets {
        let subnet = subnet.trunc();
        let v = family_suffix(subnet.addr());
        verb.push(tx, &format!("element inet {TABLE} masq-{v} {{ {subnet} }}"));
        verb.push(
            tx,
            &format!("element inet {TABLE} masq-exempt-{v} {{ {subnet} . {subnet} }}"),
        );
    }
}

/// DNAT element commands for host-port `forwards`: `verb` is `add` or `delete`.
pub fn port_forward_elements(tx: &mut Transaction, verb: Verb, forwards: &[PortForward]) {
    for forward in forwards {
        let v = family_suffix(forward.container_ip);
        let (proto, port) = (&forward.protocol, forward.host_port);
        let target = format!("{} . {}", forward.container_ip, forward.container_port);
        let element = match forward.host_ip {
            Some(host_ip) => {
                format!("element inet {TABLE} portmap-addr-{v} {{ {host_ip} . {proto} . {port} : {target} }}")
            }
            None => format!("element inet {TABLE} portmap-any-{v} {{ {proto} . {port} : {target} }}"),
        };
        verb.push(tx, &element);
    }
}

/// Hairpin element commands for `forwards` with a hairpin subnet: clients in that subnet (and
/// localhost) connecting to the host port are masqueraded. Forwards of one subnet and host port
/// share these elements (they differ by host address), so callers count their holders.
pub fn hairpin_elements(tx: &mut Transaction, verb: Verb, forwards: &[PortForward]) {
    for forward in forwards {
        let Some(subnet) = forward.hairpin_subnet else {
            continue;
        };
        let v = family_suffix(forward.container_ip);
        let (proto, port) = (&forward.protocol, forward.host_port);
        let mut masq = format!(
            "element inet {TABLE} portmap-masq-{v} {{ {} . {proto} . {port}",
            subnet.trunc()
        );
        if forward.container_ip.is_ipv4() {
            let _ = write!(masq, ", 127.0.0.1 . {proto} . {port}");
        }
        masq.push_str(" }");
        verb.push(tx, &masq);
    }
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
    fn push(self, tx: &mut Transaction, object: &str) {
        match self {
            Verb::Add => tx.push_fmt(format_args!("add {object}")),
            Verb::Delete => tx.push_delete(object),
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
pub fn start(elements: Transaction) -> Result<Applying, CniError> {
    let first = with_table(&elements)?.start()?;
    Ok(Applying { elements, first })
}

/// Element changes being applied.
pub struct Applying {
    elements: Transaction,
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
fn with_table(elements: &Transaction) -> Result<Transaction, CniError> {
    if table_present()? {
        return Ok(elements.clone());
    }
    let mut tx = definition();
    tx.push(elements.script());
    Ok(tx)
}

fn table_present() -> Result<bool, CniError> {
    podnet_nft::table_exists(Family::Inet, TABLE)
        .map_err(|err| CniError::generic("cannot query nftables").details(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_creates_the_table_atomically_once() {
        let script = definition().script().to_owned();
        assert!(
            script.starts_with("create table inet podnet-cni"),
            "create fails if it exists"
        );
        assert_eq!(script.matches("add rule").count(), 16);
        assert!(script.contains("hook postrouting priority srcnat"));
    }

    #[test]
    fn masquerade_elements_are_per_subnet() {
        let mut tx = Transaction::new();
        masquerade_elements(&mut tx, Verb::Add, &["10.88.7.2/24".parse().unwrap()]);
        assert_eq!(
            tx.script(),
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
        let mut tx = Transaction::new();
        port_forward_elements(&mut tx, Verb::Add, std::slice::from_ref(&forward));
        hairpin_elements(&mut tx, Verb::Add, std::slice::from_ref(&forward));
        assert_eq!(
            tx.script(),
            "add element inet podnet-cni portmap-any-v4 { tcp . 8080 : 10.88.7.2 . 80 }\n\
             add element inet podnet-cni portmap-masq-v4 { 10.88.7.0/24 . tcp . 8080, 127.0.0.1 . tcp . 8080 }\n"
        );
        // snat off: forwarded, never masqueraded.
        let mut tx = Transaction::new();
        let unmasqueraded = PortForward {
            hairpin_subnet: None,
            ..forward.clone()
        };
        hairpin_elements(&mut tx, Verb::Add, &[unmasqueraded]);
        assert!(tx.script().is_empty(), "{}", tx.script());
        let specific = PortForward {
            host_ip: Some("192.0.2.10".parse().unwrap()),
            ..forward
        };
        let mut tx = Transaction::new();
        port_forward_elements(&mut tx, Verb::Delete, &[specific]);
        assert!(tx.script().contains(
            "delete element inet podnet-cni portmap-addr-v4 { 192.0.2.10 . tcp . 8080 : 10.88.7.2 . 80 }"
        ));
    }
}
