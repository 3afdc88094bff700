//! The proxy's nftables table, `ip podnet-proxy`: its sets and maps, its fixed chains, and the
//! small shared chains that pick an endpoint.
//!
//! Per packet, the path is a few lookups whatever the number of services:
//!
//! - `nat-prerouting`/`nat-output` → `services`: a destination (ClusterIP, load-balancer or
//!   external IP, with protocol and port) is looked up in the verdict map `service-ips`, a
//!   node port in `service-nodeports`; the verdict jumps to a chain that picks an endpoint.
//! - A pick chain for N endpoints (`cluster-N`, `local-N`, ...) draws `numgen random mod N`
//!   and looks the destination and the draw up in an endpoint map, which gives the DNAT
//!   target: `10.96.0.10 . tcp . 80 . 1 : 10.244.1.5 . 8080`. Services with the same number of
//!   endpoints share the chain; their elements differ.
//! - External traffic (node ports, load-balancer and external IPs) is marked for masquerading
//!   on its way (`external-N`), unless `externalTrafficPolicy: Local`, where it keeps its source
//!   and only reaches local endpoints (`external-local-C-L`: pods and the node itself still use
//!   all endpoints, as kube-proxy "short-circuits" them).
//! - `masquerading` (postrouting) masquerades marked connections, and hairpin ones (a pod
//!   reaching itself through its service, `hairpin` holds `ip . ip` of local endpoints).
//! - Filter chains reject new connections to services without endpoints (TCP reset, ICMP
//!   port unreachable) from the `no-endpoint-*` verdict maps, and drop them where the traffic
//!   policy leaves no endpoint; other ports of ClusterIPs are rejected too.
//! - Forwarded packets conntrack finds invalid (a reply outside the TCP window, say) are
//!   dropped, as kube-proxy drops them: they would go on with their NAT not reversed, and the
//!   client, seeing a stranger's packet, would reset its connection.
//!
//! Only the first packet of a connection sees the NAT chains; conntrack carries the rest, so
//! changing any of this never disturbs established connections.

use podnet_nft::registry::{SERVICE_MASQUERADE_MARK, priority};
use podnet_nft::{Chain, ChainType, Hook, Set};

/// Verdict map: destination address, protocol, port → the chain picking its endpoint.
pub const SERVICE_IPS: &str = "service-ips";
/// Verdict map: protocol and node port → the chain picking its endpoint.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Map: destination, protocol, port and draw → endpoint, for cluster-wide traffic.
pub const CLUSTER_ENDPOINTS: &str = "cluster-endpoints";
/// The same for node-local traffic.
pub const LOCAL_ENDPOINTS: &str = "local-endpoints";
/// Map: protocol, node port and draw → endpoint, for cluster-wide traffic.
pub const NODEPORT_CLUSTER_ENDPOINTS: &str = "nodeport-cluster-endpoints";
/// The same for node-local traffic.
pub const NODEPORT_LOCAL_ENDPOINTS: &str = "nodeport-local-endpoints";
/// Verdict map: services without endpoints → reject, or drop.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Verdict map: node ports without endpoints → reject, or drop.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Set: every ClusterIP.
pub const CLUSTER_IPS: &str = "cluster-ips";
/// Set: every node's pod subnet.
pub const POD_CIDRS: &str = "pod-cidrs";
/// Set: `ip . ip` of local endpoints, whose connections to themselves are masqueraded.
pub const HAIRPIN: &str = "hairpin";
/// The chain rejecting a new connection.
pub const REJECT: &str = "reject-chain";

/// How many endpoints the pick chains made at start cover; more make chains on demand.
pub const PRESET_PICKS: usize = 8;

/// The sets and maps.
pub fn sets() -> Vec<Set> {
    let address_port = "type ipv4_addr . inet_proto . inet_service";
    let draw = "typeof ip daddr . meta l4proto . th dport . numgen random mod 2";
    let nodeport_draw = "typeof meta l4proto . th dport . numgen random mod 2";
    let target = "ip daddr . th dport";
    vec![
        Set::map(SERVICE_IPS, address_port, "verdict"),
        Set::map(SERVICE_NODEPORTS, "type inet_proto . inet_service", "verdict"),
        Set::map(CLUSTER_ENDPOINTS, draw, target),
        Set::map(LOCAL_ENDPOINTS, draw, target),
        Set::map(NODEPORT_CLUSTER_ENDPOINTS, nodeport_draw, target),
        Set::map(NODEPORT_LOCAL_ENDPOINTS, nodeport_draw, target),
        Set::map(NO_ENDPOINT_SERVICES, address_port, "verdict"),
        Set::map(NO_ENDPOINT_NODEPORTS, "type inet_proto . inet_service", "verdict"),
        Set::new(CLUSTER_IPS, "type ipv4_addr"),
        Set::new(POD_CIDRS, "type ipv4_addr").interval(),
        Set::new(HAIRPIN, "type ipv4_addr . ipv4_addr"),
    ]
}

