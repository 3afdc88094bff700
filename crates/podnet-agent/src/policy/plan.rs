//! From NetworkPolicies, Pods and Namespaces to what one node's kernel must know: which of its
//! pods are isolated in each direction, and the (pod, peer, protocol, ports) tuples allowed.
//!
//! The rules of `networking.k8s.io/v1`: a pod is isolated for ingress (egress) when some policy
//! in its namespace selects it and lists that direction in `policyTypes` (inferred when absent:
//! Ingress always, Egress when the policy has egress rules). Its allowed traffic is then the
//! union of the rules of every such policy: allows add up, nothing denies. A rule's peers are
//! pods (`podSelector` in the policy's namespace, `namespaceSelector` for pods of the selected
//! namespaces, both in one peer meaning both must hold) or address blocks (`ipBlock`, less its
//! `except`s); no peers means everyone. Its ports are protocol and port (a number, a range up to
//! `endPort`, or a container port's name, looked up on the destination pod); no ports means
//! every protocol and port. Only IPv4 is planned (the lab's pods are IPv4).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_model::protocol_number;
use podnet_model::selector::selects;

/// What the policy controller keeps of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its node.
    pub node: Option<String>,
    /// Its IPv4 address, once it has one and while it runs (hostNetwork pods have none of their
    /// own, finished pods none any more: `None`).
    pub address: Option<Ipv4Addr>,
    /// Its containers' named ports: (name, protocol number, port).
    pub named_ports: Vec<(String, u8, u16)>,
}

impl PodInfo {
    /// What matters of `pod`.
    pub fn of(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let named_ports = spec
            .into_iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|container| container.ports.iter().flatten())
            .filter_map(|port| {
                let name = port.name.clone()?;
                let number = u16::try_from(port.container_port).ok()?;
                Some((name, protocol_number(port.protocol.as_deref())?, number))
            })
            .collect();
        // A finished pod's address is no longer its own: IPAM may have handed it out again.
        let address = (!podnet_model::pod_host_network(pod) && !podnet_model::pod_finished(pod))
            .then(|| {
                podnet_model::pod_ips(pod).into_iter().find_map(|ip| match ip {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    std::net::IpAddr::V6(_) => None,
                })
            })
            .flatten();
        PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node: podnet_model::pod_node(pod).map(str::to_owned),
            address,
            named_ports,
        }
    }

    fn port_named(&self, name: &str, protocol: u8) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(port_name, port_protocol, _)| port_name == name && *port_protocol == protocol)
            .map(|(_, _, port)| *port)
    }
}

/// A policy: its namespace and spec.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInfo {
    /// Its namespace.
    pub namespace: String,
    /// Its spec.
    pub spec: NetworkPolicySpec,
}

/// The cluster as the planner reads it.
pub struct Cluster<'a> {
    /// Every pod.
    pub pods: Vec<&'a PodInfo>,
    /// Every namespace with its labels.
    pub namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// Every policy.
    pub policies: Vec<&'a PolicyInfo>,
}

/// One direction's part of the plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Direction {
    /// Local pods isolated in this direction.
    pub isolated: BTreeSet<Ipv4Addr>,
    /// (local pod, peer) pairs allowed every protocol and port.
    pub any: BTreeSet<(Ipv4Addr, Ipv4Net)>,
    /// (local pod, peer, protocol, first port, last port) allowed.
    pub ports: BTreeSet<(Ipv4Addr, Ipv4Net, u8, u16, u16)>,
}

/// What one node enforces.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Traffic to local pods.
    pub ingress: Direction,
    /// Traffic from local pods.
    pub egress: Direction,
}

/// A rule's peer as the planner resolves it: an address block, and the pod it is when it is
/// one (named ports of egress rules are looked up on it).
#[derive(Clone, Copy)]
struct Peer<'a> {
    block: Ipv4Net,
    pod: Option<&'a PodInfo>,
}

