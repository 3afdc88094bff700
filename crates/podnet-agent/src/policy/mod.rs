//! NetworkPolicy: which traffic this node's pods may receive and send.
//!
//! Every packet a node forwards to or from one of its pods passes the `forward` hook: routed
//! traffic between nodes, traffic DNATed by the service proxy (already translated there, so
//! ports and peers are judged on the destination pod), and traffic between two pods of the
//! node's bridge (bridged frames meet the IPv4 hooks because `bridge-nf-call-iptables` is on in
//! every namespace of this kernel). Traffic the node itself sends (kubelet's probes,
//! hostNetwork pods) leaves through `output` and is never judged, as the API asks.
//!
//! Table `ip podnet-policy`, with fixed rules that look everything up in sets, so a packet
//! costs the same few lookups whatever the number of policies and pods:
//!
//! ```text
//! forward:  ct state established,related accept        replies and admitted connections
//!           ip saddr @pod-subnets ip saddr != @admitted drop   pods not judged yet
//!           ip daddr @pod-subnets ip daddr != @admitted drop
//!           ip saddr @egress-isolated jump egress      the client's side
//!           ip daddr @ingress-isolated jump ingress    the server's side
//! egress:   ip saddr . ip daddr @egress-any return                                   allowed
//!           ip saddr . ip daddr . meta l4proto . th dport @egress-ports return
//!           update @egress-drops { ip saddr } drop                 counted per pod, refused
//! ingress:  the same, keyed by ip daddr . ip saddr
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
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use podnet_model::{Event, Kind, Mirror, Object, ObjectKey};
use podnet_nft::registry::{POLICY_TABLE, priority};
use podnet_nft::{Chain, ChainType, Datum, Element, Hook, Kernel, Set, Syncer};

use crate::controller::{Controller, Reconciled};
use crate::metrics::Metrics;
use admission::Admissions;
use plan::Plan;
pub use plan::{PodInfo, PolicyInfo};

/// The sets, named for the direction and what they hold.
const INGRESS_ISOLATED: &str = "ingress-isolated";
const EGRESS_ISOLATED: &str = "egress-isolated";
const INGRESS_ANY: &str = "ingress-any";
const EGRESS_ANY: &str = "egress-any";
const INGRESS_PORTS: &str = "ingress-ports";
const EGRESS_PORTS: &str = "egress-ports";
const INGRESS_DROPS: &str = "ingress-drops";
const EGRESS_DROPS: &str = "egress-drops";
/// This node's pod subnets, and the addresses in them whose pods the plan covers.
const POD_SUBNETS: &str = "pod-subnets";
const ADMITTED: &str = "admitted";
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
    syncer: Syncer<&'static str, Kernel>,
    metrics: Arc<Metrics>,
    /// Addresses CNI plugins reported, and the plugins waiting for their pods.
    admissions: Arc<Admissions>,
    /// The plan last handed to the syncer: an unchanged direction is not handed again (at
    /// 1,000 policies its sets hold tens of thousands of elements).
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
        for chain in chains() {
            syncer.put_chain(chain);
        }
        Policy {
            node: node.to_owned(),
            subnets: Mirror::new(Kind::Node),
            pods: Mirror::new(Kind::Pod),
            namespaces: Mirror::new(Kind::Namespace),
            policies: Mirror::new(Kind::NetworkPolicy),
            syncer,
            metrics,
            admissions,
            planned: Plan::default(),
        }
    }
}

/// The table's sets.
fn sets() -> Vec<Set> {
    let pair = "type ipv4_addr . ipv4_addr";
    let tuple = "type ipv4_addr . ipv4_addr . inet_proto . inet_service";
    vec![
        Set::new(POD_SUBNETS, "type ipv4_addr").interval(),
        Set::new(ADMITTED, "type ipv4_addr"),
        Set::new(INGRESS_ISOLATED, "type ipv4_addr"),
        Set::new(EGRESS_ISOLATED, "type ipv4_addr"),
        Set::new(INGRESS_ANY, pair).interval(),
        Set::new(EGRESS_ANY, pair).interval(),
        Set::new(INGRESS_PORTS, tuple).interval(),
        Set::new(EGRESS_PORTS, tuple).interval(),
        Set::new(INGRESS_DROPS, "type ipv4_addr")
            .dynamic(DROPS_KEPT)
            .counting(),
        Set::new(EGRESS_DROPS, "type ipv4_addr")
            .dynamic(DROPS_KEPT)
            .counting(),
    ]
}