/// The chains that never change.
pub fn fixed_chains() -> Vec<Chain> {
    let mark = mark();
    let local_destination = "fib daddr type local ip daddr != 127.0.0.0/8";
    let check = vec!["ct state new jump endpoints-check".to_owned()];
    vec![
        Chain::base(
            "nat-prerouting",
            ChainType::Nat,
            Hook::Prerouting,
            priority::DSTNAT,
            vec!["jump services".into()],
        ),
        Chain::base(
            "nat-output",
            ChainType::Nat,
            Hook::Output,
            priority::DSTNAT,
            vec!["jump services".into()],
        ),
        Chain::base(
            "nat-postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
            vec!["jump masquerading".into()],
        ),
        Chain::regular(
            "services",
            vec![
                // Traffic to a ClusterIP from outside the pod network (the node itself, or routed
                // in) is masqueraded, so that replies come back the same way.
                format!("ip daddr @{CLUSTER_IPS} ip saddr != @{POD_CIDRS} meta mark set meta mark | {mark}"),
                format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
                format!("{local_destination} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
            ],
        ),
        Chain::regular(
            "masquerading",
            vec![
                format!("ct status dnat ip saddr . ip daddr @{HAIRPIN} masquerade"),
                format!("meta mark & {mark} == 0 return"),
                format!("meta mark set meta mark ^ {mark}"),
                "masquerade fully-random".into(),
            ],
        ),
        Chain::base(
            "filter-input",
            ChainType::Filter,
            Hook::Input,
            priority::FILTER - 10,
            check.clone(),
        ),
        Chain::base(
            "filter-forward",
            ChainType::Filter,
            Hook::Forward,
            priority::FILTER - 10,
            std::iter::once("ct state invalid drop".to_owned())
                .chain(check.clone())
                .collect(),
        ),
        Chain::base(
            "filter-output",
            ChainType::Filter,
            Hook::Output,
            priority::FILTER - 10,
            check,
        ),
        Chain::regular(
            "endpoints-check",
            vec![
                format!("ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
                format!("{local_destination} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"),
                format!("ip daddr @{CLUSTER_IPS} goto {REJECT}"),
            ],
        ),
        Chain::regular(
            REJECT,
            vec!["meta l4proto tcp reject with tcp reset".into(), "reject".into()],
        ),
    ]
}

/// The masquerade mark as nft writes it.
pub fn mark() -> String {
    format!("0x{SERVICE_MASQUERADE_MARK:x}")
}

/// Which endpoint map a pick chain draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pick {
    /// ClusterIP, load-balancer or external IP; all endpoints.
    Cluster,
    /// The same; this node's endpoints.
    Local,
    /// Node port; all endpoints.
    NodePortCluster,
    /// Node port; this node's endpoints.
    NodePortLocal,
}

impl Pick {
    fn prefix(self) -> &'static str {
        match self {
            Pick::Cluster => "cluster",
            Pick::Local => "local",
            Pick::NodePortCluster => "nodeport-cluster",
            Pick::NodePortLocal => "nodeport-local",
        }
    }

    /// The endpoint map.
    pub fn map(self) -> &'static str {
        match self {
            Pick::Cluster => CLUSTER_ENDPOINTS,
            Pick::Local => LOCAL_ENDPOINTS,
            Pick::NodePortCluster => NODEPORT_CLUSTER_ENDPOINTS,
            Pick::NodePortLocal => NODEPORT_LOCAL_ENDPOINTS,
        }
    }

    /// Whether the destination address is part of the key (not for node ports).
    pub fn keyed_by_address(self) -> bool {
        matches!(self, Pick::Cluster | Pick::Local)
    }
}

/// The shared chains service verdicts lead to, named by what they do and for how many
/// endpoints. Each has one definition; services with the same shape share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shared {
    /// Draws one of `n` endpoints from a map.
    Pick(Pick, usize),
    /// External traffic with `externalTrafficPolicy: Cluster`: marked for masquerading, then
    /// one of `n` endpoints (from the cluster or node-port cluster map).
    External {
        /// Node ports rather than addresses.
        node_port: bool,
        /// Cluster endpoints.
        n: usize,
    },
    /// External traffic with `externalTrafficPolicy: Local`: pods and the node itself reach
    /// all `cluster` endpoints (the node masqueraded), others the `local` ones, or nothing.
    ExternalLocal {
        /// Node ports rather than addresses.
        node_port: bool,
        /// Cluster endpoints.
        cluster: usize,
        /// Local endpoints (0: dropped).
        local: usize,
    },
}