/// The plan of node `node`. Policies repeat selectors (a namespace's policies often select the
/// same pods and peers), so each distinct selector is resolved once per plan.
pub fn plan(node: &str, cluster: &Cluster<'_>) -> Plan {
    let mut plan = Plan::default();
    let mut selected_by: HashMap<(&str, String), Vec<(&PodInfo, Ipv4Addr)>> = HashMap::new();
    let mut peers_of: HashMap<(&str, String), Vec<Peer<'_>>> = HashMap::new();
    let mut peers = |peers: Option<&[NetworkPolicyPeer]>, namespace| {
        peers_of
            .entry((namespace, serde_json::to_string(&peers).unwrap_or_default()))
            .or_insert_with(|| resolve_peers(peers, namespace, cluster))
            .clone()
    };
    for policy in &cluster.policies {
        let (ingress, egress) = policy_types(&policy.spec);
        let namespace = policy.namespace.as_str();
        let key = (
            namespace,
            serde_json::to_string(&policy.spec.pod_selector).unwrap_or_default(),
        );
        let selected = selected_by.entry(key).or_insert_with(|| {
            cluster
                .pods
                .iter()
                .filter(|pod| pod.node.as_deref() == Some(node) && pod.namespace == namespace)
                .filter(|pod| {
                    policy
                        .spec
                        .pod_selector
                        .as_ref()
                        .is_none_or(|selector| selects(selector, Some(&pod.labels)))
                })
                .filter_map(|pod| Some((*pod, pod.address?)))
                .collect()
        });
        if selected.is_empty() {
            continue;
        }
        // (isolates, where its allows go, its rules as peers and ports, where named ports are)
        let ingress_rules = policy.spec.ingress.iter().flatten();
        let egress_rules = policy.spec.egress.iter().flatten();
        let directions = [
            (
                ingress,
                &mut plan.ingress,
                ingress_rules
                    .map(|rule| (rule.from.as_deref(), rule.ports.as_deref()))
                    .collect::<Vec<_>>(),
                NamedOn::Local,
            ),
            (
                egress,
                &mut plan.egress,
                egress_rules
                    .map(|rule| (rule.to.as_deref(), rule.ports.as_deref()))
                    .collect(),
                NamedOn::Peer,
            ),
        ];
        for (isolates, direction, rules, named_on) in directions {
            if !isolates {
                continue;
            }
            direction
                .isolated
                .extend(selected.iter().map(|(_, address)| *address));
            for (rule_peers, ports) in rules {
                let peers = peers(rule_peers, namespace);
                for (pod, address) in selected.iter() {
                    allow(direction, (pod, *address), &peers, ports, named_on);
                }
            }
        }
    }
    plan.ingress.make_disjoint();
    plan.egress.make_disjoint();
    plan
}

impl Direction {
    /// Rewrites the allowed tuples so that no two of a set overlap, allowing exactly what they
    /// allowed: the kernel refuses an element of a concatenated interval set that overlaps
    /// another, and rules of different policies often do (a namespace's pods inside an
    /// `ipBlock`, one port inside another's range). Prefixes either nest or are disjoint, so the
    /// blocks of one pod cut into regions each inside the same blocks, and each region gets the
    /// union of their port ranges.
    fn make_disjoint(&mut self) {
        // Inside a block every protocol and port passes already: drop what it contains.
        let any = self.any.clone();
        self.any.retain(|(pod, block)| {
            !any.iter()
                .any(|(other_pod, other)| other_pod == pod && other != block && other.contains(block))
        });
        let mut by_pod_protocol: BTreeMap<(Ipv4Addr, u8), Vec<BlockPorts>> = BTreeMap::new();
        for (pod, block, protocol, first, last) in std::mem::take(&mut self.ports) {
            by_pod_protocol
                .entry((pod, protocol))
                .or_default()
                .push((block, first, last));
        }
        for ((pod, protocol), rules) in by_pod_protocol {
            let blocks: BTreeSet<Ipv4Net> = rules.iter().map(|(block, ..)| *block).collect();
            for block in &blocks {
                let inner: Vec<Ipv4Net> = blocks
                    .iter()
                    .filter(|other| *other != block && block.contains(*other))
                    .copied()
                    .collect();
                let ranges = merge_ranges(
                    rules
                        .iter()
                        .filter(|(outer, ..)| outer.contains(block))
                        .map(|(_, first, last)| (*first, *last)),
                );
                for region in subtract(*block, &inner) {
                    for (first, last) in &ranges {
                        self.ports.insert((pod, region, protocol, *first, *last));
                    }
                }
            }
        }
    }
}

