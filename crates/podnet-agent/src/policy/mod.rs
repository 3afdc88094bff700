//! NetworkPolicy: which traffic this node's pods may receive and send.
//!
//! Every packet a node forwards to or from one of its pods passes the `forward` hook: routed
//! traffic between nodes, traffic DNATed by the service proxy (already translated there, so
//! ports and peers are judged on the destination pod), and traffic between two pods of the
//! node's bridge (bridged frames meet the IPv4 hooks because `bridge-nf-call-iptables` is on in
//! every namespace of this kernel). Traffic the node itself sends (kubelet's probes,
//! hostNetwork pods) leaves through `output` and is never judged, as the API asks.
//!
//! Table `ip podnet-policy`. A packet's first lookups find the pods it concerns in verdict
//! maps keyed by address; each isolated pod has a chain of its own with sets of its own, so a
//! connection's first packet costs the same few lookups, in sets no larger than what its own
//! pods allow, whatever the number of policies and pods on the node:
//!
//! ```text
//! forward:  ct state established,related accept        replies and admitted connections
//!           ip saddr @pod-subnets ip saddr != @admitted drop   pods not judged yet
//!           ip daddr @pod-subnets ip daddr != @admitted drop
//!           ip saddr vmap @egress-pods                 10.244.0.5 : jump egress-10-244-0-5
//!           ip daddr vmap @ingress-pods                the server's side, the same way
//! egress-10-244-0-5:                                   one per pod isolated for egress
//!           ip daddr @egress-10-244-0-5-any return                  peers allowed everything
//!           ip daddr . meta l4proto . th dport @egress-10-244-0-5-ports return
//!           update @egress-drops { ip saddr } drop                 counted per pod, refused
//! ingress-10-244-0-7: the same, with the peer in ip saddr
//! ```
//!
//! No window for new pods: an address of this node's pod subnet passes only once the
//! controller has admitted it, in the same transaction that isolates the pod if a policy
//! selects it. Kubelet publishes a pod's address only after its containers start, so the CNI
//! plugin reports it here first and waits until the pod is admitted ([`admission`]); a pod
//! whose plugin could not wait (no agent listening) stays cut off until the agent learns its
//! address from the API.
//!
//! The drop sets count, per pod, the packets refused (an element whose counter the kernel
//! keeps; it goes after an hour without drops); `/metrics` reads them on each scrape.
//!
//! A connection is judged by its first packet; once admitted, conntrack carries the rest, so a
//! connection established before a policy that denies it goes on until it ends (as with
//! Calico's and Cilium's defaults); new ones are refused. Every change is one nft transaction:
//! no packet ever sees half of it.

pub mod admission;
mod plan;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use podnet_model::{Event, Kind, Mirror, Object, ObjectKey};
use podnet_nft::registry::{POLICY_TABLE, priority};
use podnet_nft::{Backend, Chain, ChainType, Datum, Element, Hook, Kernel, Set, Syncer, Verdict};

use crate::controller::{Controller, Reconciled};
use crate::metrics::Metrics;
use admission::Admissions;
use plan::Plan;
pub use plan::{PodInfo, PolicyInfo};

/// This node's pod subnets, and the addresses in them whose pods the plan covers.
const POD_SUBNETS: &str = "pod-subnets";
const ADMITTED: &str = "admitted";

/// One direction of the table: its map of isolated pods, its drop counters, and which end of
/// a packet is the local pod and which the peer.
struct Side {
    name: &'static str,
    pods: &'static str,
    drops: &'static str,
    local: &'static str,
    peer: &'static str,
}

const INGRESS: Side = Side {
    name: "ingress",
    pods: "ingress-pods",
    drops: "ingress-drops",
    local: "daddr",
    peer: "saddr",
};
const EGRESS: Side = Side {
    name: "egress",
    pods: "egress-pods",
    drops: "egress-drops",
    local: "saddr",
    peer: "daddr",
};
/// How long a pod's drop counter lasts without a drop.
const DROPS_KEPT: Duration = Duration::from_secs(3600);

