//! IP addresses on links.
//!
//! Adding `10.0.0.2/24` to a link does two things: the kernel answers for 10.0.0.2 and installs
//! a "connected" route to 10.0.0.0/24 through that link (protocol `kernel`, scope `link`).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::socket::{Create, Netlink};

/// An address assigned to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// Interface index of the link that holds the address.
    pub index: u32,
    /// The address with its prefix length.
    pub address: IpNet,
}

impl Netlink {
    /// All addresses of the namespace, or only those of link `index`.
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<Address>> {
        Ok(self
            .address_messages(index)?
            .into_iter()
            .filter_map(parse_address)
            .collect())
    }

    /// The addresses of link `index` tagged with `protocol` (`ip addr add ... proto N`), which
    /// whoever tagged them can tell from everybody else's after a restart.
    pub fn tagged_addresses(&mut self, index: u32, protocol: u8) -> Result<Vec<IpNet>> {
        let tag = AddressAttribute::Protocol(AddressProtocol::Other(protocol));
        Ok(self
            .address_messages(Some(index))?
            .into_iter()
            .filter(|message| message.attributes.contains(&tag))
            .filter_map(parse_address)
            .map(|address| address.address)
            .collect())
    }

    fn address_messages(&mut self, index: Option<u32>) -> Result<Vec<AddressMessage>> {
        let mut request = AddressMessage::default();
        request.header.index = index.unwrap_or(0);
        let replies = self.query(RouteNetlinkMessage::GetAddress(request), true, || {
            "list addresses".into()
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(message) => Some(message),
                _ => None,
            })
            .filter(|message| index.is_none_or(|index| message.header.index == index))
            .collect())
    }

    /// Assigns `address` to link `index` (with the broadcast address for IPv4, as `ip addr add
    /// ... brd +` does); fails with EEXIST when the link has it already.
    pub fn add_address(&mut self, index: u32, address: IpNet) -> Result<()> {
        self.new_address(index, address, false)
    }

    /// Assigns `address` as [`add_address`](Self::add_address) does, usable at once: an IPv6
    /// address skips duplicate address detection (`IFA_F_NODAD`) instead of staying tentative
    /// until the kernel's DAD work runs after the link comes up (sockets cannot bind to it
    /// meanwhile: "Cannot assign requested address").
    pub fn add_address_at_once(&mut self, index: u32, address: IpNet) -> Result<()> {
        self.new_address(index, address, true)
    }

    fn new_address(&mut self, index: u32, address: IpNet, no_dad: bool) -> Result<()> {
        let mut message = address_message(index, address);
        match address {
            IpNet::V4(v4) if v4.prefix_len() < 31 => {
                message
                    .attributes
                    .push(AddressAttribute::Broadcast(v4.broadcast()));
            }
            IpNet::V6(_) if no_dad => {
                message.header.flags = AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            _ => {}
        }
        self.execute(
            RouteNetlinkMessage::NewAddress(message),
            Some(Create::Exclusive),
            || format!("add address {address} to link #{index}"),
        )
    }

    /// Assigns `address` to link `index`, tagged with `protocol`, replacing it if the link
    /// has it already (with another tag, say); no broadcast address (meant for host routes).
    pub fn add_tagged_address(&mut self, index: u32, address: IpNet, protocol: u8) -> Result<()> {
        let mut message = address_message(index, address);
        message
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(protocol)));
        self.execute(
            RouteNetlinkMessage::NewAddress(message),
            Some(Create::Replace),
            || format!("add address {address} to link #{index}"),
        )
    }

    /// Removes `address` from link `index`.
    pub fn delete_address(&mut self, index: u32, address: IpNet) -> Result<()> {
        self.execute(
            RouteNetlinkMessage::DelAddress(address_message(index, address)),
            None,
            || format!("remove address {address} from link #{index}"),
        )
    }
}

fn address_message(index: u32, address: IpNet) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.index = index;
    message.header.prefix_len = address.prefix_len();
    message.header.family = family(address.addr());
    message.attributes.push(AddressAttribute::Local(address.addr()));
    message.attributes.push(AddressAttribute::Address(address.addr()));
    message
}

pub(crate) fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn parse_address(message: AddressMessage) -> Option<Address> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links
    // and equal to IFA_LOCAL otherwise. IPv6 only sends IFA_ADDRESS.
    let mut local = None;
    let mut address = None;
    for attribute in message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => address = Some(ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    Some(Address {
        index: message.header.index,
        address: IpNet::new(ip, message.header.prefix_len).ok()?,
    })
}