/// A block and an inclusive range of ports.
type BlockPorts = (Ipv4Net, u16, u16);

/// The union of inclusive ranges, as the fewest disjoint ones (adjacent ranges joined).
fn merge_ranges(ranges: impl Iterator<Item = (u16, u16)>) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = ranges.collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (first, last) in ranges {
        match merged.last_mut() {
            Some((_, previous)) if u32::from(first) <= u32::from(*previous) + 1 => {
                *previous = (*previous).max(last)
            }
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// The directions a policy isolates: `policyTypes`, or as the API infers them.
fn policy_types(spec: &NetworkPolicySpec) -> (bool, bool) {
    match &spec.policy_types {
        Some(types) if !types.is_empty() => (
            types.iter().any(|kind| kind == "Ingress"),
            types.iter().any(|kind| kind == "Egress"),
        ),
        _ => (true, spec.egress.is_some()),
    }
}

/// Where a named port is looked up: on the destination, which is the local pod for ingress
/// and the peer for egress.
#[derive(Clone, Copy)]
enum NamedOn {
    Local,
    Peer,
}

/// Adds what one rule allows the local pod (at `local`'s address) with `peers` on `ports`.
fn allow(
    direction: &mut Direction,
    (pod, local): (&PodInfo, Ipv4Addr),
    peers: &[Peer<'_>],
    ports: Option<&[NetworkPolicyPort]>,
    named_on: NamedOn,
) {
    let named = |name: &str, protocol: u8, peer: &Peer<'_>| match named_on {
        NamedOn::Local => pod.port_named(name, protocol),
        NamedOn::Peer => peer.pod?.port_named(name, protocol),
    };
    let ports = ports.unwrap_or_default();
    if ports.is_empty() {
        direction.any.extend(peers.iter().map(|peer| (local, peer.block)));
        return;
    }
    for port in ports {
        // Validation refuses other protocols; a port of none selects nothing.
        let Some(protocol) = protocol_number(port.protocol.as_deref()) else {
            continue;
        };
        for peer in peers {
            let range = match &port.port {
                None => Some((0, u16::MAX)),
                Some(IntOrString::Int(first)) => {
                    let first = u16::try_from(*first).unwrap_or(0);
                    let last = port
                        .end_port
                        .and_then(|last| u16::try_from(last).ok())
                        .unwrap_or(first);
                    Some((first, last))
                }
                // A destination without that port name is no match (an address block never has one).
                Some(IntOrString::String(name)) => named(name, protocol, peer).map(|port| (port, port)),
            };
            if let Some((first, last)) = range {
                direction.ports.insert((local, peer.block, protocol, first, last));
            }
        }
    }
}

/// The peers of a rule in a policy of `namespace`: everyone when the rule names none.
fn resolve_peers<'a>(
    peers: Option<&[NetworkPolicyPeer]>,
    namespace: &str,
    cluster: &Cluster<'a>,
) -> Vec<Peer<'a>> {
    let peers = peers.unwrap_or_default();
    if peers.is_empty() {
        return vec![Peer {
            block: Ipv4Net::default(),
            pod: None,
        }];
    }
    let mut resolved = Vec::new();
    for peer in peers {
        if let Some(block) = &peer.ip_block {
            let Ok(cidr) = block.cidr.parse::<Ipv4Net>() else {
                continue; // IPv6 (validated elsewhere): nothing of it is planned.
            };
            let excepts: Vec<Ipv4Net> = block
                .except
                .iter()
                .flatten()
                .filter_map(|except| except.parse().ok())
                .collect();
            resolved.extend(
                subtract(cidr.trunc(), &excepts)
                    .into_iter()
                    .map(|block| Peer { block, pod: None }),
            );
            continue;
        }
        let in_namespace = |pod: &PodInfo| match &peer.namespace_selector {
            Some(selector) => selects(selector, cluster.namespaces.get(&pod.namespace)),
            None => pod.namespace == namespace,
        };
        for pod in &cluster.pods {
            let selected = in_namespace(pod)
                && peer
                    .pod_selector
                    .as_ref()
                    .is_none_or(|selector| selects(selector, Some(&pod.labels)));
            if let (true, Some(address)) = (selected, pod.address) {
                resolved.push(Peer {
                    block: Ipv4Net::from(address),
                    pod: Some(pod),
                });
            }
        }
    }
    resolved
}

