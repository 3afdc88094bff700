//! Neighbours (the ARP/NDP table) and the FDB (forwarding database) of bridges and VXLAN links.
//!
//! A permanent neighbour entry tells the kernel the hardware address behind an IP without
//! asking (no ARP on the wire). On a VXLAN link, an FDB entry `MAC dst IP` says which remote
//! tunnel endpoint (node) a frame for MAC is sent to. flannel's VXLAN backend wires every peer
//! node with one of each, and so does podnet's: no multicast, no learning.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::address::family;
use crate::error::Result;
use crate::socket::{Create, Netlink};

/// A permanent neighbour entry: `ip` is at `mac` on link `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Neighbour {
    /// The link.
    pub index: u32,
    /// The neighbour's IP.
    pub ip: IpAddr,
    /// Its hardware address.
    pub mac: [u8; 6],
}

/// A VXLAN FDB entry: frames for `mac` on link `index` are tunnelled to `destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdbEntry {
    /// The VXLAN link.
    pub index: u32,
    /// The remote endpoint's hardware address.
    pub mac: [u8; 6],
    /// The remote endpoint's underlay address.
    pub destination: Ipv4Addr,
}

impl Netlink {
    /// The permanent neighbour entries of link `index`.
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        let replies = self.query(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            true,
            || "list neighbours".into(),
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(message) => Some(message),
                _ => None,
            })
            .filter(|message| {
                message.header.ifindex == index && message.header.state == NeighbourState::Permanent
            })
            .filter(|message| matches!(message.header.family, AddressFamily::Inet | AddressFamily::Inet6))
            .filter_map(|message| {
                let mut ip = None;
                let mut mac = None;
                for attribute in message.attributes {
                    match attribute {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                            ip = Some(IpAddr::V4(v4))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                            ip = Some(IpAddr::V6(v6))
                        }
                        NeighbourAttribute::LinkLayerAddress(bytes) => {
                            mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
                        }
                        _ => {}
                    }
                }
                Some(Neighbour {
                    index,
                    ip: ip?,
                    mac: mac?,
                })
            })
            .collect())
    }

    /// Installs or replaces a permanent neighbour entry.
    pub fn replace_neighbour(&mut self, neighbour: &Neighbour) -> Result<()> {
        let message = neighbour_message(neighbour);
        self.execute(
            RouteNetlinkMessage::NewNeighbour(message),
            Some(Create::Replace),
            || format!("set neighbour {} on link #{}", neighbour.ip, neighbour.index),
        )
    }

    /// Removes a neighbour entry.
    pub fn delete_neighbour(&mut self, neighbour: &Neighbour) -> Result<()> {
        self.execute(
            RouteNetlinkMessage::DelNeighbour(neighbour_message(neighbour)),
            None,
            || format!("delete neighbour {} on link #{}", neighbour.ip, neighbour.index),
        )
    }

    /// The static unicast FDB entries of VXLAN link `index` (those with a remote destination).
    pub fn fdb(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        let mut request = NeighbourMessage::default();
        request.header.family = AddressFamily::Bridge;
        let replies = self.query(RouteNetlinkMessage::GetNeighbour(request), true, || {
            "list FDB entries".into()
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(message) => Some(message),
                _ => None,
            })
            .filter(|message| {
                message.header.ifindex == index && message.header.state == NeighbourState::Permanent
            })
            .filter_map(|message| {
                let mut mac = None;
                let mut destination = None;
                for attribute in message.attributes {
                    match attribute {
                        NeighbourAttribute::LinkLayerAddress(bytes) => {
                            mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => destination = Some(v4),
                        // In AF_BRIDGE messages the remote address comes back as raw bytes.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                            destination = <[u8; 4]>::try_from(bytes.as_slice()).ok().map(Ipv4Addr::from)
                        }
                        _ => {}
                    }
                }
                Some(FdbEntry {
                    index,
                    mac: mac?,
                    destination: destination?,
                })
            })
            .collect())
    }

    /// Installs or replaces a static FDB entry on a VXLAN link.
    pub fn replace_fdb(&mut self, entry: &FdbEntry) -> Result<()> {
        self.execute(
            RouteNetlinkMessage::NewNeighbour(fdb_message(entry)),
            Some(Create::Replace),
            || {
                format!(
                    "set FDB entry for {} on link #{}",
                    crate::format_mac(&entry.mac),
                    entry.index
                )
            },
        )
    }

    /// Removes a static FDB entry.
    pub fn delete_fdb(&mut self, entry: &FdbEntry) -> Result<()> {
        self.execute(
            RouteNetlinkMessage::DelNeighbour(fdb_message(entry)),
            None,
            || {
                format!(
                    "delete FDB entry for {} on link #{}",
                    crate::format_mac(&entry.mac),
                    entry.index
                )
            },
        )
    }
}

fn neighbour_message(neighbour: &Neighbour) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = family(neighbour.ip);
    message.header.ifindex = neighbour.index;
    message.header.state = NeighbourState::Permanent;
    message.header.kind = RouteType::Unspec;
    message
        .attributes
        .push(NeighbourAttribute::Destination(match neighbour.ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    message
        .attributes
        .push(NeighbourAttribute::LinkLayerAddress(neighbour.mac.to_vec()));
    message
}

/// `bridge fdb replace MAC dev LINK dst IP self permanent`: NTF_SELF addresses the VXLAN
/// link's own table (without it the kernel answers EOPNOTSUPP).
fn fdb_message(entry: &FdbEntry) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = entry.index;
    message.header.state = NeighbourState::Permanent;
    message.header.flags = NeighbourFlags::Own;
    message.header.kind = RouteType::Unspec;
    message
        .attributes
        .push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            entry.destination,
        )));
    message
}
