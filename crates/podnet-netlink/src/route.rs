//! Routes: where the kernel sends a packet for a destination prefix.
//!
//! A route says "packets for DST leave through link OIF, to next hop GW". A gateway must be
//! reachable on a connected prefix, unless the route is marked `onlink` (the kernel then trusts
//! the gateway to be on the link). The `protocol` field records who installed a route; podnet
//! tags its own so that it can find them again after a restart.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteType,
};

use crate::address::family;
use crate::error::Result;
use crate::socket::{Create, Netlink};

pub use netlink_packet_route::route::{RouteProtocol, RouteScope};

/// The main routing table, the one `ip route` shows.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A unicast route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0` for a default route).
    pub destination: IpNet,
    /// Next hop, or `None` for a destination directly on the link.
    pub gateway: Option<IpAddr>,
    /// Outgoing link; the kernel derives it from the gateway when `None`.
    pub output: Option<u32>,
    /// Trust the gateway to be on the link even without a connected prefix for it.
    pub onlink: bool,
    /// Who installed the route.
    pub protocol: RouteProtocol,
    /// Route scope: `Link` for directly reachable destinations, `Universe` otherwise.
    pub scope: RouteScope,
    /// Routing table.
    pub table: u32,
    /// Metric; lower wins among routes to the same prefix.
    pub priority: Option<u32>,
    /// Path MTU for this destination.
    pub mtu: Option<u32>,
    /// Preferred source address for locally generated packets.
    pub source: Option<IpAddr>,
}

impl Route {
    /// A route to `destination` in the main table, installed with protocol `boot` like
    /// `ip route add` does.
    pub fn new(destination: IpNet) -> Self {
        Route {
            destination,
            gateway: None,
            output: None,
            onlink: false,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Universe,
            table: MAIN_TABLE,
            priority: None,
            mtu: None,
            source: None,
        }
    }

    /// Sets the next hop.
    pub fn via(mut self, gateway: IpAddr) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Sets the outgoing link.
    pub fn dev(mut self, index: u32) -> Self {
        self.output = Some(index);
        self
    }

    fn message(&self) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = family(self.destination.addr());
        message.header.destination_prefix_length = self.destination.prefix_len();
        message.header.protocol = self.protocol;
        message.header.scope = self.scope;
        message.header.kind = RouteType::Unicast;
        if self.table < 256 {
            message.header.table = self.table as u8;
        } else {
            message.header.table = RouteHeader::RT_TABLE_UNSPEC;
        }
        message.attributes.push(RouteAttribute::Table(self.table));
        if self.onlink {
            message.header.flags |= RouteFlags::Onlink;
        }
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                self.destination.network(),
            )));
        if let Some(gateway) = self.gateway {
            message
                .attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        }
        if let Some(index) = self.output {
            message.attributes.push(RouteAttribute::Oif(index));
        }
        if let Some(priority) = self.priority {
            message.attributes.push(RouteAttribute::Priority(priority));
        }
        if let Some(source) = self.source {
            message
                .attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(source)));
        }
        if let Some(mtu) = self.mtu {
            message
                .attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        message
    }
}

impl Netlink {
    /// All unicast routes of the main table for both address families.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let replies = self.query(
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            true,
            || "list routes".into(),
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(message) => parse_route(message),
                _ => None,
            })
            .filter(|route| route.table == MAIN_TABLE)
            .collect())
    }

    /// Installs a route; fails with EEXIST when the same route exists.
    pub fn add_route(&mut self, route: &Route) -> Result<()> {
        self.execute(
            RouteNetlinkMessage::NewRoute(route.message()),
            Some(Create::Exclusive),
            || format!("add route {}", describe(route)),
        )
    }

    /// Installs a route, replacing any route to the same destination and metric.
    pub fn replace_route(&mut self, route: &Route) -> Result<()> {
        self.execute(
            RouteNetlinkMessage::NewRoute(route.message()),
            Some(Create::Replace),
            || format!("replace route {}", describe(route)),
        )
    }

    /// Removes a route.
    pub fn delete_route(&mut self, route: &Route) -> Result<()> {
        self.execute(RouteNetlinkMessage::DelRoute(route.message()), None, || {
            format!("delete route {}", describe(route))
        })
    }
}

fn describe(route: &Route) -> String {
    let mut text = route.destination.to_string();
    if let Some(gateway) = route.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    if let Some(index) = route.output {
        text.push_str(&format!(" dev #{index}"));
    }
    text
}

fn parse_route(message: RouteMessage) -> Option<Route> {
    if message.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(message.header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut output = None;
    let mut priority = None;
    let mut source = None;
    let mut mtu = None;
    for attribute in message.attributes {
        match attribute {
            RouteAttribute::Table(id) => table = id,
            RouteAttribute::Destination(address) => destination = ip_of(address),
            RouteAttribute::Gateway(address) => gateway = ip_of(address),
            RouteAttribute::Oif(index) => output = Some(index),
            RouteAttribute::Priority(value) => priority = Some(value),
            RouteAttribute::PrefSource(address) => source = ip_of(address),
            RouteAttribute::Metrics(metrics) => {
                mtu = metrics.into_iter().find_map(|metric| match metric {
                    RouteMetric::Mtu(value) => Some(value),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    let unspecified: IpAddr = match message.header.address_family {
        netlink_packet_route::AddressFamily::Inet6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        _ => std::net::Ipv4Addr::UNSPECIFIED.into(),
    };
    let destination = IpNet::new(
        destination.unwrap_or(unspecified),
        message.header.destination_prefix_length,
    )
    .ok()?;
    Some(Route {
        destination,
        gateway,
        output,
        onlink: message.header.flags.contains(RouteFlags::Onlink),
        protocol: message.header.protocol,
        scope: message.header.scope,
        table,
        priority,
        mtu,
        source,
    })
}

fn ip_of(address: RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(ip.into()),
        RouteAddress::Inet6(ip) => Some(ip.into()),
        _ => None,
    }
}