/// `block` less every block of `excepts`, as the fewest prefixes.
pub fn subtract(block: Ipv4Net, excepts: &[Ipv4Net]) -> Vec<Ipv4Net> {
    if excepts.iter().any(|except| except.contains(&block)) {
        return Vec::new();
    }
    if !excepts.iter().any(|except| block.contains(except)) {
        return vec![block];
    }
    // Some except lies strictly inside: split in halves and look again.
    block
        .subnets(block.prefix_len() + 1)
        .map(|halves| halves.flat_map(|half| subtract(half, excepts)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;

    fn pod(namespace: &str, name: &str, node: &str, address: &str) -> PodInfo {
        PodInfo {
            namespace: namespace.into(),
            labels: BTreeMap::from([("pod".to_owned(), name.to_owned())]),
            node: Some(node.into()),
            address: Some(address.parse().unwrap()),
            named_ports: vec![("serve-80-tcp".into(), 6, 80)],
        }
    }

    #[test]
    fn a_finished_pod_has_no_address_any_more() {
        let with_phase = |phase: &str| Pod {
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(phase.into()),
                pod_ip: Some("10.0.0.7".into()),
                ..Default::default()
            }),
            ..Pod::default()
        };
        assert_eq!(
            PodInfo::of(&with_phase("Running")).address,
            Some(Ipv4Addr::new(10, 0, 0, 7))
        );
        for phase in ["Succeeded", "Failed"] {
            assert_eq!(PodInfo::of(&with_phase(phase)).address, None, "{phase}");
        }
    }

    fn selector(key: &str, value: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            ..LabelSelector::default()
        }
    }

    fn port(protocol: &str, port: Option<IntOrString>, end_port: Option<i32>) -> NetworkPolicyPort {
        NetworkPolicyPort {
            protocol: Some(protocol.into()),
            port,
            end_port,
        }
    }

    struct World {
        pods: Vec<PodInfo>,
        namespaces: BTreeMap<String, BTreeMap<String, String>>,
    }

    impl World {
        /// Namespaces x and y, pods a (node1) and b (node2) in each.
        fn new() -> Self {
            let namespaces = ["x", "y"]
                .into_iter()
                .map(|ns| {
                    let labels = BTreeMap::from([("ns".to_owned(), ns.to_owned())]);
                    (ns.to_owned(), labels)
                })
                .collect();
            World {
                pods: vec![
                    pod("x", "a", "node1", "10.0.1.1"),
                    pod("x", "b", "node2", "10.0.2.1"),
                    pod("y", "a", "node1", "10.0.1.2"),
                    pod("y", "b", "node2", "10.0.2.2"),
                ],
                namespaces,
            }
        }

        fn plan(&self, node: &str, policies: &[PolicyInfo]) -> Plan {
            plan(
                node,
                &Cluster {
                    pods: self.pods.iter().collect(),
                    namespaces: &self.namespaces,
                    policies: policies.iter().collect(),
                },
            )
        }
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn deny_all_isolates_selected_local_pods_and_allows_nothing() {
        let world = World::new();
        let deny = PolicyInfo {
            namespace: "x".into(),
            spec: NetworkPolicySpec {
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ..NetworkPolicySpec::default()
            },
        };
        let node1 = world.plan("node1", std::slice::from_ref(&deny));
        assert_eq!(node1.ingress.isolated, BTreeSet::from([ip("10.0.1.1")]));
        assert_eq!(node1.egress.isolated, BTreeSet::from([ip("10.0.1.1")]));
        assert!(node1.ingress.any.is_empty() && node1.ingress.ports.is_empty());
        // Inferred types: ingress only, unless there are egress rules.
        let inferred = PolicyInfo {
            namespace: "x".into(),
            spec: NetworkPolicySpec::default(),
        };
        let plan = world.plan("node1", std::slice::from_ref(&inferred));
        assert!(plan.egress.isolated.is_empty());
        assert_eq!(plan.ingress.isolated.len(), 1);
    }

    #[test]
    fn peers_combine_pod_and_namespace_selectors_as_the_api_says() {
        let world = World::new();
        let rule = |from: Vec<NetworkPolicyPeer>| PolicyInfo {
            namespace: "x".into(),
            spec: NetworkPolicySpec {
                pod_selector: Some(selector("pod", "a")),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(from),
                    ports: None,
                }]),
                ..NetworkPolicySpec::default()
            },
        };
        let peers = |policy: PolicyInfo| -> BTreeSet<Ipv4Net> {
            world
                .plan("node1", &[policy])
                .ingress
                .any
                .into_iter()
                .map(|(_, peer)| peer)
                .collect()
        };
        // podSelector alone: the policy's namespace.
        let same_namespace = rule(vec![NetworkPolicyPeer {
            pod_selector: Some(selector("pod", "b")),
            ..NetworkPolicyPeer::default()
        }]);
        assert_eq!(peers(same_namespace), BTreeSet::from([net("10.0.2.1/32")]));
        // namespaceSelector alone: every pod there.
        let namespace = rule(vec![NetworkPolicyPeer {
            namespace_selector: Some(selector("ns", "y")),
            ..NetworkPolicyPeer::default()
        }]);
        assert_eq!(
            peers(namespace),
            BTreeSet::from([net("10.0.1.2/32"), net("10.0.2.2/32")])
        );
        // Both in one peer: AND.
        let both = rule(vec![NetworkPolicyPeer {
            namespace_selector: Some(selector("ns", "y")),
            pod_selector: Some(selector("pod", "b")),
            ..NetworkPolicyPeer::default()
        }]);
        assert_eq!(peers(both), BTreeSet::from([net("10.0.2.2/32")]));
        // An empty namespaceSelector: all namespaces.
        let all = rule(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]);
        assert_eq!(peers(all).len(), 4);
        // No peers at all: everyone.
        let open = PolicyInfo {
            namespace: "x".into(),
            spec: NetworkPolicySpec {
                ingress: Some(vec![NetworkPolicyIngressRule::default()]),
                ..NetworkPolicySpec::default()
            },
        };
        assert_eq!(peers(open), BTreeSet::from([Ipv4Net::default()]));
    }

    #[test]
    fn ip_blocks_leave_out_their_excepts() {
        assert_eq!(
            subtract(net("10.0.0.0/16"), &[net("10.0.1.0/24")]).len(),
            8,
            "/17 /18 ... /23 and the other /24"
        );
        let left = subtract(net("10.0.0.0/30"), &[net("10.0.0.1/32")]);
        assert_eq!(left, [net("10.0.0.0/32"), net("10.0.0.2/31")]);
        assert!(subtract(net("10.0.0.0/24"), &[net("10.0.0.0/16")]).is_empty());
        assert_eq!(
            subtract(net("10.0.0.0/24"), &[net("10.1.0.0/16")]),
            [net("10.0.0.0/24")]
        );

        let world = World::new();
        let policy = PolicyInfo {
            namespace: "x".into(),
            spec: NetworkPolicySpec {
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: "10.0.2.0/24".into(),
                            except: Some(vec!["10.0.2.2/32".into()]),
                        }),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![port("TCP", Some(IntOrString::Int(80)), Some(90))]),
                }]),
                ..NetworkPolicySpec::default()
            },
        };
        let plan = world.plan("node1", &[policy]);
        assert!(plan.egress.isolated.contains(&ip("10.0.1.1")));
        assert!(
            plan.egress
                .ports
                .contains(&(ip("10.0.1.1"), net("10.0.2.0/31"), 6, 80, 90))
        );
        assert!(
            !plan
                .egress
                .ports
                .iter()
                .any(|(_, peer, ..)| peer.contains(&ip("10.0.2.2")))
        );
    }

    #[test]
    fn overlapping_rules_become_disjoint_elements_allowing_the_same() {
        let pod = ip("10.0.1.1");
        let mut direction = Direction::default();
        direction.any.extend([
            (pod, net("10.0.0.0/8")),
            (pod, net("10.0.2.0/24")),
            (pod, net("192.0.2.0/24")),
        ]);
        direction.ports.extend([
            (pod, Ipv4Net::default(), 6, 80, 80),
            (pod, net("10.0.2.1/32"), 6, 80, 90),
            (pod, net("10.0.2.1/32"), 6, 91, 100),
            (pod, net("10.0.2.1/32"), 17, 53, 53),
        ]);
        let before = direction.clone();
        direction.make_disjoint();
        assert_eq!(
            direction.any,
            BTreeSet::from([(pod, net("10.0.0.0/8")), (pod, net("192.0.2.0/24"))])
        );
        // No two elements of one protocol overlap...
        let ports: Vec<_> = direction.ports.iter().collect();
        for (i, a) in ports.iter().enumerate() {
            for b in &ports[i + 1..] {
                let blocks = a.1.contains(&b.1) || b.1.contains(&a.1);
                let ranges = a.3 <= b.4 && b.3 <= a.4;
                assert!(!(a.2 == b.2 && blocks && ranges), "{a:?} overlaps {b:?}");
            }
        }
        // ...and every address, protocol and port is allowed as before.
        let allowed = |direction: &Direction, peer: Ipv4Addr, protocol: u8, port: u16| {
            direction.ports.iter().any(|(_, block, p, first, last)| {
                block.contains(&peer) && *p == protocol && (*first..=*last).contains(&port)
            })
        };
        for peer in ["10.0.2.1", "10.0.2.2", "8.8.8.8"].map(ip) {
            for (protocol, port) in [(6, 79), (6, 80), (6, 85), (6, 95), (6, 101), (17, 53), (17, 80)] {
                assert_eq!(
                    allowed(&direction, peer, protocol, port),
                    allowed(&before, peer, protocol, port),
                    "{peer} {protocol} {port}"
                );
            }
        }
        assert_eq!(
            merge_ranges([(80, 90), (91, 100), (5, 6)].into_iter()),
            [(5, 6), (80, 100)]
        );
    }

    #[test]
    fn named_ports_are_looked_up_on_the_destination() {
        let mut world = World::new();
        world.pods[1].named_ports = vec![("web".into(), 6, 8080)];
        let named = |name: &str| Some(IntOrString::String(name.into()));
        let policy = PolicyInfo {
            namespace: "x".into(),
            spec: NetworkPolicySpec {
                pod_selector: Some(selector("pod", "a")),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![
                        port("TCP", named("serve-80-tcp"), None),
                        port("UDP", named("serve-80-tcp"), None),
                    ]),
                }]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector::default()),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![port("TCP", named("web"), None), port("SCTP", None, None)]),
                }]),
            },
        };
        let plan = world.plan("node1", &[policy]);
        // Ingress: the local pod's own port of that name and protocol (no UDP one).
        assert_eq!(
            plan.ingress.ports,
            BTreeSet::from([(ip("10.0.1.1"), Ipv4Net::default(), 6, 80, 80)])
        );
        // Egress: only the peer that has the name; a protocol alone allows all its ports.
        assert!(
            plan.egress
                .ports
                .contains(&(ip("10.0.1.1"), net("10.0.2.1/32"), 6, 8080, 8080))
        );
        assert!(
            !plan
                .egress
                .ports
                .iter()
                .any(|entry| entry.2 == 6 && entry.1 == net("10.0.1.1/32"))
        );
        assert!(
            plan.egress
                .ports
                .contains(&(ip("10.0.1.1"), net("10.0.2.1/32"), 132, 0, u16::MAX))
        );
    }
}
