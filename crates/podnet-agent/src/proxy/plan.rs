//! What one service asks of the proxy's table: a pure function of the service, its
//! EndpointSlices and the node, unit-tested without a kernel.
//!
//! Each service port contributes verdict-map entries at its entry points (ClusterIP, external
//! and load-balancer IPs, node port), endpoint-map entries for the pick chains, and
//! `no-endpoint` entries when there is nothing to reach. A service with `sessionAffinity:
//! ClientIP` gets chains of its own instead: one per endpoint, remembering each client's
//! endpoint in a set that forgets it after the timeout, as kube-proxy's do.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use podnet_model::ObjectKey;
use podnet_model::stable_hash::fnv1a;
use podnet_nft::{Chain, Datum, Element, Set, Verdict};

use super::model::{PortEndpoints, PortInfo, ServiceInfo, SliceInfo, Target, port_endpoints};
use super::table::{
    CLUSTER_IPS, HAIRPIN, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, POD_CIDRS, Pick, REJECT, SERVICE_IPS,
    SERVICE_NODEPORTS, Shared, mark,
};

/// Everything one service contributes to the table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServicePlan {
    /// Elements, with their set.
    pub elements: Vec<(&'static str, Element)>,
    /// Shared chains its verdicts lead to.
    pub shared: BTreeSet<Shared>,
    /// Chains of its own (session affinity).
    pub chains: Vec<Chain>,
    /// Sets of its own (session affinity).
    pub sets: Vec<Set>,
    /// Its ports as programmed.
    pub ports: Vec<PlannedPort>,
    /// The health-check node port, with the number of ready local endpoints (terminating ones
    /// do not count: a load balancer must stop sending new traffic to a draining node).
    pub health_check: Option<(u16, usize)>,
    /// Load-balancer addresses to announce, with the nodes that may announce them (`None`:
    /// any node).
    pub announce: Vec<(Ipv4Addr, Option<BTreeSet<Box<str>>>)>,
}

/// A service port as programmed: where traffic arrives, where it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPort {
    /// The IP protocol.
    pub protocol: u8,
    /// Destination addresses with the service port (ClusterIP, external and LB IPs).
    pub addresses: Vec<Ipv4Addr>,
    /// The service port.
    pub port: u16,
    /// The node port.
    pub node_port: Option<u16>,
    /// Every endpoint traffic may be sent to, sorted.
    pub targets: Vec<Target>,
}

/// Plans service `key` for node `node`.
pub fn plan_service(
    key: &ObjectKey,
    service: &ServiceInfo,
    slices: &[&SliceInfo],
    node: &str,
) -> ServicePlan {
    let mut plan = ServicePlan::default();
    let Some(cluster_ip) = service.cluster_ip else {
        return plan; // headless or ExternalName: DNS only
    };
    plan.elements
        .push((CLUSTER_IPS, Element::key([Datum::Ipv4(cluster_ip)])));
    let mut hairpin = BTreeSet::new();
    let mut ready_here = BTreeSet::new();
    let mut endpoint_nodes: BTreeSet<Box<str>> = BTreeSet::new();
    for endpoint in slices
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .filter(|endpoint| endpoint.ready)
    {
        if endpoint.node.as_deref() == Some(node) {
            ready_here.insert(endpoint.address);
        }
        endpoint_nodes.extend(endpoint.node.clone());
    }
    for port in &service.ports {
        let endpoints = port_endpoints(port, slices.iter().copied(), node);
        hairpin.extend(endpoints.here.iter().copied());
        let affinity = service
            .affinity
            .map(|seconds| Affinity::new(key, port, Duration::from_secs(u64::from(seconds))));
        plan_port(
            &mut plan,
            cluster_ip,
            service,
            port,
            &endpoints,
            affinity.as_ref(),
        );
    }
    for address in hairpin {
        plan.elements.push((
            HAIRPIN,
            Element::key([Datum::Ipv4(address), Datum::Ipv4(address)]),
        ));
    }
    plan.health_check = service
        .health_check_node_port
        .filter(|_| service.external_local)
        .map(|port| (port, ready_here.len()));
    plan.announce = service
        .load_balancer_ips
        .iter()
        .map(|ip| (*ip, service.external_local.then(|| endpoint_nodes.clone())))
        .collect();
    plan
}

