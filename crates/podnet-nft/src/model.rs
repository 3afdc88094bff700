//! The objects of an nftables table, typed: chains with their rules, sets and maps with their
//! elements.
//!
//! A *base chain* is attached to a netfilter hook (prerouting, input, forward, output,
//! postrouting) at a priority and sees every packet passing it; a regular chain is only entered
//! by `jump`/`goto`. A *set* holds keys (addresses, ports, or concatenations of them joined with
//! `.`) that rules look up in one step, whatever the size; a *map* associates each key with data
//! (a NAT target) and a *verdict map* with a verdict (`goto CHAIN`). Rules stay nft text, as
//! Kubernetes' knftables keeps them; elements are typed, so that they can be both written as
//! text and encoded for netlink.

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;

/// An nftables address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `ip`: IPv4 only.
    Ip,
    /// `inet`: IPv4 and IPv6 in one table.
    Inet,
}

impl Family {
    /// The family keyword of nft scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Inet => "inet",
        }
    }

    /// The `NFPROTO_*` number of the family.
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
        }
    }
}

/// A table: its family, name and a comment saying who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The family.
    pub family: Family,
    /// The name.
    pub name: &'static str,
    /// What the table is for.
    pub comment: &'static str,
}

impl Table {
    /// `ip podnet-proxy`, as commands name the table.
    pub fn reference(&self) -> String {
        format!("{} {}", self.family.as_str(), self.name)
    }
}

/// A netfilter hook a base chain attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Every packet arriving, before routing.
    Prerouting,
    /// Packets for a local address, after routing.
    Input,
    /// Packets routed through.
    Forward,
    /// Locally generated packets.
    Output,
    /// Every packet leaving, after routing.
    Postrouting,
}

impl Hook {
    fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// The type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainType {
    /// Accepts or drops.
    Filter,
    /// Translates addresses; sees only the first packet of each connection.
    Nat,
}

/// What makes a chain a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BaseChain {
    /// Filter or NAT.
    pub kind: ChainType,
    /// Where it attaches.
    pub hook: Hook,
    /// Its place among the chains at that hook: lower runs first.
    pub priority: i32,
}

/// A chain and its rules, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// The name.
    pub name: String,
    /// Set for base chains.
    pub base: Option<BaseChain>,
    /// The rules, as nft rule text.
    pub rules: Vec<String>,
}

impl Chain {
    /// A regular chain with `rules`.
    pub fn regular(name: impl Into<String>, rules: Vec<String>) -> Self {
        Chain {
            name: name.into(),
            base: None,
            rules,
        }
    }

    /// A base chain at `hook` with `rules`.
    pub fn base(
        name: impl Into<String>,
        kind: ChainType,
        hook: Hook,
        priority: i32,
        rules: Vec<String>,
    ) -> Self {
        Chain {
            name: name.into(),
            base: Some(BaseChain { kind, hook, priority }),
            rules,
        }
    }

    /// The declaration: `{ type nat hook prerouting priority -100; policy accept; }` for base
    /// chains, nothing for regular ones.
    pub(crate) fn declaration(&self) -> String {
        match self.base {
            None => String::new(),
            Some(base) => format!(
                " {{ type {} hook {} priority {}; policy accept; }}",
                match base.kind {
                    ChainType::Filter => "filter",
                    ChainType::Nat => "nat",
                },
                base.hook.as_str(),
                base.priority
            ),
        }
    }
}

/// A set or map: its key type, what it maps to, how it behaves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Set {
    /// The name.
    pub name: String,
    /// The key, as nft writes it: `type ipv4_addr . inet_service`, or `typeof ip daddr`.
    pub key: String,
    /// For maps: what keys map to (`ipv4_addr . inet_service`, `verdict`); with `typeof` keys,
    /// the typeof expression of the data.
    pub data: Option<String>,
    /// Keys are ranges or prefixes.
    pub interval: bool,
    /// Elements expire after this long unless refreshed; rules may add elements (`dynamic`).
    pub timeout: Option<Duration>,
    /// Every element counts the packets that added or refreshed it (`counter`).
    pub counters: bool,
    /// What the set is for.
    pub comment: Option<String>,
}