/// The policy controller of one node.
pub struct Policy {
    node: String,
    /// Every node's IPv4 pod subnets (this node's matter).
    subnets: Mirror<Vec<Ipv4Net>>,
    pods: Mirror<PodInfo>,
    namespaces: Mirror<BTreeMap<String, String>>,
    policies: Mirror<PolicyInfo>,
    syncer: Syncer<String, Kernel>,
    metrics: Arc<Metrics>,
    /// Addresses CNI plugins reported, and the plugins waiting for their pods.
    admissions: Arc<Admissions>,
    /// The pods with a chain, for ingress and for egress.
    chained: [BTreeSet<Ipv4Addr>; 2],
    /// The plan last handed to the syncer: an unchanged direction, and a pod whose rules did
    /// not change, is not handed again (at 1,000 policies a node holds tens of thousands of
    /// elements).
    planned: Plan,
}

impl Policy {
    /// The policy controller of node `node`, naming its pods' drop counters in `metrics` and
    /// admitting the pods `admissions` reports.
    pub fn new(node: &str, metrics: Arc<Metrics>, admissions: Arc<Admissions>) -> Self {
        let mut syncer = Syncer::new(POLICY_TABLE, Kernel::new());
        for set in sets() {
            syncer.put_set(set);
        }
        syncer.put_chain(forward());
        Policy {
            node: node.to_owned(),
            subnets: Mirror::new(Kind::Node),
            pods: Mirror::new(Kind::Pod),
            namespaces: Mirror::new(Kind::Namespace),
            policies: Mirror::new(Kind::NetworkPolicy),
            syncer,
            metrics,
            admissions,
            chained: Default::default(),
            planned: Plan::default(),
        }
    }
}

/// The table's fixed sets and maps.
fn sets() -> Vec<Set> {
    let mut sets = vec![
        Set::new(POD_SUBNETS, "type ipv4_addr").interval(),
        Set::new(ADMITTED, "type ipv4_addr"),
    ];
    for side in [&INGRESS, &EGRESS] {
        sets.push(Set::map(side.pods, "type ipv4_addr", "verdict"));
        sets.push(
            Set::new(side.drops, "type ipv4_addr")
                .dynamic(DROPS_KEPT)
                .counting(),
        );
    }
    sets
}

/// The hook's chain.
fn forward() -> Chain {
    Chain::base(
        "forward",
        ChainType::Filter,
        Hook::Forward,
        priority::FILTER,
        vec![
            "ct state established,related accept".to_owned(),
            format!("ip saddr @{POD_SUBNETS} ip saddr != @{ADMITTED} drop"),
            format!("ip daddr @{POD_SUBNETS} ip daddr != @{ADMITTED} drop"),
            format!("ip saddr vmap @{}", EGRESS.pods),
            format!("ip daddr vmap @{}", INGRESS.pods),
        ],
    )
}

/// What one isolated pod allows in one direction: peers allowed everything, and (peer,
/// protocol, first port, last port) tuples.
#[derive(Debug, Default, PartialEq, Eq)]
struct PodRules {
    any: Vec<Ipv4Net>,
    ports: Vec<(Ipv4Net, u8, u16, u16)>,
}

/// A direction of the plan, pod by pod.
fn by_pod(direction: &plan::Direction) -> BTreeMap<Ipv4Addr, PodRules> {
    let mut pods: BTreeMap<Ipv4Addr, PodRules> = direction
        .isolated
        .iter()
        .map(|pod| (*pod, PodRules::default()))
        .collect();
    for (pod, peer) in &direction.any {
        pods.entry(*pod).or_default().any.push(*peer);
    }
    for (pod, peer, protocol, first, last) in &direction.ports {
        pods.entry(*pod)
            .or_default()
            .ports
            .push((*peer, *protocol, *first, *last));
    }
    pods
}

impl Side {
    /// The chain of isolated pod `pod`, and the prefix of its sets' names.
    fn chain_name(&self, pod: Ipv4Addr) -> String {
        format!("{}-{}", self.name, pod.to_string().replace('.', "-"))
    }

    fn any_set(&self, pod: Ipv4Addr) -> String {
        format!("{}-any", self.chain_name(pod))
    }

    fn ports_set(&self, pod: Ipv4Addr) -> String {
        format!("{}-ports", self.chain_name(pod))
    }

