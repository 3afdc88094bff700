//! Connection tracking entries, listed and deleted over ctnetlink.
//!
//! conntrack remembers every flow the kernel has seen, with the NAT it chose for the flow's
//! first packet: later packets of the flow follow that entry, never the rules. That is what
//! keeps established connections alive while NAT rules change, and also what keeps a UDP
//! client talking to a backend that is gone (UDP has no close to end the entry). A service
//! proxy therefore deletes the entries of UDP flows whose backend went away. Each entry has an
//! *original* tuple (as the client sent it: to the service address) and a *reply* tuple (as the
//! backend answers: from the backend's address after DNAT).

use std::net::Ipv4Addr;

use crate::error::Result;
use crate::nfnetlink::{Attributes, Message, NfNetlink, Subsystem, attribute, attributes};

const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_DELETE: u8 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// `NFPROTO_IPV4`.
const IPV4: u8 = 2;

/// One direction of an IPv4 flow with ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// Source address.
    pub source: Ipv4Addr,
    /// Destination address.
    pub destination: Ipv4Addr,
    /// Source port.
    pub source_port: u16,
    /// Destination port.
    pub destination_port: u16,
}

/// A tracked IPv4 flow of a protocol with ports (TCP, UDP, SCTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    /// The IP protocol number.
    pub protocol: u8,
    /// As the client sent it.
    pub original: Tuple,
    /// As the other side answers it (after NAT: from the real backend, to the real client).
    pub reply: Tuple,
}

impl NfNetlink {
    /// The IPv4 flows of `protocol` the kernel tracks.
    pub fn conntrack_flows(&mut self, protocol: u8) -> Result<Vec<Flow>> {
        let request = Message {
            subsystem: Subsystem::Conntrack,
            kind: IPCTNL_MSG_CT_GET,
            flags: 0,
            family: IPV4,
            attributes: Attributes::new(),
        };
        let replies = self.dump(&request, || "list conntrack entries".into())?;
        Ok(replies
            .iter()
            .filter_map(|reply| {
                let original = tuple(attribute(&reply.payload, CTA_TUPLE_ORIG)?)?;
                let reply_tuple = tuple(attribute(&reply.payload, CTA_TUPLE_REPLY)?)?;
                (original.0 == protocol).then_some(Flow {
                    protocol,
                    original: original.1,
                    reply: reply_tuple.1,
                })
            })
            .collect())
    }

    /// Deletes the entry of `flow`; one that is gone already is fine.
    pub fn delete_conntrack(&mut self, flow: &Flow) -> Result<()> {
        let mut attributes = Attributes::new();
        attributes.nest(CTA_TUPLE_ORIG, |tuple| {
            tuple.nest(CTA_TUPLE_IP, |ip| {
                ip.bytes(CTA_IP_V4_SRC, &flow.original.source.octets())
                    .bytes(CTA_IP_V4_DST, &flow.original.destination.octets());
            });
            tuple.nest(CTA_TUPLE_PROTO, |proto| {
                proto
                    .u8(CTA_PROTO_NUM, flow.protocol)
                    .be16(CTA_PROTO_SRC_PORT, flow.original.source_port)
                    .be16(CTA_PROTO_DST_PORT, flow.original.destination_port);
            });
        });
        let request = Message {
            subsystem: Subsystem::Conntrack,
            kind: IPCTNL_MSG_CT_DELETE,
            flags: 0,
            family: IPV4,
            attributes,
        };
        match self.request(&request, || {
            format!(
                "delete conntrack entry {}:{} -> {}:{}",
                flow.original.source,
                flow.original.source_port,
                flow.original.destination,
                flow.original.destination_port
            )
        }) {
            Err(err) if err.is_not_found() => Ok(()),
            other => other,
        }
    }
}

/// A `CTA_TUPLE_*` attribute: protocol and addresses with ports (IPv4 only).
fn tuple(bytes: &[u8]) -> Option<(u8, Tuple)> {
    let ip = attribute(bytes, CTA_TUPLE_IP)?;
    let proto = attribute(bytes, CTA_TUPLE_PROTO)?;
    let address = |kind| -> Option<Ipv4Addr> {
        let value: [u8; 4] = attribute(ip, kind)?.try_into().ok()?;
        Some(Ipv4Addr::from(value))
    };
    let port = |kind| -> Option<u16> {
        let value: [u8; 2] = attribute(proto, kind)?.try_into().ok()?;
        Some(u16::from_be_bytes(value))
    };
    let protocol = *attributes(proto)
        .find(|(kind, _)| *kind == CTA_PROTO_NUM)?
        .1
        .first()?;
    Some((
        protocol,
        Tuple {
            source: address(CTA_IP_V4_SRC)?,
            destination: address(CTA_IP_V4_DST)?,
            source_port: port(CTA_PROTO_SRC_PORT)?,
            destination_port: port(CTA_PROTO_DST_PORT)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_are_read_from_nested_attributes() {
        let mut encoded = Attributes::new();
        encoded.nest(CTA_TUPLE_ORIG, |tuple| {
            tuple.nest(CTA_TUPLE_IP, |ip| {
                ip.bytes(CTA_IP_V4_SRC, &[10, 244, 1, 2])
                    .bytes(CTA_IP_V4_DST, &[10, 96, 0, 10]);
            });
            tuple.nest(CTA_TUPLE_PROTO, |proto| {
                proto
                    .u8(CTA_PROTO_NUM, 17)
                    .be16(CTA_PROTO_SRC_PORT, 40000)
                    .be16(CTA_PROTO_DST_PORT, 53);
            });
        });
        let (protocol, read) = tuple(attribute(encoded.as_bytes(), CTA_TUPLE_ORIG).unwrap()).unwrap();
        assert_eq!(protocol, 17);
        assert_eq!(read.destination, Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(read.destination_port, 53);
        assert_eq!(read.source_port, 40000);
    }
}
