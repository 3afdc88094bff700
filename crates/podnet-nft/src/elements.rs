//! Set and map elements as nf_tables netlink messages.
//!
//! Adding or deleting elements is the one nftables change a service proxy makes all the time
//! (a backend comes or goes), so podnet sends those straight to the kernel from its
//! long-running process instead of starting `nft` each time: no process start, no parsing, no
//! cache dump, and no wait for the RCU grace period that `nft` sits through when it closes its
//! socket after a deletion. The encoding is the kernel's: each element is a key (and data, for
//! maps) of raw bytes; in a concatenation every component takes a multiple of 4 bytes (the
//! kernel's 32-bit registers); integers read from packets are in network order, marks and
//! `numgen` results in host order. An element of a concatenation with ranges in it (prefixes,
//! port ranges: a set with `flags interval`, which the kernel keeps as a `pipapo` set) carries
//! its first key and its last (`NFTA_SET_ELEM_KEY_END`); a single range (an `rbtree` set, which
//! wants start and end as two elements) is left to nft.

use ipnet::IpNet;
use podnet_netlink::nfnetlink::{Attributes, MAX_ATTRIBUTE, Message, Subsystem};

use crate::model::{Data, Datum, Element, Table, Verdict};

const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_DELSETELEM: u8 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NLM_F_CREATE: u16 = 0x400;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;

/// Whether elements are added or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Add (an identical element that exists already is fine).
    Add,
    /// Delete (the element must exist).
    Delete,
}

/// The messages adding or deleting `elements` of `set`, as many elements per message as an
/// attribute holds.
pub fn messages(table: &Table, set: &str, operation: Operation, elements: &[&Element]) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut batch = Attributes::new();
    let flush = |batch: &mut Attributes, messages: &mut Vec<Message>| {
        if batch.is_empty() {
            return;
        }
        let mut attributes = Attributes::new();
        attributes
            .string(NFTA_SET_ELEM_LIST_TABLE, table.name)
            .string(NFTA_SET_ELEM_LIST_SET, set)
            .nested(NFTA_SET_ELEM_LIST_ELEMENTS, batch);
        messages.push(Message {
            subsystem: Subsystem::Nftables,
            kind: match operation {
                Operation::Add => NFT_MSG_NEWSETELEM,
                Operation::Delete => NFT_MSG_DELSETELEM,
            },
            flags: match operation {
                Operation::Add => NLM_F_CREATE,
                Operation::Delete => 0,
            },
            family: table.family.nfproto(),
            attributes,
        });
        *batch = Attributes::new();
    };
    for element in elements {
        let mut encoded = Attributes::new();
        encoded.nest(NFTA_LIST_ELEM, |attributes| {
            attributes.nest(NFTA_SET_ELEM_KEY, |key| {
                key.bytes(NFTA_DATA_VALUE, &value_bytes(&element.key, Bound::First));
            });
            if element.has_ranges() {
                attributes.nest(NFTA_SET_ELEM_KEY_END, |key| {
                    key.bytes(NFTA_DATA_VALUE, &value_bytes(&element.key, Bound::Last));
                });
            }
            if operation == Operation::Add {
                match &element.data {
                    None => {}
                    Some(Data::Values(values)) => {
                        attributes.nest(NFTA_SET_ELEM_DATA, |data| {
                            data.bytes(NFTA_DATA_VALUE, &value_bytes(values, Bound::First));
                        });
                    }
                    Some(Data::Verdict(verdict)) => {
                        attributes.nest(NFTA_SET_ELEM_DATA, |data| {
                            data.nest(NFTA_DATA_VERDICT, |encoded| verdict_attributes(encoded, verdict));
                        });
                    }
                }
            }
        });
        // Room for the list's own header and the table and set names.
        if batch.len() + encoded.len() > MAX_ATTRIBUTE - 1024 {
            flush(&mut batch, &mut messages);
        }
        batch.append(&encoded);
    }
    flush(&mut batch, &mut messages);
    messages
}

fn verdict_attributes(encoded: &mut Attributes, verdict: &Verdict) {
    let code = match verdict {
        Verdict::Accept => NF_ACCEPT,
        Verdict::Drop => NF_DROP,
        Verdict::Jump(_) => NFT_JUMP,
        Verdict::Goto(_) => NFT_GOTO,
    };
    encoded.be32(NFTA_VERDICT_CODE, code as u32);
    if let Some(chain) = verdict.chain() {
        encoded.string(NFTA_VERDICT_CHAIN, chain);
    }
}