    /// The chain judging `pod`'s traffic in this direction: allowed returns, the rest is
    /// counted and dropped.
    fn chain(&self, pod: Ipv4Addr) -> Chain {
        let Side {
            peer, local, drops, ..
        } = self;
        Chain::regular(
            self.chain_name(pod),
            vec![
                format!("ip {peer} @{} return", self.any_set(pod)),
                format!(
                    "ip {peer} . meta l4proto . th dport @{} return",
                    self.ports_set(pod)
                ),
                format!("update @{drops} {{ ip {local} }} drop"),
            ],
        )
    }

    /// The sets of `pod`'s chain.
    fn pod_sets(&self, pod: Ipv4Addr) -> [Set; 2] {
        [
            Set::new(self.any_set(pod), "type ipv4_addr").interval(),
            Set::new(self.ports_set(pod), "type ipv4_addr . inet_proto . inet_service").interval(),
        ]
    }

    /// The elements of `pod`'s sets: (set, element).
    fn pod_elements(&self, pod: Ipv4Addr, rules: &PodRules) -> Vec<(String, Element)> {
        let prefix = |block: &Ipv4Net| Datum::Prefix(IpNet::V4(*block));
        let any = self.any_set(pod);
        let ports = self.ports_set(pod);
        rules
            .any
            .iter()
            .map(|peer| (any.clone(), Element::key([prefix(peer)])))
            .chain(rules.ports.iter().map(|(peer, protocol, first, last)| {
                let key = [
                    prefix(peer),
                    Datum::Protocol(*protocol),
                    Datum::PortRange(*first, *last),
                ];
                (ports.clone(), Element::key(key))
            }))
            .collect()
    }

    /// Hands `syncer` what changed from `before` to `now` in this direction. A pod isolated
    /// gets a chain and sets; they stay, emptied, while it is merely no longer isolated, and go
    /// when it leaves the node (`local` holds the node's pods), so isolating a pod again, as
    /// policies come and go, changes elements only (straight over netlink, no `nft` run).
    /// `chained` is what pods have a chain, kept up to date.
    fn program<B: Backend>(
        &self,
        syncer: &mut Syncer<String, B>,
        now: &plan::Direction,
        before: &plan::Direction,
        chained: &mut BTreeSet<Ipv4Addr>,
        local: &HashMap<Ipv4Addr, ObjectKey>,
    ) {
        let gone: Vec<Ipv4Addr> = chained
            .iter()
            .filter(|pod| !now.isolated.contains(pod) && !local.contains_key(pod))
            .copied()
            .collect();
        for pod in gone {
            for set in [self.any_set(pod), self.ports_set(pod)] {
                syncer.remove_group(&set);
                syncer.remove_set(&set);
            }
            syncer.remove_chain(&self.chain_name(pod));
            chained.remove(&pod);
        }
        if now == before {
            return;
        }
        let (now, before) = (by_pod(now), by_pod(before));
        for pod in before
            .keys()
            .filter(|pod| !now.contains_key(pod) && chained.contains(pod))
        {
            for set in [self.any_set(*pod), self.ports_set(*pod)] {
                syncer.put_group(set, std::iter::empty::<(String, Element)>());
            }
        }
        for (pod, rules) in &now {
            if before.get(pod) == Some(rules) && chained.contains(pod) {
                continue;
            }
            for set in self.pod_sets(*pod) {
                syncer.put_set(set);
            }
            syncer.put_chain(self.chain(*pod));
            chained.insert(*pod);
            let elements = self.pod_elements(*pod, rules);
            // One group per set, so that a set nothing is left in is emptied too.
            for set in [self.any_set(*pod), self.ports_set(*pod)] {
                let members = elements
                    .iter()
                    .filter(|(name, _)| *name == set)
                    .map(|(name, element)| (name.clone(), element.clone()));
                syncer.put_group(set.clone(), members);
            }
        }
        let jumps = now.keys().map(|pod| {
            let jump = Verdict::Jump(self.chain_name(*pod));
            (self.pods, Element::verdict([Datum::Ipv4(*pod)], jump))
        });
        syncer.put_group(self.pods.to_owned(), jumps);
    }
}