/// The table's chains: the hook, then one chain per direction.
fn chains() -> Vec<Chain> {
    let direction = |name: &str, local: &str, peer: &str, [any, ports, drops]: [&str; 3]| {
        Chain::regular(
            name,
            vec![
                format!("ip {local} . ip {peer} @{any} return"),
                format!("ip {local} . ip {peer} . meta l4proto . th dport @{ports} return"),
                format!("update @{drops} {{ ip {local} }} drop"),
            ],
        )
    };
    vec![
        Chain::base(
            "forward",
            ChainType::Filter,
            Hook::Forward,
            priority::FILTER,
            vec![
                "ct state established,related accept".to_owned(),
                format!("ip saddr @{POD_SUBNETS} ip saddr != @{ADMITTED} drop"),
                format!("ip daddr @{POD_SUBNETS} ip daddr != @{ADMITTED} drop"),
                format!("ip saddr @{EGRESS_ISOLATED} jump egress"),
                format!("ip daddr @{INGRESS_ISOLATED} jump ingress"),
            ],
        ),
        direction(
            "egress",
            "saddr",
            "daddr",
            [EGRESS_ANY, EGRESS_PORTS, EGRESS_DROPS],
        ),
        direction(
            "ingress",
            "daddr",
            "saddr",
            [INGRESS_ANY, INGRESS_PORTS, INGRESS_DROPS],
        ),
    ]
}

/// The elements of one direction's sets.
fn elements(
    direction: &plan::Direction,
    isolated: &'static str,
    any: &'static str,
    ports: &'static str,
) -> Vec<(&'static str, Element)> {
    let prefix = |block: Ipv4Net| Datum::Prefix(IpNet::V4(block));
    let local = |address: Ipv4Addr| Datum::Prefix(IpNet::V4(Ipv4Net::from(address)));
    let mut out: Vec<(&'static str, Element)> = direction
        .isolated
        .iter()
        .map(|address| (isolated, Element::key([Datum::Ipv4(*address)])))
        .collect();
    out.extend(
        direction
            .any
            .iter()
            .map(|(address, peer)| (any, Element::key([local(*address), prefix(*peer)]))),
    );
    out.extend(
        direction
            .ports
            .iter()
            .map(|(address, peer, protocol, first, last)| {
                let key = [
                    local(*address),
                    prefix(*peer),
                    Datum::Protocol(*protocol),
                    Datum::PortRange(*first, *last),
                ];
                (ports, Element::key(key))
            }),
    );
    out
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
        let directions = [
            (
                &plan.ingress,
                &self.planned.ingress,
                [INGRESS_ISOLATED, INGRESS_ANY, INGRESS_PORTS],
            ),
            (
                &plan.egress,
                &self.planned.egress,
                [EGRESS_ISOLATED, EGRESS_ANY, EGRESS_PORTS],
            ),
        ];
        for (direction, before, [isolated, any, ports]) in directions {
            if direction == before {
                continue;
            }
            let wanted = elements(direction, isolated, any, ports);
            // One group per set, so that a set nothing is left in is emptied too.
            for set in [isolated, any, ports] {
                let members = wanted
                    .iter()
                    .filter(|(name, _)| *name == set)
                    .map(|(name, element)| (*name, element.clone()));
                self.syncer.put_group(set, members);
            }
        }
        let subnets = self
            .subnets
            .get(&ObjectKey::cluster(&self.node))
            .cloned()
            .unwrap_or_default();
        let subnet_elements = subnets
            .iter()
            .map(|subnet| (POD_SUBNETS, Element::key([Datum::Prefix(IpNet::V4(*subnet))])));
        self.syncer.put_group(POD_SUBNETS, subnet_elements);
        let admitted_elements = admitted
            .keys()
            .map(|address| (ADMITTED, Element::key([Datum::Ipv4(*address)])));
        self.syncer.put_group(ADMITTED, admitted_elements);
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
    for (direction, set) in [("ingress", INGRESS_DROPS), ("egress", EGRESS_DROPS)] {
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
    fn the_rules_look_everything_up_in_sets() {
        let chains = chains();
        assert_eq!(
            chains[0].rules,
            [
                "ct state established,related accept",
                "ip saddr @pod-subnets ip saddr != @admitted drop",
                "ip daddr @pod-subnets ip daddr != @admitted drop",
                "ip saddr @egress-isolated jump egress",
                "ip daddr @ingress-isolated jump ingress"
            ]
        );
        assert_eq!(
            chains[2].rules,
            [
                "ip daddr . ip saddr @ingress-any return",
                "ip daddr . ip saddr . meta l4proto . th dport @ingress-ports return",
                "update @ingress-drops { ip daddr } drop"
            ]
        );
        let direction = plan::Direction {
            isolated: [Ipv4Addr::new(10, 0, 0, 2)].into(),
            any: [(Ipv4Addr::new(10, 0, 0, 2), "10.1.0.0/16".parse().unwrap())].into(),
            ports: [(Ipv4Addr::new(10, 0, 0, 2), Ipv4Net::default(), 6, 80, 90)].into(),
        };
        let text: Vec<String> = elements(&direction, INGRESS_ISOLATED, INGRESS_ANY, INGRESS_PORTS)
            .iter()
            .map(|(set, element)| format!("{set}: {}", element.text()))
            .collect();
        assert_eq!(
            text,
            [
                "ingress-isolated: 10.0.0.2",
                "ingress-any: 10.0.0.2/32 . 10.1.0.0/16",
                "ingress-ports: 10.0.0.2/32 . 0.0.0.0/0 . tcp . 80-90"
            ]
        );
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
