//! Links (network interfaces): bridges, veth pairs and the properties podnet sets on them.
//!
//! A veth pair is a virtual cable: a frame sent into one end comes out of the other, and the two
//! ends may live in different namespaces. A bridge is a virtual switch; a link "enslaved" to it
//! (its controller) becomes a switch port. Hairpin mode lets a port send a frame back out of the
//! port it came in on, which a pod needs to reach itself through a service address.

use std::os::fd::{AsFd, AsRawFd};

use netlink_packet_route::RouteNetlinkMessage;
use std::net::Ipv4Addr;

use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, InfoVxlan, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::socket::{Create, Netlink};

/// The kind of a link, as `ip -d link` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A software switch.
    Bridge,
    /// One end of a virtual cable.
    Veth,
    /// A VXLAN tunnel endpoint.
    Vxlan,
    /// Any other kind the kernel named.
    Other(String),
    /// A link without a kind: loopback or a physical device.
    Device,
}

/// A link as the kernel reports it.
#[derive(Debug, Clone)]
pub struct Link {
    /// Interface index, unique within its namespace.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, for links that have one.
    pub mac: Option<[u8; 6]>,
    /// Maximum transmission unit.
    pub mtu: u32,
    /// What kind of link this is.
    pub kind: LinkKind,
    /// The bridge this link is a port of.
    pub controller: Option<u32>,
    /// Whether the link is administratively up.
    pub up: bool,
    /// Whether the link is in promiscuous mode.
    pub promiscuous: bool,
    /// For a veth, the interface index of its peer (in the peer's namespace).
    pub peer_index: Option<u32>,
}

/// A veth pair to create: `name` stays in the namespace of the socket, `peer_name` goes to
/// `peer_netns` (or stays too when it is `None`).
#[derive(Debug)]
pub struct VethPair<'a> {
    /// Name of the end created in the socket's namespace.
    pub name: &'a str,
    /// Hardware address of that end; the kernel picks a random one when `None`.
    pub mac: Option<[u8; 6]>,
    /// Name of the other end.
    pub peer_name: &'a str,
    /// Namespace the other end is created in.
    pub peer_netns: Option<&'a Netns>,
    /// MTU of both ends; the kernel default (1500) when `None`.
    pub mtu: Option<u32>,
}

/// A VXLAN tunnel endpoint to create: unicast only (no multicast group), no learning, so
/// forwarding is entirely driven by static FDB entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    /// Link name.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Source address of the encapsulated packets (the node's address).
    pub local: Ipv4Addr,
    /// The underlay link the tunnel uses.
    pub underlay: u32,
    /// MTU: the underlay's minus the 50 bytes of VXLAN encapsulation.
    pub mtu: u32,
    /// The endpoint's hardware address.
    pub mac: [u8; 6],
    /// Whether encapsulated packets carry an outer UDP checksum. flannel (and iproute2 for
    /// IPv4) leave it off: the inner packet has its own checksums, and computing the outer one
    /// costs a few percent of throughput.
    pub udp_checksum: bool,
}