impl Controller for Policy {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Node, Kind::Pod, Kind::Namespace, Kind::NetworkPolicy]
    }

    fn observe(&mut self, event: &Event) {
        if let Event::Deleted(Kind::Pod, key) = event {
            self.admissions.forget(key);
        }
        self.subnets.apply(event, |object| match object {
            Object::Node(node) => Some(
                podnet_model::node_pod_cidrs(node)
                    .into_iter()
                    .filter_map(|cidr| match cidr {
                        IpNet::V4(v4) => Some(v4),
                        IpNet::V6(_) => None,
                    })
                    .collect(),
            ),
            _ => None,
        });
        self.pods.apply(event, |object| match object {
            Object::Pod(pod) => Some(PodInfo::of(pod)),
            _ => None,
        });
        self.namespaces.apply(event, |object| match object {
            Object::Namespace(namespace) => Some(namespace.metadata.labels.clone().unwrap_or_default()),
            _ => None,
        });
        self.policies.apply(event, |object| match object {
            Object::NetworkPolicy(policy) => Some(PolicyInfo {
                namespace: policy
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                spec: policy.spec.clone().unwrap_or_default(),
            }),
            _ => None,
        });
    }

    fn reconcile(&mut self) -> Result<Reconciled, String> {
        let namespaces: BTreeMap<String, BTreeMap<String, String>> = self
            .namespaces
            .objects()
            .iter()
            .map(|(key, labels)| (key.name.clone(), labels.clone()))
            .collect();
        let pods = self.pods_with_reports();
        let plan = plan::plan(
            &self.node,
            &plan::Cluster {
                pods: pods.values().map(AsRef::as_ref).collect(),
                namespaces: &namespaces,
                policies: self.policies.objects().values().collect(),
            },
        );
        // The local pods the plan covers (every one with an address).
        let admitted: HashMap<Ipv4Addr, ObjectKey> = pods
            .iter()
            .filter(|(_, pod)| pod.node.as_deref() == Some(self.node.as_str()))
            .filter_map(|(key, pod)| Some((pod.address?, (*key).clone())))
            .collect();
        drop(pods);
        let [ingress_chained, egress_chained] = &mut self.chained;
        INGRESS.program(
            &mut self.syncer,
            &plan.ingress,
            &self.planned.ingress,
            ingress_chained,
            &admitted,
        );
        EGRESS.program(
            &mut self.syncer,
            &plan.egress,
            &self.planned.egress,
            egress_chained,
            &admitted,
        );
        let subnets = self
            .subnets
            .get(&ObjectKey::cluster(&self.node))
            .cloned()
            .unwrap_or_default();
        let subnet_elements = subnets
            .iter()
            .map(|subnet| (POD_SUBNETS, Element::key([Datum::Prefix(IpNet::V4(*subnet))])));
        self.syncer.put_group(POD_SUBNETS.to_owned(), subnet_elements);
        let admitted_elements = admitted
            .keys()
            .map(|address| (ADMITTED, Element::key([Datum::Ipv4(*address)])));
        self.syncer.put_group(ADMITTED.to_owned(), admitted_elements);
        self.syncer.verify().map_err(|err| err.to_string())?;
        let committed = self.syncer.commit().map_err(|err| err.to_string())?;
        self.planned = plan.clone();
        let local = admitted
            .iter()
            .map(|(address, key)| (*address, key.to_string()))
            .collect();
        self.metrics.policy_pods(local);
        self.admissions.committed(admitted);
        let warnings = if subnets.is_empty() {
            vec![format!(
                "node {} has no IPv4 spec.podCIDR: pods are judged from their first packet, but the traffic of a pod not admitted yet is not dropped",
                self.node
            )]
        } else {
            Vec::new()
        };
        let changes = if committed.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "policies: {} pods isolated for ingress, {} for egress",
                plan.ingress.isolated.len(),
                plan.egress.isolated.len()
            )]
        };
        Ok(Reconciled { changes, warnings })
    }
}