/// Which end of its ranges a key is written with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    First,
    Last,
}

/// The bytes of a key or of map data: one component as it is, several padded to 4 bytes each;
/// ranges by their first or last value.
fn value_bytes(values: &[Datum], bound: Bound) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for datum in values {
        let start = bytes.len();
        match datum {
            Datum::Ipv4(address) => bytes.extend_from_slice(&address.octets()),
            Datum::Ipv6(address) => bytes.extend_from_slice(&address.octets()),
            Datum::Prefix(prefix) => match (prefix, bound) {
                (IpNet::V4(net), Bound::First) => bytes.extend_from_slice(&net.network().octets()),
                (IpNet::V4(net), Bound::Last) => bytes.extend_from_slice(&net.broadcast().octets()),
                (IpNet::V6(net), Bound::First) => bytes.extend_from_slice(&net.network().octets()),
                (IpNet::V6(net), Bound::Last) => bytes.extend_from_slice(&net.broadcast().octets()),
            },
            Datum::Protocol(protocol) => bytes.push(*protocol),
            Datum::Port(port) => bytes.extend_from_slice(&port.to_be_bytes()),
            Datum::PortRange(first, last) => {
                let port = if bound == Bound::First { first } else { last };
                bytes.extend_from_slice(&port.to_be_bytes());
            }
            Datum::Number(number) => bytes.extend_from_slice(&number.to_ne_bytes()),
        }
        if values.len() > 1 {
            bytes.resize(start + (bytes.len() - start).next_multiple_of(4), 0);
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use podnet_netlink::nfnetlink::{attribute, attributes};

    use super::*;
    use crate::model::Family;

    const TABLE: Table = Table {
        family: Family::Ip,
        name: "podnet-proxy",
        comment: "",
    };

    #[test]
    fn concatenations_pad_every_component_to_a_register() {
        let key = [
            Datum::Ipv4(Ipv4Addr::new(10, 96, 0, 1)),
            Datum::Protocol(6),
            Datum::Port(80),
            Datum::Number(1),
        ];
        let bytes = value_bytes(&key, Bound::First);
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[..4], &[10, 96, 0, 1]);
        assert_eq!(&bytes[4..8], &[6, 0, 0, 0]);
        assert_eq!(&bytes[8..12], &[0, 80, 0, 0]);
        assert_eq!(&bytes[12..], &1u32.to_ne_bytes());
        // A single component keeps its own size.
        assert_eq!(
            value_bytes(&[Datum::Port(8080)], Bound::First),
            8080u16.to_be_bytes()
        );
    }

    #[test]
    fn verdict_maps_name_the_chain() {
        let element = Element::verdict(
            [Datum::Protocol(17), Datum::Port(30053)],
            Verdict::Goto("cluster-2".into()),
        );
        let messages = messages(&TABLE, "nodeports", Operation::Add, &[&element]);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].kind, NFT_MSG_NEWSETELEM);
        let list = messages[0].attributes.as_bytes();
        assert_eq!(attribute(list, NFTA_SET_ELEM_LIST_SET), Some(&b"nodeports\0"[..]));
        let elements = attribute(list, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
        let first = attribute(elements, NFTA_LIST_ELEM).unwrap();
        let verdict = attribute(attribute(first, NFTA_SET_ELEM_DATA).unwrap(), NFTA_DATA_VERDICT).unwrap();
        assert_eq!(
            attribute(verdict, NFTA_VERDICT_CODE),
            Some(&(NFT_GOTO as u32).to_be_bytes()[..])
        );
        assert_eq!(attribute(verdict, NFTA_VERDICT_CHAIN), Some(&b"cluster-2\0"[..]));
    }

    #[test]
    fn large_changes_are_split_into_messages_that_fit() {
        let elements: Vec<Element> = (0..20_000u32)
            .map(|n| Element::key([Datum::Ipv4(Ipv4Addr::from(0x0a00_0000 + n)), Datum::Port(80)]))
            .collect();
        let refs: Vec<&Element> = elements.iter().collect();
        let messages = messages(&TABLE, "s", Operation::Delete, &refs);
        assert!(messages.len() > 1);
        let total: usize = messages
            .iter()
            .map(|message| {
                let list = attribute(message.attributes.as_bytes(), NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
                attributes(list).count()
            })
            .sum();
        assert_eq!(total, 20_000);
        assert!(
            messages
                .iter()
                .all(|message| message.attributes.len() <= u16::MAX as usize)
        );
    }
}
