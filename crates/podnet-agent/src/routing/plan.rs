//! What a node's kernel should look like, computed from cluster state: a pure function.
//!
//! Every node gets a slice of the cluster's pod CIDR (`Node.spec.podCIDR`); its pods sit on a
//! local bridge whose address is the slice's gateway. To reach a pod on another node, this node
//! needs a route to that node's slice:
//!
//! - `vxlan` (flannel's layout): packets are encapsulated in UDP (port 8472) by a VXLAN link,
//!   `podnet.<VNI>`. The link holds the slice's network address as its "VTEP" address; each peer
//!   gets a route `PEER_SLICE via PEER_VTEP dev podnet.1 onlink`, a permanent neighbour entry
//!   `PEER_VTEP -> PEER_VTEP_MAC` and an FDB entry `PEER_VTEP_MAC -> PEER_NODE_IP`. No multicast,
//!   no learning, no outer UDP checksum; the inner MTU is the underlay's minus 50 bytes.
//! - `host-gw`: plain routes `PEER_SLICE via PEER_NODE_IP`, which only work when every node is on
//!   the same L2 segment.
//!
//! Either way pod addresses are never translated between nodes; only traffic leaving the
//! cluster is masqueraded (see [`crate::egress`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::Node;
use podnet_model::{Backend, node_ipv4, node_pod_cidrs};

/// Bytes a VXLAN encapsulation adds: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const VXLAN_OVERHEAD: u32 = 50;

/// What the agent read from its own node's kernel before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The link holding the node's address (its uplink to the underlay).
    pub uplink: String,
    /// Its interface index.
    pub uplink_index: u32,
    /// Its MTU.
    pub uplink_mtu: u32,
    /// Its addresses with prefix length: the segment it is directly on.
    pub uplink_networks: Vec<IpNet>,
}

/// The node's desired network state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// This node's address on the underlay.
    pub address: Ipv4Addr,
    /// This node's pod subnet.
    pub pod_cidr: Ipv4Net,
    /// The pod bridge's address: the subnet's first host, its pods' gateway.
    pub gateway: Ipv4Net,
    /// The MTU pods must use so their packets fit the backend.
    pub pod_mtu: u32,
    /// The cross-node part.
    pub overlay: Overlay,
    /// Peers left out of the plan, and why (a pod subnet that would clash with another route).
    pub skipped_peers: Vec<String>,
}

/// The backend-specific part of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// The local VXLAN link and every peer behind it.
    Vxlan {
        /// The local VXLAN link.
        link: podnet_netlink::Vxlan,
        /// This node's VTEP address (its pod subnet's network address, /32 on the link).
        vtep: Ipv4Addr,
        /// Remote endpoints.
        peers: Vec<VxlanPeer>,
    },
    /// Routes through the peers' node addresses.
    HostGw {
        /// The uplink's interface index, where the routes go out.
        uplink: u32,
        /// `(peer pod subnet, peer node address)`.
        routes: Vec<(Ipv4Net, Ipv4Addr)>,
    },
}

/// A peer node as seen through VXLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPeer {
    /// The peer's pod subnet.
    pub pod_cidr: Ipv4Net,
    /// The peer's VTEP address (its pod subnet's network address).
    pub vtep: Ipv4Addr,
    /// The peer's VTEP hardware address.
    pub vtep_mac: [u8; 6],
    /// The peer's underlay address, where its VXLAN packets go.
    pub node: Ipv4Addr,
}

/// Why no plan can be made (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// This node's Node object is missing or lacks what the agent needs.
    #[error("node {0}: {1}")]
    Node(String, String),
    /// host-gw cannot reach a peer directly.
    #[error(
        "host-gw needs every node on one L2 segment, but node {peer} ({address}) is not on {uplink} ({networks}); use the vxlan backend"
    )]
    NotOnSegment {
        /// The unreachable peer.
        peer: String,
        /// Its address.
        address: Ipv4Addr,
        /// The local uplink.
        uplink: String,
        /// The uplink's networks.
        networks: String,
    },
}

/// The VTEP hardware address of a node, derived from its underlay address so that every agent
/// computes every peer's without exchanging anything: `0e:00:` + the four address bytes
/// (locally administered, unicast).
pub fn vtep_mac(node: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = node.octets();
    [0x0e, 0x00, a, b, c, d]
}

/// The VXLAN link's name for a VNI (`podnet.1`, like flannel's `flannel.1`).
pub fn vxlan_link_name(vni: u32) -> String {
    format!("podnet.{vni}")
}

/// Node `name`'s IPv4 underlay address and pod subnet, the two facts every plan starts from.
pub fn own_identity(name: &str, nodes: &BTreeMap<String, Node>) -> Result<(Ipv4Addr, Ipv4Net), PlanError> {
    let node_error = |message: &str| PlanError::Node(name.to_owned(), message.to_owned());
    let node = nodes.get(name).ok_or_else(|| node_error("no such Node object"))?;
    network_identity(node)
        .ok_or_else(|| node_error("needs an IPv4 InternalIP and an IPv4 podCIDR of /30 or larger"))
}