impl Policy {
    /// Every pod, with the address a CNI plugin reported for a local pod whose status does not
    /// carry one yet (unless another local pod still holds that address in its status).
    fn pods_with_reports(&self) -> BTreeMap<&ObjectKey, Cow<'_, PodInfo>> {
        let mut pods: BTreeMap<&ObjectKey, Cow<'_, PodInfo>> = self
            .pods
            .objects()
            .iter()
            .map(|(key, pod)| (key, Cow::Borrowed(pod)))
            .collect();
        let reported = self.admissions.reported();
        if reported.is_empty() {
            return pods;
        }
        let local = |pod: &PodInfo| pod.node.as_deref() == Some(self.node.as_str());
        let held: HashSet<Ipv4Addr> = pods
            .values()
            .filter(|pod| local(pod))
            .filter_map(|pod| pod.address)
            .collect();
        for (key, address) in reported {
            let Some((key, pod)) = self.pods.objects().get_key_value(&key) else {
                continue;
            };
            if pod.address.is_some() {
                self.admissions.forget(key);
            } else if local(pod) && !held.contains(&address) {
                let filled = PodInfo {
                    address: Some(address),
                    ..pod.clone()
                };
                pods.insert(key, Cow::Owned(filled));
            }
        }
        pods
    }
}

/// The packets refused per pod, as the drop sets count them: (direction, pod address,
/// packets). Read with `nft`, for a scrape; empty when the table is not there.
pub fn dropped() -> Vec<(&'static str, Ipv4Addr, u64)> {
    let mut counts = Vec::new();
    for side in [&INGRESS, &EGRESS] {
        let (direction, set) = (side.name, side.drops);
        let output = std::process::Command::new("nft")
            .args(["-j", "list", "set", "ip", POLICY_TABLE.name, set])
            .output();
        let Some(output) = output.ok().filter(|output| output.status.success()) else {
            continue;
        };
        counts.extend(
            counters(&output.stdout)
                .into_iter()
                .map(|(address, packets)| (direction, address, packets)),
        );
    }
    counts
}