impl Shared {
    /// The chain's name.
    pub fn name(self) -> String {
        match self {
            Shared::Pick(pick, n) => format!("{}-{n}", pick.prefix()),
            Shared::External { node_port: false, n } => format!("external-{n}"),
            Shared::External { node_port: true, n } => format!("nodeport-external-{n}"),
            Shared::ExternalLocal {
                node_port: false,
                cluster,
                local,
            } => format!("external-local-{cluster}-{local}"),
            Shared::ExternalLocal {
                node_port: true,
                cluster,
                local,
            } => {
                format!("nodeport-external-local-{cluster}-{local}")
            }
        }
    }

    /// The chain.
    pub fn chain(self) -> Chain {
        let rules = match self {
            Shared::Pick(pick, n) => {
                let key = if pick.keyed_by_address() {
                    "ip daddr . meta l4proto . th dport"
                } else {
                    "meta l4proto . th dport"
                };
                vec![format!(
                    "dnat ip to {key} . numgen random mod {n} map @{}",
                    pick.map()
                )]
            }
            Shared::External { node_port, n } => vec![
                format!("meta mark set meta mark | {}", mark()),
                format!("goto {}", Shared::Pick(cluster_pick(node_port), n).name()),
            ],
            Shared::ExternalLocal {
                node_port,
                cluster,
                local,
            } => {
                let all = Shared::Pick(cluster_pick(node_port), cluster).name();
                let mut rules = vec![
                    format!("ip saddr @{POD_CIDRS} goto {all}"),
                    format!("fib saddr type local meta mark set meta mark | {}", mark()),
                    format!("fib saddr type local goto {all}"),
                ];
                rules.push(if local == 0 {
                    "drop".to_owned()
                } else {
                    let pick = if node_port {
                        Pick::NodePortLocal
                    } else {
                        Pick::Local
                    };
                    format!("goto {}", Shared::Pick(pick, local).name())
                });
                rules
            }
        };
        Chain::regular(self.name(), rules)
    }

    /// The shared chains this one jumps to.
    pub fn needs(self) -> Vec<Shared> {
        match self {
            Shared::Pick(..) => Vec::new(),
            Shared::External { node_port, n } => vec![Shared::Pick(cluster_pick(node_port), n)],
            Shared::ExternalLocal {
                node_port,
                cluster,
                local,
            } => {
                let mut needs = vec![Shared::Pick(cluster_pick(node_port), cluster)];
                if local > 0 {
                    let pick = if node_port {
                        Pick::NodePortLocal
                    } else {
                        Pick::Local
                    };
                    needs.push(Shared::Pick(pick, local));
                }
                needs
            }
        }
    }

    /// The chains made when the table is created, so that common changes never need a new
    /// chain.
    pub fn preset() -> Vec<Shared> {
        let mut preset = Vec::new();
        for n in 1..=PRESET_PICKS {
            for pick in [
                Pick::Cluster,
                Pick::Local,
                Pick::NodePortCluster,
                Pick::NodePortLocal,
            ] {
                preset.push(Shared::Pick(pick, n));
            }
            preset.push(Shared::External { node_port: false, n });
            preset.push(Shared::External { node_port: true, n });
        }
        preset
    }
}

fn cluster_pick(node_port: bool) -> Pick {
    if node_port {
        Pick::NodePortCluster
    } else {
        Pick::Cluster
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_chains_draw_from_their_map() {
        let chain = Shared::Pick(Pick::Cluster, 3).chain();
        assert_eq!(chain.name, "cluster-3");
        assert_eq!(
            chain.rules,
            ["dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @cluster-endpoints"]
        );
        let nodeport = Shared::Pick(Pick::NodePortLocal, 1).chain();
        assert_eq!(
            nodeport.rules,
            ["dnat ip to meta l4proto . th dport . numgen random mod 1 map @nodeport-local-endpoints"]
        );
    }

    #[test]
    fn local_policy_short_circuits_pods_and_the_node_and_drops_without_local_endpoints() {
        let chain = Shared::ExternalLocal {
            node_port: false,
            cluster: 3,
            local: 0,
        }
        .chain();
        assert_eq!(chain.name, "external-local-3-0");
        assert_eq!(chain.rules[0], "ip saddr @pod-cidrs goto cluster-3");
        assert_eq!(chain.rules[2], "fib saddr type local goto cluster-3");
        assert_eq!(chain.rules.last().unwrap(), "drop");
        let external = Shared::External {
            node_port: true,
            n: 2,
        };
        assert_eq!(external.chain().rules[1], "goto nodeport-cluster-2");
        assert_eq!(external.needs(), [Shared::Pick(Pick::NodePortCluster, 2)]);
    }
}