fn plan_port(
    plan: &mut ServicePlan,
    cluster_ip: Ipv4Addr,
    service: &ServiceInfo,
    port: &PortInfo,
    endpoints: &PortEndpoints,
    affinity: Option<&Affinity>,
) {
    let protocol = Datum::Protocol(port.protocol);
    let (cluster, local) = (&endpoints.cluster, &endpoints.local);
    let mut targets: Vec<Target> = cluster.iter().chain(local).copied().collect();
    targets.sort();
    targets.dedup();
    plan.ports.push(PlannedPort {
        protocol: port.protocol,
        addresses: std::iter::once(cluster_ip)
            .chain(service.external_ips.iter().copied())
            .collect(),
        port: port.port,
        node_port: port.node_port,
        targets,
    });
    let address_key = |address: Ipv4Addr| [Datum::Ipv4(address), protocol, Datum::Port(port.port)];
    let reject = Verdict::Goto(REJECT.into());
    if let Some(affinity) = affinity {
        plan.chains
            .extend(affinity.chains(cluster, local, service.external_local));
        plan.sets.extend(affinity.sets(cluster, local));
    }

    // ClusterIP: cluster-wide endpoints, or this node's with internalTrafficPolicy: Local.
    let (internal, internal_pick) = if service.internal_local {
        (local, Pick::Local)
    } else {
        (cluster, Pick::Cluster)
    };
    if internal.is_empty() {
        // No endpoint at all: refused. Endpoints elsewhere only (Local policy): dropped.
        let verdict = if cluster.is_empty() {
            reject.clone()
        } else {
            Verdict::Drop
        };
        plan.elements.push((
            NO_ENDPOINT_SERVICES,
            Element::verdict(address_key(cluster_ip), verdict),
        ));
    } else {
        let verdict = match affinity {
            Some(affinity) => Verdict::Goto(affinity.pick_chain(service.internal_local)),
            None => {
                endpoint_elements(plan, internal_pick, &address_key(cluster_ip), internal);
                shared(plan, Shared::Pick(internal_pick, internal.len()))
            }
        };
        plan.elements
            .push((SERVICE_IPS, Element::verdict(address_key(cluster_ip), verdict)));
    }

    // External traffic: external and load-balancer IPs, node ports.
    let entries = service
        .external_ips
        .iter()
        .map(|ip| (false, address_key(*ip).to_vec()))
        .chain(
            port.node_port
                .map(|node_port| (true, vec![protocol, Datum::Port(node_port)])),
        );
    for (node_port, entry) in entries {
        if cluster.is_empty() {
            let (map, verdict) = if node_port {
                (NO_ENDPOINT_NODEPORTS, reject.clone())
            } else {
                (NO_ENDPOINT_SERVICES, reject.clone())
            };
            plan.elements.push((map, Element::verdict(entry, verdict)));
            continue;
        }
        let verdict = match affinity {
            Some(affinity) => Verdict::Goto(affinity.external_chain(service.external_local)),
            None if !service.external_local => {
                let pick = if node_port {
                    Pick::NodePortCluster
                } else {
                    Pick::Cluster
                };
                endpoint_elements(plan, pick, &entry, cluster);
                shared(
                    plan,
                    Shared::External {
                        node_port,
                        n: cluster.len(),
                    },
                )
            }
            None => {
                let (all, here) = if node_port {
                    (Pick::NodePortCluster, Pick::NodePortLocal)
                } else {
                    (Pick::Cluster, Pick::Local)
                };
                endpoint_elements(plan, all, &entry, cluster);
                endpoint_elements(plan, here, &entry, local);
                shared(
                    plan,
                    Shared::ExternalLocal {
                        node_port,
                        cluster: cluster.len(),
                        local: local.len(),
                    },
                )
            }
        };
        let map = if node_port { SERVICE_NODEPORTS } else { SERVICE_IPS };
        plan.elements.push((map, Element::verdict(entry, verdict)));
    }
}

