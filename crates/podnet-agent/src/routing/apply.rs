//! Bringing the node's kernel to a [`NodePlan`]: read what is there, change only the difference.
//!
//! The routing controller owns exactly these objects, and only these: the `cni0` bridge's
//! gateway address, `podnet.*` VXLAN links with their neighbour and FDB entries, and main-table
//! routes tagged with [`ROUTE_PROTOCOL`]. A restarted agent finds them,
//! keeps what is right, fixes what is wrong and deletes what is stale; everything else on the
//! node is left alone. Nothing is flushed first, so traffic keeps flowing while it works.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use podnet_netlink::{FdbEntry, Link, LinkKind, Neighbour, Netlink, Route, RouteProtocol, RouteScope, Vxlan};

use podnet_nft::registry::ROUTE_PROTOCOL;

use super::cniconf::{self, BRIDGE, CniTarget};
use super::plan::{Facts, NodePlan, Overlay};
/// Prefix of the VXLAN links the agent owns.
const VXLAN_PREFIX: &str = "podnet.";

/// A failure to apply part of a plan.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A netlink operation failed.
    #[error(transparent)]
    Kernel(#[from] podnet_netlink::Error),
    /// The CNI configuration could not be written.
    #[error("write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The node's address is on no link.
    #[error("no link holds the node address {0}; is this the node's network namespace?")]
    NoUplink(Ipv4Addr),
}

/// Applies plans to the kernel. Links, addresses and routes go to the namespace of the thread
/// that created it (its netlink socket stays there).
pub struct Applier {
    netlink: Netlink,
}

/// What an apply changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// One line per change.
    pub lines: Vec<String>,
    /// What the plan asked for but the node's other state prevents, one line each.
    pub conflicts: Vec<String>,
}

impl Applier {
    /// Connects to the kernel.
    pub fn new() -> Result<Self, ApplyError> {
        Ok(Applier {
            netlink: Netlink::connect()?,
        })
    }

    /// Reads the uplink: the link holding `address`.
    pub fn facts(&mut self, address: Ipv4Addr) -> Result<Facts, ApplyError> {
        let addresses = self.netlink.addresses(None)?;
        let index = addresses
            .iter()
            .find(|entry| entry.address.addr() == IpAddr::V4(address))
            .map(|entry| entry.index)
            .ok_or(ApplyError::NoUplink(address))?;
        let link = self
            .netlink
            .link_by_index(index)?
            .ok_or(ApplyError::NoUplink(address))?;
        Ok(Facts {
            uplink: link.name,
            uplink_index: index,
            uplink_mtu: link.mtu,
            uplink_networks: addresses
                .iter()
                .filter(|entry| entry.index == index)
                .map(|entry| entry.address.trunc())
                .collect(),
        })
    }

    /// Brings the kernel to `plan`, and writes the CNI configuration to `cni` when given.
    pub fn apply(&mut self, plan: &NodePlan, cni: Option<&CniTarget>) -> Result<Changes, ApplyError> {
        let mut changes = Changes::default();
        self.bridge(plan, &mut changes)?;
        match &plan.overlay {
            Overlay::Vxlan { link, vtep, peers } => {
                let index = self.vxlan_link(link, *vtep, &mut changes)?;
                self.remove_other_vxlan_links(&link.name, &mut changes)?;
                let routes = peers
                    .iter()
                    .map(|peer| owned_route(peer.pod_cidr, peer.vtep, index, true))
                    .collect();
                self.routes(routes, &mut changes)?;
                let neighbours = peers
                    .iter()
                    .map(|peer| Neighbour {
                        index,
                        ip: IpAddr::V4(peer.vtep),
                        mac: peer.vtep_mac,
                    })
                    .collect();
                self.neighbours(index, neighbours, &mut changes)?;
                let fdb = peers
                    .iter()
                    .map(|peer| FdbEntry {
                        index,
                        mac: peer.vtep_mac,
                        destination: peer.node,
                    })
                    .collect();
                self.fdb(index, fdb, &mut changes)?;
            }
            Overlay::HostGw { uplink, routes } => {
                self.remove_other_vxlan_links("", &mut changes)?;
                let routes = routes
                    .iter()
                    .map(|(cidr, node)| owned_route(*cidr, *node, *uplink, false))
                    .collect();
                self.routes(routes, &mut changes)?;
            }
        }
        if let Some(target) = cni {
            let text = cniconf::render(plan, target);
            let written = cniconf::write(&target.conf, &text).map_err(|source| ApplyError::Io {
                path: target.conf.display().to_string(),
                source,
            })?;
            if written {
                changes
                    .lines
                    .push(format!("CNI configuration written to {}", target.conf.display()));
            }
        }
        Ok(changes)
    }