impl Set {
    /// A set of `key` (`type ...` or `typeof ...` text).
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        Set {
            name: name.into(),
            key: key.into(),
            data: None,
            interval: false,
            timeout: None,
            counters: false,
            comment: None,
        }
    }

    /// A map from `key` to `data`.
    pub fn map(name: impl Into<String>, key: impl Into<String>, data: impl Into<String>) -> Self {
        Set {
            data: Some(data.into()),
            ..Self::new(name, key)
        }
    }

    /// Keys are ranges or prefixes.
    pub fn interval(mut self) -> Self {
        self.interval = true;
        self
    }

    /// Elements expire after `timeout`, and rules may add them.
    pub fn dynamic(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Every element counts the packets that added or refreshed it.
    pub fn counting(mut self) -> Self {
        self.counters = true;
        self
    }

    /// Says what the set is for.
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// The body of the definition, as in `add set T NAME { BODY }`.
    pub(crate) fn body(&self) -> String {
        let mut body = self.key.clone();
        if let Some(data) = &self.data {
            let _ = write!(body, " : {data}");
        }
        body.push_str("; ");
        let mut flags = Vec::new();
        if self.interval {
            flags.push("interval");
        }
        if self.timeout.is_some() {
            flags.extend(["dynamic", "timeout"]);
        }
        if !flags.is_empty() {
            let _ = write!(body, "flags {}; ", flags.join(","));
        }
        if let Some(timeout) = self.timeout {
            let _ = write!(body, "timeout {}s; ", timeout.as_secs().max(1));
        }
        if self.counters {
            body.push_str("counter; ");
        }
        if let Some(comment) = &self.comment {
            let _ = write!(body, "comment {}; ", quote(comment));
        }
        body
    }
}

/// One value of an element: a key component, or a data component of a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Datum {
    /// An IPv4 address (`ipv4_addr`).
    Ipv4(Ipv4Addr),
    /// An IPv6 address (`ipv6_addr`).
    Ipv6(Ipv6Addr),
    /// An address prefix, in interval sets.
    Prefix(IpNet),
    /// An IP protocol (`inet_proto`): 6 is tcp, 17 udp, 132 sctp.
    Protocol(u8),
    /// A port (`inet_service`).
    Port(u16),
    /// An inclusive range of ports, in interval sets.
    PortRange(u16, u16),
    /// A 32-bit number in host byte order (`mark`, or `numgen`'s result).
    Number(u32),
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datum::Ipv4(address) => write!(f, "{address}"),
            Datum::Ipv6(address) => write!(f, "{address}"),
            Datum::Prefix(prefix) => write!(f, "{}", prefix.trunc()),
            Datum::Protocol(6) => f.write_str("tcp"),
            Datum::Protocol(17) => f.write_str("udp"),
            Datum::Protocol(132) => f.write_str("sctp"),
            Datum::Protocol(number) => write!(f, "{number}"),
            Datum::Port(port) => write!(f, "{port}"),
            Datum::PortRange(first, last) if first == last => write!(f, "{first}"),
            Datum::PortRange(first, last) => write!(f, "{first}-{last}"),
            Datum::Number(number) => write!(f, "{number}"),
        }
    }
}

/// What a verdict map maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Stop evaluating this hook's chain; the packet passes.
    Accept,
    /// Discard the packet.
    Drop,
    /// Continue in `chain`, then come back.
    Jump(String),
    /// Continue in `chain`, not coming back.
    Goto(String),
}

impl Verdict {
    /// The chain the verdict continues in, if any.
    pub fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(chain) | Verdict::Goto(chain) => Some(chain),
            Verdict::Accept | Verdict::Drop => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
        }
    }
}

/// What an element of a map maps its key to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Data {
    /// Values (a NAT target: address and port).
    Values(Box<[Datum]>),
    /// A verdict.
    Verdict(Verdict),
}

/// An element of a set (a key) or map (a key and its data).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    /// The key: one datum, or several for a concatenation.
    pub key: Box<[Datum]>,
    /// The data, for maps.
    pub data: Option<Data>,
}

impl Element {
    /// A set element.
    pub fn key(key: impl Into<Box<[Datum]>>) -> Self {
        Element {
            key: key.into(),
            data: None,
        }
    }