impl Netlink {
    /// All links of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.query(RouteNetlinkMessage::GetLink(LinkMessage::default()), true, || {
            "list links".into()
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(message) => Some(parse_link(message)),
                _ => None,
            })
            .collect())
    }

    /// The link named `name`, or `None` when there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(message, || format!("look up link {name}"))
    }

    /// The link with interface index `index`, or `None` when there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.get_link(message, || format!("look up link #{index}"))
    }

    /// The link named `name`, or an error saying it does not exist.
    pub fn require_link(&mut self, name: &str) -> Result<Link> {
        self.link(name)?
            .ok_or_else(|| Error::NotFound(format!("link {name}")))
    }

    fn get_link(&mut self, message: LinkMessage, operation: impl FnOnce() -> String) -> Result<Option<Link>> {
        match self.query(RouteNetlinkMessage::GetLink(message), false, operation) {
            Ok(replies) => Ok(replies.into_iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(message) => Some(parse_link(message)),
                _ => None,
            })),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates a bridge named `name`; fails with EEXIST when a link of that name exists.
    ///
    /// A bridge without an address of its own borrows the lowest one of its ports and changes
    /// it as ports come and go, which leaves stale ARP entries for the gateway in every
    /// container; giving it `mac` at creation pins it.
    pub fn add_bridge(&mut self, name: &str, mac: [u8; 6], mtu: Option<u32>) -> Result<()> {
        let mut message = named(name);
        message.attributes.push(LinkAttribute::Address(mac.to_vec()));
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        message
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.execute(
            RouteNetlinkMessage::NewLink(message),
            Some(Create::Exclusive),
            || format!("create bridge {name}"),
        )
    }

    /// Creates a VXLAN link; fails with EEXIST when a link of that name exists.
    pub fn add_vxlan(&mut self, vxlan: &Vxlan) -> Result<()> {
        let mut message = named(&vxlan.name);
        message.attributes.push(LinkAttribute::Mtu(vxlan.mtu));
        message
            .attributes
            .push(LinkAttribute::Address(vxlan.mac.to_vec()));
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(vxlan.vni),
                InfoVxlan::Local(vxlan.local),
                InfoVxlan::Link(vxlan.underlay),
                InfoVxlan::Port(vxlan.port),
                InfoVxlan::Learning(false),
                InfoVxlan::UDPCsum(vxlan.udp_checksum),
            ])),
        ]));
        self.execute(
            RouteNetlinkMessage::NewLink(message),
            Some(Create::Exclusive),
            || {
                format!(
                    "create VXLAN link {} (VNI {}, port {})",
                    vxlan.name, vxlan.vni, vxlan.port
                )
            },
        )
    }

    /// The VXLAN settings of an existing link, to compare with wanted ones.
    pub fn vxlan(&mut self, name: &str) -> Result<Option<Vxlan>> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = match self.query(RouteNetlinkMessage::GetLink(message), false, || {
            format!("look up link {name}")
        }) {
            Ok(replies) => replies,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(err),
        };
        let Some(RouteNetlinkMessage::NewLink(message)) = replies.into_iter().next() else {
            return Ok(None);
        };
        let mut vxlan = Vxlan {
            name: name.to_owned(),
            vni: 0,
            port: 0,
            local: Ipv4Addr::UNSPECIFIED,
            underlay: 0,
            mtu: 0,
            mac: [0; 6],
            udp_checksum: false,
        };
        let mut is_vxlan = false;
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::Mtu(mtu) => vxlan.mtu = mtu,
                LinkAttribute::Address(bytes) => {
                    vxlan.mac = <[u8; 6]>::try_from(bytes.as_slice()).unwrap_or_default()
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(InfoKind::Vxlan) => is_vxlan = true,
                            LinkInfo::Data(InfoData::Vxlan(data)) => {
                                for item in data {
                                    match item {
                                        InfoVxlan::Id(vni) => vxlan.vni = vni,
                                        InfoVxlan::Port(port) => vxlan.port = port,
                                        InfoVxlan::Local(local) => vxlan.local = local,
                                        InfoVxlan::Link(link) => vxlan.underlay = link,
                                        InfoVxlan::UDPCsum(on) => vxlan.udp_checksum = on,
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(is_vxlan.then_some(vxlan))
    }

    /// Creates a veth pair in one request, its peer directly in the peer namespace.
    pub fn add_veth(&mut self, pair: &VethPair<'_>) -> Result<()> {
        let mut peer = named(pair.peer_name);
        if let Some(mtu) = pair.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        // The fd must stay open until the request is acknowledged; `pair` borrows it.
        let peer_fd = pair.peer_netns.map(|netns| netns.as_fd().as_raw_fd());
        if let Some(fd) = peer_fd {
            peer.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        let mut message = named(pair.name);
        if let Some(mtu) = pair.mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = pair.mac {
            message.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.execute(
            RouteNetlinkMessage::NewLink(message),
            Some(Create::Exclusive),
            || format!("create veth pair {} <-> {}", pair.name, pair.peer_name),
        )
    }

    /// Brings a link up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut message = indexed(index);
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.set_link(message, || format!("set link #{index} up"))
    }

    /// Takes a link down.
    pub fn set_down(&mut self, index: u32) -> Result<()> {
        let mut message = indexed(index);
        message.header.change_mask = LinkFlags::Up;
        self.set_link(message, || format!("set link #{index} down"))
    }

    /// Renames a link (it must be down).
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        let mut message = indexed(index);
        message.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.set_link(message, || format!("rename link #{index} to {name}"))
    }

    /// Sets or clears promiscuous mode.
    pub fn set_promiscuous(&mut self, index: u32, on: bool) -> Result<()> {
        let mut message = indexed(index);
        message.header.flags = if on {
            LinkFlags::Promisc
        } else {
            LinkFlags::empty()
        };
        message.header.change_mask = LinkFlags::Promisc;
        self.set_link(message, || format!("set promiscuous mode of link #{index}"))
    }

    /// Makes link `index` a port of bridge `bridge`.
    pub fn set_controller(&mut self, index: u32, bridge: u32) -> Result<()> {
        let mut message = indexed(index);
        message.attributes.push(LinkAttribute::Controller(bridge));
        self.set_link(message, || format!("attach link #{index} to bridge #{bridge}"))
    }

    /// Sets the MTU of a link.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut message = indexed(index);
        message.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(message, || format!("set MTU {mtu} on link #{index}"))
    }

    /// Enables or disables hairpin mode on a bridge port.
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        let mut message = indexed(index);
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(on)])),
        ]));
        // Port options are applied by RTM_NEWLINK on an existing link, not by RTM_SETLINK.
        self.execute(RouteNetlinkMessage::NewLink(message), None, || {
            format!("set hairpin mode on bridge port #{index}")
        })
    }

    /// Deletes a link; deleting one end of a veth pair deletes both.
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        self.execute(RouteNetlinkMessage::DelLink(indexed(index)), None, || {
            format!("delete link #{index}")
        })
    }

    fn set_link(&mut self, message: LinkMessage, operation: impl FnOnce() -> String) -> Result<()> {
        self.execute(RouteNetlinkMessage::SetLink(message), None, operation)
    }
}

fn named(name: &str) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.attributes.push(LinkAttribute::IfName(name.to_owned()));
    message
}

fn indexed(index: u32) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
}

fn parse_link(message: LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        kind: LinkKind::Device,
        controller: None,
        up: message.header.flags.contains(LinkFlags::Up),
        promiscuous: message.header.flags.contains(LinkFlags::Promisc),
        peer_index: None,
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Controller(index) => link.controller = Some(index),
            LinkAttribute::Link(index) => link.peer_index = Some(index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = match kind {
                            InfoKind::Bridge => LinkKind::Bridge,
                            InfoKind::Veth => LinkKind::Veth,
                            InfoKind::Vxlan => LinkKind::Vxlan,
                            other => LinkKind::Other(other.to_string()),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// Formats a hardware address the way `ip link` does (`0a:58:0a:00:0a:02`).
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
