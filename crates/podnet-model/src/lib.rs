//! Cluster state as Kubernetes objects, and the source seam every podnet component reads it
//! through.
//!
//! Kubernetes describes the network's inputs as API objects: a Node carries its pod subnet
//! (`spec.podCIDR`) and addresses, a Pod its node (`spec.nodeName`) and, once its sandbox is
//! wired, its IPs (`status.podIPs`), a Service its virtual address and ports, an EndpointSlice
//! the pod addresses behind a service. podnet's components never ask where these objects come
//! from: they watch the kinds they need through a [`ClusterSource`]. The lab's embedded control
//! plane is one source (`podnet-lab`); the Kubernetes API server, watched with kube-rs, is the
//! other (`podnet-kube`).

mod object;
pub mod selector;
mod source;
pub mod stable_hash;

use std::fmt;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

pub use object::{Kind, Object};
pub use source::{Changes, ClusterSource, Event, Mirror, WATCH_BUFFER};

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
    /// The key of a cluster-scoped object (a Node, a Namespace): no namespace.
    pub fn cluster(name: &str) -> Self {
        ObjectKey {
            namespace: String::new(),
            name: name.to_owned(),
        }
    }

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
        if self.namespace.is_empty() {
            return f.write_str(&self.name);
        }
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How pod traffic crosses between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// Encapsulation in VXLAN.
    Vxlan {
        /// VXLAN network identifier (flannel's default: 1).
        vni: u32,
        /// UDP port (flannel's default: 8472).
        port: u16,
    },
    /// Direct routes through the peer nodes' addresses.
    HostGw,
}

impl Backend {
    /// flannel's VXLAN defaults.
    pub const DEFAULT_VXLAN: Backend = Backend::Vxlan { vni: 1, port: 8472 };

    /// The backend's name, as configurations spell it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan { .. } => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
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

/// Whether a pod has finished (phase `Succeeded` or `Failed`): its sandbox is gone and its
/// address, still in its status, may already be another pod's.
pub fn pod_finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|status| status.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// A Kubernetes protocol name (`TCP` when absent, `UDP`, `SCTP`) as an IP protocol number;
/// `None` for any other name.
pub fn protocol_number(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
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
}
