//! Egress masquerading: pods keep their own address inside the cluster and borrow the node's
//! outside of it.
//!
//! Outside the cluster nobody routes pod subnets back, so a packet from a local pod to an
//! address that is no node's pod subnet (and not multicast) leaves with the node's address
//! (`masquerade`); replies are translated back by conntrack. Pod-to-pod and node-to-pod traffic
//! is never translated, so a server always sees its client's real pod address.

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::Node;
use podnet_model::{Event, Kind, Mirror, Object, ObjectKey};
use podnet_nft::registry::{EGRESS_TABLE, priority};
use podnet_nft::{Chain, ChainType, Datum, Element, Hook, Kernel, Set, Syncer};

use crate::controller::{Controller, Reconciled};

/// The set of the cluster's pod subnets.
const CLUSTER_PODS: &str = "cluster-pods";

/// The egress controller of one node.
pub struct Egress {
    node: String,
    subnets: Mirror<Option<Ipv4Net>>,
    syncer: Syncer<&'static str, Kernel>,
}

impl Egress {
    /// The egress controller of node `node`.
    pub fn new(node: &str) -> Self {
        let mut syncer = Syncer::new(EGRESS_TABLE, Kernel::new());
        syncer.put_set(Set::new(CLUSTER_PODS, "type ipv4_addr").interval());
        Egress {
            node: node.to_owned(),
            subnets: Mirror::new(Kind::Node),
            syncer,
        }
    }
}

/// The node's IPv4 pod subnet.
fn pod_subnet(node: &Node) -> Option<Ipv4Net> {
    podnet_model::node_pod_cidrs(node)
        .into_iter()
        .find_map(|cidr| match cidr {
            IpNet::V4(v4) => Some(v4.trunc()),
            IpNet::V6(_) => None,
        })
}

/// The postrouting chain masquerading `local` pods' traffic to anywhere but the cluster's pods.
pub fn chain(local: Ipv4Net) -> Chain {
    Chain::base(
        "postrouting",
        ChainType::Nat,
        Hook::Postrouting,
        priority::SRCNAT,
        vec![format!(
            "ip saddr {local} ip daddr != @{CLUSTER_PODS} ip daddr != 224.0.0.0/4 masquerade"
        )],
    )
}

impl Controller for Egress {
    fn name(&self) -> &'static str {
        "egress"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Node]
    }

    fn observe(&mut self, event: &Event) {
        self.subnets.apply(event, |object| match object {
            Object::Node(node) => Some(pod_subnet(node)),
            _ => None,
        });
    }

    fn reconcile(&mut self) -> Result<Reconciled, String> {
        let local = self
            .subnets
            .get(&ObjectKey::cluster(&self.node))
            .copied()
            .flatten()
            .ok_or_else(|| format!("node {}: no IPv4 pod subnet (yet)", self.node))?;
        let mut cluster: Vec<Ipv4Net> = self.subnets.objects().values().flatten().copied().collect();
        cluster.sort();
        cluster.dedup();
        self.syncer.put_chain(chain(local));
        self.syncer.put_group(
            CLUSTER_PODS,
            cluster
                .iter()
                .map(|cidr| (CLUSTER_PODS, Element::key([Datum::Prefix(IpNet::V4(*cidr))]))),
        );
        // Somebody may have flushed the ruleset: one netlink round trip tells.
        self.syncer.verify().map_err(|err| err.to_string())?;
        let committed = self.syncer.commit().map_err(|err| err.to_string())?;
        let changes = if committed.is_empty() {
            Vec::new()
        } else {
            vec![format!("masquerade {local} to outside {cluster:?}")]
        };
        Ok(Reconciled {
            changes,
            ..Reconciled::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerades_only_what_leaves_the_cluster_pod_network() {
        let chain = chain("10.244.0.0/24".parse().unwrap());
        assert_eq!(
            chain.rules,
            ["ip saddr 10.244.0.0/24 ip daddr != @cluster-pods ip daddr != 224.0.0.0/4 masquerade"]
        );
    }
}