    /// The pod bridge with the node subnet's gateway address (and no other IPv4 address) and the
    /// pods' MTU, up.
    fn bridge(&mut self, plan: &NodePlan, changes: &mut Changes) -> Result<(), ApplyError> {
        let bridge = match self.netlink.link(BRIDGE)? {
            Some(link) => link,
            None => {
                self.netlink
                    .add_bridge(BRIDGE, bridge_mac(plan.pod_cidr), Some(plan.pod_mtu))?;
                changes.lines.push(format!("bridge {BRIDGE} created"));
                self.netlink.require_link(BRIDGE)?
            }
        };
        if bridge.mtu != plan.pod_mtu {
            self.netlink.set_mtu(bridge.index, plan.pod_mtu)?;
            changes.lines.push(format!(
                "bridge {BRIDGE} MTU {} (was {})",
                plan.pod_mtu, bridge.mtu
            ));
        }
        self.only_address(bridge.index, plan.gateway, changes)?;
        if !bridge.up {
            self.netlink.set_up(bridge.index)?;
        }
        Ok(())
    }

    /// Makes `address` the only IPv4 address of link `index` (one left from an earlier pod
    /// subnet would keep routing it).
    fn only_address(
        &mut self,
        index: u32,
        address: Ipv4Net,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let address = IpNet::V4(address);
        let current: Vec<IpNet> = self
            .netlink
            .addresses(Some(index))?
            .into_iter()
            .map(|entry| entry.address)
            .collect();
        for stale in current
            .iter()
            .filter(|current| current.addr().is_ipv4() && **current != address)
        {
            self.netlink.delete_address(index, *stale)?;
            changes
                .lines
                .push(format!("address {stale} removed from link #{index}"));
        }
        if !current.contains(&address) {
            self.netlink.add_address(index, address)?;
            changes.lines.push(format!("link #{index} has {address}"));
        }
        Ok(())
    }

    /// The VXLAN link as planned (recreated when its settings differ), with its VTEP address.
    fn vxlan_link(
        &mut self,
        wanted: &Vxlan,
        vtep: Ipv4Addr,
        changes: &mut Changes,
    ) -> Result<u32, ApplyError> {
        match self.netlink.vxlan(&wanted.name)? {
            Some(current) if &current == wanted => {}
            Some(current) => {
                let link = self.netlink.require_link(&current.name)?;
                self.netlink.delete_link(link.index)?;
                self.netlink.add_vxlan(wanted)?;
                changes
                    .lines
                    .push(format!("{} recreated: settings changed", wanted.name));
            }
            None => {
                if let Some(other) = self.netlink.link(&wanted.name)? {
                    // A link of our name that is not a VXLAN link: ours from an older layout.
                    self.netlink.delete_link(other.index)?;
                }
                self.netlink.add_vxlan(wanted)?;
                changes.lines.push(format!(
                    "{} created (VNI {}, port {})",
                    wanted.name, wanted.vni, wanted.port
                ));
            }
        }
        let link = self.netlink.require_link(&wanted.name)?;
        self.only_address(link.index, Ipv4Net::new(vtep, 32).expect("host prefix"), changes)?;
        if !link.up {
            self.netlink.set_up(link.index)?;
        }
        Ok(link.index)
    }

    /// Deletes podnet VXLAN links other than `keep` (a changed VNI, or a switch to host-gw).
    fn remove_other_vxlan_links(&mut self, keep: &str, changes: &mut Changes) -> Result<(), ApplyError> {
        let stale: Vec<Link> = self
            .netlink
            .links()?
            .into_iter()
            .filter(|link| {
                link.kind == LinkKind::Vxlan && link.name.starts_with(VXLAN_PREFIX) && link.name != keep
            })
            .collect();
        for link in stale {
            self.netlink.delete_link(link.index)?;
            changes.lines.push(format!("{} deleted", link.name));
        }
        Ok(())
    }