/// Records that the plan uses `chain` (and what it leads to); its verdict.
fn shared(plan: &mut ServicePlan, chain: Shared) -> Verdict {
    plan.shared.extend(chain.needs());
    plan.shared.insert(chain);
    Verdict::Goto(chain.name())
}

/// One endpoint-map element per draw: `KEY . n : endpoint`.
fn endpoint_elements(plan: &mut ServicePlan, pick: Pick, key: &[Datum], targets: &[Target]) {
    for (draw, target) in targets.iter().enumerate() {
        let mut element_key = key.to_vec();
        element_key.push(Datum::Number(draw as u32));
        plan.elements.push((
            pick.map(),
            Element::mapping(
                element_key,
                [Datum::Ipv4(target.address), Datum::Port(target.port)],
            ),
        ));
    }
}

/// The chains and sets of a service port with `sessionAffinity: ClientIP`.
struct Affinity {
    id: String,
    timeout: Duration,
    /// The port's protocol, which DNAT to a port needs matched first.
    protocol: &'static str,
}

impl Affinity {
    fn new(key: &ObjectKey, port: &PortInfo, timeout: Duration) -> Self {
        let id = format!(
            "{:010x}",
            fnv1a(format!("{key}/{}/{}/{}", port.name, port.protocol, port.port).as_bytes()) & 0xff_ffff_ffff
        );
        let protocol = match port.protocol {
            super::model::UDP => "udp",
            super::model::SCTP => "sctp",
            _ => "tcp",
        };
        Affinity {
            id,
            timeout,
            protocol,
        }
    }

    /// The chain picking among all (or this node's) endpoints.
    fn pick_chain(&self, local: bool) -> String {
        format!("affinity-{}-{}", self.id, if local { "local" } else { "cluster" })
    }

    /// The chain external traffic enters.
    fn external_chain(&self, local_policy: bool) -> String {
        format!(
            "affinity-{}-external{}",
            self.id,
            if local_policy { "-local" } else { "" }
        )
    }

    /// The chain of one endpoint.
    fn endpoint(&self, target: &Target) -> String {
        format!(
            "affinity-{}-{:08x}",
            self.id,
            fnv1a(format!("{}:{}", target.address, target.port).as_bytes()) as u32
        )
    }

    /// The set of one endpoint: clients that reached it lately. Its name carries the timeout,
    /// which a set cannot change in place: a new timeout makes a new set.
    fn clients(&self, target: &Target) -> String {
        format!("{}-{}s", self.endpoint(target), self.timeout.as_secs())
    }

    fn sets(&self, cluster: &[Target], local: &[Target]) -> Vec<Set> {
        let targets: BTreeSet<&Target> = cluster.iter().chain(local).collect();
        targets
            .into_iter()
            .map(|target| {
                Set::new(self.clients(target), "type ipv4_addr")
                    .dynamic(self.timeout)
                    .comment(format!("clients of {}:{}", target.address, target.port))
            })
            .collect()
    }