    /// A map element mapping `key` to values.
    pub fn mapping(key: impl Into<Box<[Datum]>>, values: impl Into<Box<[Datum]>>) -> Self {
        Element {
            key: key.into(),
            data: Some(Data::Values(values.into())),
        }
    }

    /// A verdict map element.
    pub fn verdict(key: impl Into<Box<[Datum]>>, verdict: Verdict) -> Self {
        Element {
            key: key.into(),
            data: Some(Data::Verdict(verdict)),
        }
    }

    /// The key as nft writes it (`10.96.0.1 . tcp . 80`).
    pub fn key_text(&self) -> String {
        let mut text = String::new();
        let _ = self.write_key(&mut text);
        text
    }

    /// The element as nft writes it (`10.96.0.1 . tcp . 80 : goto cluster-2`).
    pub fn text(&self) -> String {
        let mut text = String::new();
        let _ = self.write_text(&mut text);
        text
    }

    /// Writes the key as nft writes it.
    pub fn write_key(&self, out: &mut impl fmt::Write) -> fmt::Result {
        write_joined(out, &self.key)
    }

    /// Writes the element as nft writes it.
    pub fn write_text(&self, out: &mut impl fmt::Write) -> fmt::Result {
        write_element(out, &self.key, self.data.as_ref())
    }

    /// Whether the key holds ranges (prefixes, port ranges).
    pub(crate) fn has_ranges(&self) -> bool {
        self.key
            .iter()
            .any(|datum| matches!(datum, Datum::Prefix(_) | Datum::PortRange(..)))
    }

    /// Whether netlink can carry the element as podnet encodes it: anything but a lone range,
    /// which an `rbtree` set wants as two elements (left to nft).
    pub(crate) fn netlink_encodable(&self) -> bool {
        self.key.len() > 1 || !self.has_ranges()
    }
}

/// Writes an element (key, and data for maps) as nft writes it.
pub(crate) fn write_element(out: &mut impl fmt::Write, key: &[Datum], data: Option<&Data>) -> fmt::Result {
    write_joined(out, key)?;
    match data {
        None => Ok(()),
        Some(Data::Values(values)) => {
            out.write_str(" : ")?;
            write_joined(out, values)
        }
        Some(Data::Verdict(verdict)) => write!(out, " : {verdict}"),
    }
}

fn write_joined(out: &mut impl fmt::Write, values: &[Datum]) -> fmt::Result {
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            out.write_str(" . ")?;
        }
        write!(out, "{value}")?;
    }
    Ok(())
}

/// `text` as an nft string literal.
pub(crate) fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_written_as_nft_writes_them() {
        let key = [
            Datum::Ipv4(Ipv4Addr::new(10, 96, 0, 1)),
            Datum::Protocol(6),
            Datum::Port(80),
            Datum::Number(1),
        ];
        let element = Element::mapping(
            key,
            [Datum::Ipv4(Ipv4Addr::new(10, 244, 1, 5)), Datum::Port(8080)],
        );
        assert_eq!(element.text(), "10.96.0.1 . tcp . 80 . 1 : 10.244.1.5 . 8080");
        let verdict = Element::verdict(
            [Datum::Protocol(17), Datum::Port(30053)],
            Verdict::Goto("cluster-2".into()),
        );
        assert_eq!(verdict.text(), "udp . 30053 : goto cluster-2");
        assert_eq!(
            Element::key([Datum::Prefix("10.244.0.7/16".parse().unwrap())]).text(),
            "10.244.0.0/16"
        );
    }

    #[test]
    fn set_definitions_carry_flags_and_timeouts() {
        let set = Set::new("affinity", "type ipv4_addr")
            .dynamic(Duration::from_secs(10800))
            .comment("clients");
        assert_eq!(
            set.body(),
            "type ipv4_addr; flags dynamic,timeout; timeout 10800s; comment \"clients\"; "
        );
        let map = Set::map("nodeports", "type inet_proto . inet_service", "verdict");
        assert_eq!(map.body(), "type inet_proto . inet_service : verdict; ");
        assert_eq!(
            Chain::base("prerouting", ChainType::Nat, Hook::Prerouting, -100, vec![]).declaration(),
            " { type nat hook prerouting priority -100; policy accept; }"
        );
    }
}