    /// Makes the routes tagged with podnet's protocol exactly `wanted`. A wanted destination
    /// that somebody else routes already (whatever the metric) is left to them and reported.
    fn routes(&mut self, wanted: Vec<Route>, changes: &mut Changes) -> Result<(), ApplyError> {
        let (current, foreign): (Vec<Route>, Vec<Route>) = self
            .netlink
            .routes()?
            .into_iter()
            .partition(|route| route.protocol == RouteProtocol::Other(ROUTE_PROTOCOL));
        for route in current
            .iter()
            .filter(|route| !wanted.iter().any(|want| same_route(want, route)))
        {
            self.netlink.delete_route(route)?;
            changes.lines.push(format!("route {} removed", route.destination));
        }
        for route in wanted
            .iter()
            .filter(|want| !current.iter().any(|route| same_route(want, route)))
        {
            let via = route
                .gateway
                .map(|gateway| gateway.to_string())
                .unwrap_or_default();
            if foreign.iter().any(|other| other.destination == route.destination) {
                changes.conflicts.push(format!(
                    "route {} via {via} not installed: the node routes it already, and not through podnet",
                    route.destination
                ));
                continue;
            }
            self.netlink.replace_route(route)?;
            changes
                .lines
                .push(format!("route {} via {via}", route.destination));
        }
        Ok(())
    }

    /// Makes the permanent neighbour entries of link `index` exactly `wanted`.
    fn neighbours(
        &mut self,
        index: u32,
        wanted: Vec<Neighbour>,
        changes: &mut Changes,
    ) -> Result<(), ApplyError> {
        let current = self.netlink.neighbours(index)?;
        converge(
            &mut self.netlink,
            current,
            wanted,
            |netlink, stale| {
                netlink.delete_neighbour(stale)?;
                Ok(format!("neighbour {} removed", stale.ip))
            },
            |netlink, missing| {
                netlink.replace_neighbour(missing)?;
                Ok(format!(
                    "neighbour {} is {}",
                    missing.ip,
                    podnet_netlink::format_mac(&missing.mac)
                ))
            },
            changes,
        )
    }

    /// Makes the static FDB entries of VXLAN link `index` exactly `wanted`.
    fn fdb(&mut self, index: u32, wanted: Vec<FdbEntry>, changes: &mut Changes) -> Result<(), ApplyError> {
        let current = self.netlink.fdb(index)?;
        converge(
            &mut self.netlink,
            current,
            wanted,
            |netlink, stale| {
                netlink.delete_fdb(stale)?;
                Ok(format!("FDB {} removed", podnet_netlink::format_mac(&stale.mac)))
            },
            |netlink, missing| {
                netlink.replace_fdb(missing)?;
                Ok(format!(
                    "FDB {} via {}",
                    podnet_netlink::format_mac(&missing.mac),
                    missing.destination
                ))
            },
            changes,
        )
    }
}

/// Removes the `current` entries that are not `wanted` and adds the `wanted` ones that are
/// missing, logging what each step says.
fn converge<T: Eq + Hash>(
    netlink: &mut Netlink,
    current: Vec<T>,
    wanted: Vec<T>,
    remove: impl Fn(&mut Netlink, &T) -> Result<String, ApplyError>,
    add: impl Fn(&mut Netlink, &T) -> Result<String, ApplyError>,
    changes: &mut Changes,
) -> Result<(), ApplyError> {
    let current: HashSet<T> = current.into_iter().collect();
    let wanted: HashSet<T> = wanted.into_iter().collect();
    for stale in current.difference(&wanted) {
        changes.lines.push(remove(netlink, stale)?);
    }
    for missing in wanted.difference(&current) {
        changes.lines.push(add(netlink, missing)?);
    }
    Ok(())
}

/// A route podnet owns: tagged with its protocol.
fn owned_route(destination: Ipv4Net, gateway: Ipv4Addr, link: u32, onlink: bool) -> Route {
    let mut route = Route::new(IpNet::V4(destination))
        .via(IpAddr::V4(gateway))
        .dev(link);
    route.onlink = onlink;
    route.protocol = RouteProtocol::Other(ROUTE_PROTOCOL);
    route.scope = RouteScope::Universe;
    route
}

fn same_route(a: &Route, b: &Route) -> bool {
    a.destination == b.destination && a.gateway == b.gateway && a.output == b.output && a.onlink == b.onlink
}

/// A stable bridge MAC derived from the node's pod subnet (locally administered, unicast).
fn bridge_mac(pod_cidr: Ipv4Net) -> [u8; 6] {
    let [a, b, c, d] = pod_cidr.network().octets();
    [0x0a, 0x58, a, b, c, d]
}