/// The (address, packets) counters of a set in `nft -j list set` output.
fn counters(json: &[u8]) -> Vec<(Ipv4Addr, u64)> {
    let Ok(listing) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|item| item["set"]["elem"].as_array().into_iter().flatten())
        .filter_map(|element| {
            let element = &element["elem"];
            let address = element["val"].as_str()?.parse().ok()?;
            Some((address, element["counter"]["packets"].as_u64()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_are_read_from_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "ip", "name": "ingress-drops", "table": "podnet-policy", "elem": [{"elem": {"val": "10.244.0.5", "counter": {"packets": 3, "bytes": 180}}}]}}]}"#;
        assert_eq!(counters(json), [(Ipv4Addr::new(10, 244, 0, 5), 3)]);
        assert!(counters(b"not json").is_empty());
    }

    #[test]
    fn a_packet_finds_its_pods_in_maps_and_each_isolated_pod_has_its_own_chain_and_sets() {
        assert_eq!(
            forward().rules,
            [
                "ct state established,related accept",
                "ip saddr @pod-subnets ip saddr != @admitted drop",
                "ip daddr @pod-subnets ip daddr != @admitted drop",
                "ip saddr vmap @egress-pods",
                "ip daddr vmap @ingress-pods"
            ]
        );
        let pod = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(
            INGRESS.chain(pod).rules,
            [
                "ip saddr @ingress-10-0-0-2-any return",
                "ip saddr . meta l4proto . th dport @ingress-10-0-0-2-ports return",
                "update @ingress-drops { ip daddr } drop"
            ]
        );

        let mut syncer = Syncer::new(POLICY_TABLE, podnet_nft::Recorder::default());
        for set in sets() {
            syncer.put_set(set);
        }
        syncer.put_chain(forward());
        syncer.commit().unwrap();
        let isolated = plan::Direction {
            isolated: [pod].into(),
            any: [(pod, "10.1.0.0/16".parse().unwrap())].into(),
            ports: [(pod, Ipv4Net::default(), 6, 80, 90)].into(),
        };
        let mut chained = BTreeSet::new();
        let here: HashMap<Ipv4Addr, ObjectKey> = [(pod, ObjectKey::cluster("p"))].into();
        let none = plan::Direction::default();
        // Programs one change and returns the transaction it made.
        let mut change = |now: &plan::Direction, before: &plan::Direction, local: &HashMap<_, _>| {
            INGRESS.program(&mut syncer, now, before, &mut chained, local);
            syncer.commit().unwrap();
            syncer.backend().transactions.last().unwrap().clone()
        };
        let added = change(&isolated, &none, &here);
        for line in [
            "add set ip podnet-policy ingress-10-0-0-2-any",
            "add chain ip podnet-policy ingress-10-0-0-2",
            "10.1.0.0/16",
            "0.0.0.0/0 . tcp . 80-90",
            "10.0.0.2 : jump ingress-10-0-0-2",
        ] {
            assert!(added.contains(line), "{line:?} not in:\n{added}");
        }
        // No longer isolated: out of the map, its sets emptied, its chain kept while it is here.
        let emptied = change(&none, &isolated, &here);
        assert!(emptied.contains("ingress-pods { 10.0.0.2"), "{emptied}");
        assert!(!emptied.contains("delete chain"), "{emptied}");
        // Isolated again: elements only.
        let again = change(&isolated, &none, &here);
        assert!(
            !again.contains("add chain") && again.contains("10.0.0.2 : jump"),
            "{again}"
        );
        // Gone from the node: its chain and sets go, with the map's element, in one transaction.
        let removed = change(&none, &isolated, &HashMap::new());
        for line in [
            "delete element ip podnet-policy ingress-pods { 10.0.0.2 }",
            "delete set ip podnet-policy ingress-10-0-0-2-ports",
            "delete chain ip podnet-policy ingress-10-0-0-2",
        ] {
            assert!(removed.contains(line), "{line:?} not in:\n{removed}");
        }
        assert!(chained.is_empty());
    }

    #[test]
    fn a_reported_address_fills_in_only_a_local_pod_without_one_and_never_a_held_one() {
        let pod = |name: &str, node: &str, address: Option<&str>| {
            let mut pod = k8s_openapi::api::core::v1::Pod::default();
            pod.metadata.name = Some(name.into());
            pod.metadata.namespace = Some("x".into());
            pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            });
            pod.status = address.map(|address| k8s_openapi::api::core::v1::PodStatus {
                pod_ip: Some(address.into()),
                ..Default::default()
            });
            Event::Applied(Object::Pod(Box::new(pod)))
        };
        let key = |name: &str| ObjectKey {
            namespace: "x".into(),
            name: name.into(),
        };
        let admissions = Arc::new(Admissions::default());
        let mut policy = Policy::new("n1", Arc::new(Metrics::default()), admissions.clone());
        for event in [
            pod("new", "n1", None),
            pod("reused", "n1", None),
            pod("old", "n1", Some("10.0.0.9")),
            pod("elsewhere", "n2", None),
            pod("started", "n1", Some("10.0.0.4")),
        ] {
            policy.observe(&event);
        }
        let reports = [("new", 5), ("reused", 9), ("elsewhere", 6), ("started", 3)];
        for (name, last) in reports {
            admissions.report(&key(name), Ipv4Addr::new(10, 0, 0, last));
        }
        let addresses: BTreeMap<String, Option<Ipv4Addr>> = policy
            .pods_with_reports()
            .into_iter()
            .map(|(key, pod)| (key.name.clone(), pod.address))
            .collect();
        let address = |last| Some(Ipv4Addr::new(10, 0, 0, last));
        assert_eq!(
            addresses,
            [
                // Filled in: a local pod without an address.
                ("new".into(), address(5)),
                // Not while "old" still holds 10.0.0.9, nor for a pod of another node.
                ("reused".into(), None),
                ("old".into(), address(9)),
                ("elsewhere".into(), None),
                // The status wins, and the report is forgotten.
                ("started".into(), address(4)),
            ]
            .into()
        );
        assert!(!admissions.reported().contains_key(&key("started")));
        // A deleted pod's report goes with it.
        policy.observe(&Event::Deleted(Kind::Pod, key("new")));
        assert!(!admissions.reported().contains_key(&key("new")));
    }
}