    fn chains(&self, cluster: &[Target], local: &[Target], local_policy: bool) -> Vec<Chain> {
        let targets: BTreeSet<&Target> = cluster.iter().chain(local).collect();
        let mut chains: Vec<Chain> = targets
            .iter()
            .map(|target| {
                Chain::regular(
                    self.endpoint(target),
                    vec![
                        format!("update @{} {{ ip saddr }}", self.clients(target)),
                        format!(
                            "meta l4proto {} dnat ip to {}:{}",
                            self.protocol, target.address, target.port
                        ),
                    ],
                )
            })
            .collect();
        for (is_local, list) in [(false, cluster), (true, local)] {
            if list.is_empty() {
                continue;
            }
            let mut rules: Vec<String> = list
                .iter()
                .map(|target| {
                    format!(
                        "ip saddr @{} meta l4proto {} dnat ip to {}:{}",
                        self.clients(target),
                        self.protocol,
                        target.address,
                        target.port
                    )
                })
                .collect();
            let draws: Vec<String> = list
                .iter()
                .enumerate()
                .map(|(draw, target)| format!("{draw} : goto {}", self.endpoint(target)))
                .collect();
            rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                list.len(),
                draws.join(", ")
            ));
            chains.push(Chain::regular(self.pick_chain(is_local), rules));
        }
        let all = self.pick_chain(false);
        let external = if local_policy {
            vec![
                format!("ip saddr @{POD_CIDRS} goto {all}"),
                format!("fib saddr type local meta mark set meta mark | {}", mark()),
                format!("fib saddr type local goto {all}"),
                if local.is_empty() {
                    "drop".to_owned()
                } else {
                    format!("goto {}", self.pick_chain(true))
                },
            ]
        } else {
            vec![
                format!("meta mark set meta mark | {}", mark()),
                format!("goto {all}"),
            ]
        };
        if !cluster.is_empty() {
            chains.push(Chain::regular(self.external_chain(local_policy), external));
        }
        chains
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{EndpointInfo, TCP, UDP};

    fn key() -> ObjectKey {
        ObjectKey {
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    fn service() -> ServiceInfo {
        ServiceInfo {
            cluster_ip: Some([10, 96, 0, 10].into()),
            ports: vec![PortInfo {
                name: "".into(),
                protocol: TCP,
                port: 80,
                node_port: None,
            }],
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            external_local: false,
            internal_local: false,
            affinity: None,
            health_check_node_port: None,
        }
    }

    fn slice(endpoints: &[([u8; 4], &str, bool)]) -> SliceInfo {
        SliceInfo {
            service: key(),
            ports: vec![("".into(), TCP, 8080)],
            endpoints: endpoints
                .iter()
                .map(|(address, node, ready)| EndpointInfo {
                    address: (*address).into(),
                    ready: *ready,
                    serving: *ready,
                    terminating: false,
                    node: Some((*node).into()),
                })
                .collect(),
        }
    }

    fn texts(plan: &ServicePlan) -> Vec<String> {
        let mut texts: Vec<String> = plan
            .elements
            .iter()
            .map(|(set, element)| format!("{set}: {}", element.text()))
            .collect();
        texts.sort();
        texts
    }

    #[test]
    fn a_cluster_ip_draws_among_its_ready_endpoints() {
        let slices = [slice(&[
            ([10, 244, 1, 5], "n2", true),
            ([10, 244, 0, 7], "n1", true),
        ])];
        let plan = plan_service(&key(), &service(), &slices.iter().collect::<Vec<_>>(), "n1");
        assert_eq!(
            texts(&plan),
            [
                "cluster-endpoints: 10.96.0.10 . tcp . 80 . 0 : 10.244.0.7 . 8080",
                "cluster-endpoints: 10.96.0.10 . tcp . 80 . 1 : 10.244.1.5 . 8080",
                "cluster-ips: 10.96.0.10",
                "hairpin: 10.244.0.7 . 10.244.0.7",
                "service-ips: 10.96.0.10 . tcp . 80 : goto cluster-2",
            ]
        );
        assert_eq!(plan.shared, BTreeSet::from([Shared::Pick(Pick::Cluster, 2)]));
    }

    #[test]
    fn without_endpoints_a_service_is_refused_and_headless_ones_get_nothing() {
        let plan = plan_service(&key(), &service(), &[], "n1");
        assert_eq!(
            texts(&plan),
            [
                "cluster-ips: 10.96.0.10",
                "no-endpoint-services: 10.96.0.10 . tcp . 80 : goto reject-chain",
            ]
        );
        let headless = ServiceInfo {
            cluster_ip: None,
            ..service()
        };
        assert_eq!(plan_service(&key(), &headless, &[], "n1"), ServicePlan::default());
    }

    #[test]
    fn node_ports_and_local_policies() {
        let mut nodeport = service();
        nodeport.ports[0].node_port = Some(31000);
        nodeport.ports[0].protocol = UDP;
        nodeport.external_local = true;
        nodeport.internal_local = true;
        let mut udp = slice(&[([10, 244, 1, 5], "n2", true)]);
        udp.ports[0].1 = UDP;
        let plan = plan_service(&key(), &nodeport, &[&udp], "n1");
        let texts = texts(&plan);
        // No local endpoint: the ClusterIP drops (internal policy), the node port leads to a
        // chain that short-circuits pods and the node and drops the rest.
        assert!(
            texts.contains(&"no-endpoint-services: 10.96.0.10 . udp . 80 : drop".to_owned()),
            "{texts:?}"
        );
        assert!(
            texts.contains(&"service-nodeports: udp . 31000 : goto nodeport-external-local-1-0".to_owned()),
            "{texts:?}"
        );
        assert!(
            texts.contains(&"nodeport-cluster-endpoints: udp . 31000 . 0 : 10.244.1.5 . 8080".to_owned()),
            "{texts:?}"
        );
        assert!(plan.shared.contains(&Shared::Pick(Pick::NodePortCluster, 1)));
    }

    #[test]
    fn client_ip_affinity_remembers_clients_per_endpoint() {
        let mut sticky = service();
        sticky.affinity = Some(60);
        let slices = [slice(&[
            ([10, 244, 1, 5], "n2", true),
            ([10, 244, 0, 7], "n1", true),
        ])];
        let plan = plan_service(&key(), &sticky, &slices.iter().collect::<Vec<_>>(), "n1");
        assert!(plan.shared.is_empty());
        assert_eq!(plan.sets.len(), 2);
        assert_eq!(plan.sets[0].timeout, Some(Duration::from_secs(60)));
        let pick = plan
            .chains
            .iter()
            .find(|chain| chain.name.ends_with("-cluster"))
            .unwrap();
        assert!(pick.rules[0].starts_with("ip saddr @affinity-"), "{pick:?}");
        assert!(
            pick.rules[2].starts_with("numgen random mod 2 vmap { 0 : goto affinity-"),
            "{pick:?}"
        );
        let verdict = texts(&plan)
            .into_iter()
            .find(|text| text.starts_with("service-ips"))
            .unwrap();
        assert!(verdict.ends_with(&format!("goto {}", pick.name)), "{verdict}");
    }

    #[test]
    fn load_balancer_addresses_are_external_and_announced_where_endpoints_run() {
        let mut balanced = service();
        balanced.ports[0].node_port = Some(30080);
        balanced.external_ips = vec![[192, 168, 10, 200].into()];
        balanced.load_balancer_ips = vec![[192, 168, 10, 200].into()];
        balanced.external_local = true;
        balanced.health_check_node_port = Some(32000);
        let slices = [slice(&[
            ([10, 244, 0, 7], "n1", true),
            ([10, 244, 1, 5], "n2", true),
        ])];
        let plan = plan_service(&key(), &balanced, &slices.iter().collect::<Vec<_>>(), "n1");
        let texts = texts(&plan);
        assert!(
            texts.contains(&"service-ips: 192.168.10.200 . tcp . 80 : goto external-local-2-1".to_owned()),
            "{texts:?}"
        );
        assert!(
            texts.contains(&"local-endpoints: 192.168.10.200 . tcp . 80 . 0 : 10.244.0.7 . 8080".to_owned()),
            "{texts:?}"
        );
        assert_eq!(plan.health_check, Some((32000, 1)));
        let (ip, nodes) = &plan.announce[0];
        assert_eq!(ip.to_string(), "192.168.10.200");
        assert_eq!(nodes.as_ref().unwrap().len(), 2);
    }
}
