//! Cluster state as Kubernetes objects, and the source seam every podnet component reads it
//! through.
//!
//! Kubernetes describes the network's inputs as API objects: a Node carries its pod subnet
//! (`spec.podCIDR`) and addresses, a Pod its node (`spec.nodeName`) and, once its sandbox is
//! wired, its IPs (`status.podIPs`). podnet's components never ask where these objects come from:
//! they receive [`ClusterState`] snapshots from a [`ClusterSource`]. The lab's embedded control
//! plane is one source (`podnet-lab`); the Kubernetes API server, watched with kube-rs, is the
//! other (`podnet-kube`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The namespace objects land in when they name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The identity of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a namespaced object, `default` when its metadata names no namespace.
    pub fn of(meta: &ObjectMeta) -> Self {
        ObjectKey {
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A consistent snapshot of the objects podnet's components act on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterState {
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods by namespace and name (a list on the wire, as the API server lists them).
    #[serde(with = "pods_as_list")]
    pub pods: BTreeMap<ObjectKey, Pod>,
}

/// JSON object keys must be strings: pods travel as a list, keyed again by their metadata.
mod pods_as_list {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::Pod;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ObjectKey;

    pub fn serialize<S: Serializer>(
        pods: &BTreeMap<ObjectKey, Pod>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(pods.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<ObjectKey, Pod>, D::Error> {
        let list = Vec::<Pod>::deserialize(deserializer)?;
        Ok(list
            .into_iter()
            .map(|pod| (ObjectKey::of(&pod.metadata), pod))
            .collect())
    }
}

impl ClusterState {
    /// The pods scheduled to `node`.
    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (&'a ObjectKey, &'a Pod)> + 'a {
        self.pods
            .iter()
            .filter(move |(_, pod)| pod_node(pod) == Some(node))
    }
}

/// The source seam: where a component gets cluster state from.
pub trait ClusterSource: Send + Sync {
    /// The current state, then every later one; each new value replaces the previous whole.
    fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>>;
}

/// A node's pod subnets (`spec.podCIDRs`, else `spec.podCIDR`).
pub fn node_pod_cidrs(node: &Node) -> Vec<IpNet> {
    let Some(spec) = &node.spec else { return Vec::new() };
    let texts: Vec<&String> = match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.iter().collect(),
        _ => spec.pod_cidr.iter().collect(),
    };
    texts.into_iter().filter_map(|text| text.parse().ok()).collect()
}

/// A node's address of `kind` (`InternalIP`, `ExternalIP`, `Hostname`).
pub fn node_address<'a>(node: &'a Node, kind: &str) -> Option<&'a str> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|address| address.type_ == kind)
        .map(|address| address.address.as_str())
}

/// A node's IPv4 address of `kind`: the first that parses as IPv4 (a dual-stack node lists one
/// address per family, in either order).
pub fn node_ipv4(node: &Node, kind: &str) -> Option<std::net::Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|address| address.type_ == kind)
        .find_map(|address| address.address.parse().ok())
}

/// The node a pod is scheduled to.
pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Whether a pod shares its node's network namespace.
pub fn pod_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.host_network)
        .unwrap_or(false)
}

/// A pod's IPs as its status reports them.
pub fn pod_ips(pod: &Pod) -> Vec<std::net::IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    match &status.pod_ips {
        Some(list) if !list.is_empty() => list.iter().filter_map(|ip| ip.ip.parse().ok()).collect(),
        _ => status.pod_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus, PodIP, PodSpec, PodStatus};

    #[test]
    fn reads_network_facts_from_nodes_and_pods() {
        let node = Node {
            spec: Some(NodeSpec {
                pod_cidr: Some("10.244.1.0/24".into()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.168.10.11".into(),
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        assert_eq!(
            node_pod_cidrs(&node),
            vec!["10.244.1.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(node_address(&node, "InternalIP"), Some("192.168.10.11"));
        let pod = Pod {
            spec: Some(PodSpec {
                node_name: Some("node1".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ips: Some(vec![PodIP {
                    ip: "10.244.1.2".into(),
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(pod_node(&pod), Some("node1"));
        assert_eq!(
            pod_ips(&pod),
            vec!["10.244.1.2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(!pod_host_network(&pod));
    }

    #[test]
    fn cluster_state_round_trips_through_json() {
        let mut state = ClusterState::default();
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        state.pods.insert(ObjectKey::of(&pod.metadata), pod);
        let text = serde_json::to_string(&state).unwrap();
        let back: ClusterState = serde_json::from_str(&text).unwrap();
        assert_eq!(back.pods.keys().next().unwrap().to_string(), "shop/web");
    }
}
