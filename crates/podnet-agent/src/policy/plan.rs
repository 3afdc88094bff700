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

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
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
    /// Its IPv4 address, once it has one (hostNetwork pods have none of their own: `None`).
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
                Some((name, protocol_number(port.protocol.as_deref()), number))
            })
            .collect();
        let address = (!podnet_model::pod_host_network(pod))
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
struct Peer<'a> {
    block: Ipv4Net,
    pod: Option<&'a PodInfo>,
}

/// The plan of node `node`.
pub fn plan(node: &str, cluster: &Cluster<'_>) -> Plan {
    let mut plan = Plan::default();
    for policy in &cluster.policies {
        let (ingress, egress) = policy_types(&policy.spec);
        let selected: Vec<(&PodInfo, Ipv4Addr)> = cluster
            .pods
            .iter()
            .filter(|pod| pod.node.as_deref() == Some(node) && pod.namespace == policy.namespace)
            .filter(|pod| {
                policy
                    .spec
                    .pod_selector
                    .as_ref()
                    .is_none_or(|selector| selects(selector, Some(&pod.labels)))
            })
            .filter_map(|pod| Some((*pod, pod.address?)))
            .collect();
        if selected.is_empty() {
            continue;
        }
        if ingress {
            for (pod, address) in &selected {
                plan.ingress.isolated.insert(*address);
                for rule in policy.spec.ingress.iter().flatten() {
                    let peers = resolve_peers(rule.from.as_deref(), &policy.namespace, cluster);
                    allow(
                        &mut plan.ingress,
                        *address,
                        &peers,
                        rule.ports.as_deref(),
                        |name, protocol, _| pod.port_named(name, protocol),
                    );
                }
            }
        }
        if egress {
            for (_, address) in &selected {
                plan.egress.isolated.insert(*address);
                for rule in policy.spec.egress.iter().flatten() {
                    let peers = resolve_peers(rule.to.as_deref(), &policy.namespace, cluster);
                    allow(
                        &mut plan.egress,
                        *address,
                        &peers,
                        rule.ports.as_deref(),
                        |name, protocol, peer| peer.pod?.port_named(name, protocol),
                    );
                }
            }
        }
    }
    plan
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

/// Adds what one rule allows `local` with `peers` on `ports`; `named` finds a named port on
/// the destination (the local pod for ingress, the peer for egress).
fn allow(
    direction: &mut Direction,
    local: Ipv4Addr,
    peers: &[Peer<'_>],
    ports: Option<&[NetworkPolicyPort]>,
    named: impl Fn(&str, u8, &Peer<'_>) -> Option<u16>,
) {
    let ports = ports.unwrap_or_default();
    if ports.is_empty() {
        direction.any.extend(peers.iter().map(|peer| (local, peer.block)));
        return;
    }
    for port in ports {
        let protocol = protocol_number(port.protocol.as_deref());
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

/// `TCP`, `UDP`, `SCTP` (TCP when absent) as protocol numbers.
fn protocol_number(protocol: Option<&str>) -> u8 {
    match protocol {
        Some("UDP") => 17,
        Some("SCTP") => 132,
        _ => 6,
    }
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