/// Plans node `name`'s network from `state`, given what the kernel says about its uplink.
pub fn plan(
    name: &str,
    backend: Backend,
    nodes: &BTreeMap<String, Node>,
    facts: &Facts,
) -> Result<NodePlan, PlanError> {
    let (address, pod_cidr) = own_identity(name, nodes)?;
    let gateway = Ipv4Net::new(next(pod_cidr.network()), pod_cidr.prefix_len()).expect("valid prefix");
    // A peer subnet overlapping this node's, another peer's or the underlay would replace a
    // route that traffic depends on: such peers are left out, and said so.
    let mut peers: Vec<(String, Ipv4Addr, Ipv4Net)> = Vec::new();
    let mut skipped_peers = Vec::new();
    for (peer, node) in nodes.iter().filter(|(peer, _)| peer.as_str() != name) {
        let Some((peer_address, cidr)) = network_identity(node) else {
            skipped_peers.push(format!(
                "node {peer}: no IPv4 InternalIP and podCIDR (yet); not routed"
            ));
            continue;
        };
        let overlaps = |other: &Ipv4Net| other.contains(&cidr.network()) || cidr.contains(&other.network());
        let clash = if overlaps(&pod_cidr) {
            Some(format!("this node's pod subnet {pod_cidr}"))
        } else if let Some((other, _, other_cidr)) = peers.iter().find(|(_, _, other)| overlaps(other)) {
            Some(format!("node {other}'s pod subnet {other_cidr}"))
        } else {
            facts.uplink_networks.iter().find_map(|network| match network {
                IpNet::V4(v4) if overlaps(v4) => Some(format!("the underlay {}", v4.trunc())),
                _ => None,
            })
        };
        match clash {
            Some(what) => skipped_peers.push(format!(
                "node {peer}: pod subnet {cidr} overlaps {what}; not routed"
            )),
            None => peers.push((peer.clone(), peer_address, cidr)),
        }
    }
    let (overlay, pod_mtu) = match backend {
        Backend::Vxlan { vni, port } => {
            let mtu = facts.uplink_mtu - VXLAN_OVERHEAD;
            let link = podnet_netlink::Vxlan {
                name: vxlan_link_name(vni),
                vni,
                port,
                local: address,
                underlay: facts.uplink_index,
                mtu,
                mac: vtep_mac(address),
                udp_checksum: false,
            };
            let peers = peers
                .iter()
                .map(|(_, node, cidr)| VxlanPeer {
                    pod_cidr: *cidr,
                    vtep: cidr.network(),
                    vtep_mac: vtep_mac(*node),
                    node: *node,
                })
                .collect();
            (
                Overlay::Vxlan {
                    link,
                    vtep: pod_cidr.network(),
                    peers,
                },
                mtu,
            )
        }
        Backend::HostGw => {
            for (peer, address, _) in &peers {
                if !facts
                    .uplink_networks
                    .iter()
                    .any(|network| network.contains(&IpAddr::V4(*address)))
                {
                    return Err(PlanError::NotOnSegment {
                        peer: peer.clone(),
                        address: *address,
                        uplink: facts.uplink.clone(),
                        networks: facts
                            .uplink_networks
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
            let routes = peers.iter().map(|(_, address, cidr)| (*cidr, *address)).collect();
            (
                Overlay::HostGw {
                    uplink: facts.uplink_index,
                    routes,
                },
                facts.uplink_mtu,
            )
        }
    };
    Ok(NodePlan {
        address,
        pod_cidr,
        gateway,
        pod_mtu,
        overlay,
        skipped_peers,
    })
}

/// A node's IPv4 underlay address and pod subnet, when it has both and the subnet has room for
/// a gateway and a pod (/30 or larger). A subnet written with host bits counts as its network.
fn network_identity(node: &Node) -> Option<(Ipv4Addr, Ipv4Net)> {
    let address = node_ipv4(node, "InternalIP")?;
    let cidr = node_pod_cidrs(node).into_iter().find_map(|cidr| match cidr {
        IpNet::V4(v4) => Some(v4.trunc()),
        IpNet::V6(_) => None,
    })?;
    (cidr.prefix_len() <= 30).then_some((address, cidr))
}

fn next(ip: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, address: &str, cidr: &str) -> (String, Node) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(cidr.into()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: address.into(),
                }]),
                ..NodeStatus::default()
            }),
        };
        (name.to_owned(), node)
    }

    fn cluster() -> BTreeMap<String, Node> {
        [
            node("node1", "192.168.10.11", "10.244.0.0/24"),
            node("node2", "192.168.10.12", "10.244.1.0/24"),
            node("node3", "192.168.10.13", "10.244.2.0/24"),
        ]
        .into_iter()
        .collect()
    }

    fn facts() -> Facts {
        Facts {
            uplink: "eth0".into(),
            uplink_index: 2,
            uplink_mtu: 1500,
            uplink_networks: vec!["192.168.10.11/24".parse().unwrap()],
        }
    }

    #[test]
    fn vxlan_wires_every_peer_like_flannel() {
        let plan = plan("node1", Backend::DEFAULT_VXLAN, &cluster(), &facts()).unwrap();
        assert_eq!(plan.gateway.to_string(), "10.244.0.1/24");
        assert_eq!(plan.pod_mtu, 1450);
        let Overlay::Vxlan { link, vtep, peers } = plan.overlay else {
            panic!("vxlan")
        };
        assert_eq!(
            (link.name.as_str(), link.vni, link.port, link.mtu),
            ("podnet.1", 1, 8472, 1450)
        );
        assert_eq!(link.local.to_string(), "192.168.10.11");
        assert_eq!(vtep.to_string(), "10.244.0.0");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].vtep.to_string(), "10.244.1.0");
        assert_eq!(peers[0].vtep_mac, [0x0e, 0, 192, 168, 10, 12]);
        assert_eq!(peers[0].node.to_string(), "192.168.10.12");
    }

    #[test]
    fn host_gw_routes_through_peer_nodes_on_the_segment_only() {
        let plan = plan("node2", Backend::HostGw, &cluster(), &facts()).unwrap();
        assert_eq!(plan.pod_mtu, 1500);
        let Overlay::HostGw { routes, .. } = plan.overlay else {
            panic!("host-gw")
        };
        assert_eq!(
            routes[0],
            ("10.244.0.0/24".parse().unwrap(), "192.168.10.11".parse().unwrap())
        );
        let mut far = cluster();
        far.extend([node("node4", "172.20.0.4", "10.244.3.0/24")]);
        let err = super::plan("node1", Backend::HostGw, &far, &facts()).unwrap_err();
        assert!(
            err.to_string().contains("node node4 (172.20.0.4) is not on eth0"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_or_incomplete_node_cannot_be_planned() {
        assert!(plan("node9", Backend::HostGw, &cluster(), &facts()).is_err());
        let mut tiny = cluster();
        tiny.extend([node("node1", "192.168.10.11", "10.244.0.0/31")]);
        let err = plan("node1", Backend::HostGw, &tiny, &facts()).unwrap_err();
        assert!(err.to_string().contains("/30 or larger"), "{err}");
    }

    #[test]
    fn peers_whose_subnets_clash_are_left_out_and_named() {
        let mut state = cluster();
        state.extend([
            node("node4", "192.168.10.14", "10.244.1.0/25"),
            node("node5", "192.168.10.15", "10.244.0.0/24"),
            node("node6", "192.168.10.16", "192.168.10.0/24"),
            node("node7", "192.168.10.17", "10.244.7.9/24"),
        ]);
        let plan = plan("node1", Backend::DEFAULT_VXLAN, &state, &facts()).unwrap();
        let Overlay::Vxlan { peers, .. } = &plan.overlay else {
            panic!("vxlan")
        };
        let routed: Vec<String> = peers.iter().map(|peer| peer.pod_cidr.to_string()).collect();
        // node7's subnet is written with host bits: it is routed as its network.
        assert_eq!(routed, ["10.244.1.0/24", "10.244.2.0/24", "10.244.7.0/24"]);
        let skipped = plan.skipped_peers.join("\n");
        assert!(
            skipped.contains(
                "node node4: pod subnet 10.244.1.0/25 overlaps node node2's pod subnet 10.244.1.0/24"
            ),
            "{skipped}"
        );
        assert!(
            skipped.contains("node node5: pod subnet 10.244.0.0/24 overlaps this node's pod subnet"),
            "{skipped}"
        );
        assert!(
            skipped.contains("node node6: pod subnet 192.168.10.0/24 overlaps the underlay 192.168.10.0/24"),
            "{skipped}"
        );
    }

    #[test]
    fn a_dual_stack_node_is_planned_from_its_ipv4_address() {
        let mut state = cluster();
        let (_, mut dual) = node("node1", "192.168.10.11", "10.244.0.0/24");
        dual.status.as_mut().unwrap().addresses.as_mut().unwrap().insert(
            0,
            NodeAddress {
                type_: "InternalIP".into(),
                address: "fd00::11".into(),
            },
        );
        state.insert("node1".into(), dual);
        let plan = plan("node1", Backend::DEFAULT_VXLAN, &state, &facts()).unwrap();
        assert_eq!(plan.address.to_string(), "192.168.10.11");
    }
}
