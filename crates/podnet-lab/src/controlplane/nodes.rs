//! Nodes: an address on the underlay and a slice of the pod CIDR each (the node IPAM
//! controller's job), kept for as long as the node lives.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::PlanError;
use crate::cluster::Cluster;
use crate::spec::{AddressRange, LabFile, LabNode, MAX_NODES};
use crate::topology::EXTERNAL_ADDRESS;

/// The underlay segment node addresses are taken from.
pub const NODE_NETWORK: &str = "192.168.10.0/24";
/// Host number of the first node on the underlay (`192.168.10.11`).
const FIRST_NODE_HOST: u32 = 11;
/// The block node addresses come from: one per node a lab may have.
pub fn node_addresses() -> AddressRange {
    let network = u32::from(NODE_NETWORK.parse::<Ipv4Net>().expect("valid").network());
    AddressRange {
        first: Ipv4Addr::from(network + FIRST_NODE_HOST),
        last: Ipv4Addr::from(network + FIRST_NODE_HOST + MAX_NODES as u32 - 1),
    }
}

/// Whether a load-balancer pool may hold `address`: not one the underlay needs (its network
/// and broadcast addresses, the nodes' block, the external gateway).
pub fn pool_may_hold(address: Ipv4Addr) -> bool {
    let network: Ipv4Net = NODE_NETWORK.parse().expect("valid");
    !network.contains(&address)
        || !(address == network.network()
            || address == network.broadcast()
            || node_addresses().contains(address)
            || address.to_string() == EXTERNAL_ADDRESS)
}

/// Label naming a node's hostname, as kubelet sets it.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The nodes of `file`, keeping the subnet and address of those already running.
pub fn plan(file: &LabFile, running: &Cluster) -> Result<BTreeMap<String, Node>, PlanError> {
    let mask = file.spec.node_cidr_mask_size;
    let subnets: Vec<Ipv4Net> = file
        .spec
        .pod_cidr
        .subnets(mask)
        .map_err(|err| PlanError(err.to_string()))?
        .take(4096)
        .collect();
    let mut nodes = BTreeMap::new();
    let mut taken_subnets: Vec<String> = Vec::new();
    let mut taken_ips: Vec<String> = Vec::new();
    // Nodes that keep running keep their subnet and address; their labels follow the file.
    for node in &file.spec.nodes {
        if let Some(existing) = running.nodes.get(&node.name) {
            taken_subnets.extend(existing.spec.as_ref().and_then(|spec| spec.pod_cidr.clone()));
            taken_ips.extend(podnet_model::node_address(existing, "InternalIP").map(str::to_owned));
            let mut kept = existing.clone();
            kept.metadata.labels = Some(labels(node));
            nodes.insert(node.name.clone(), kept);
        }
    }
    for node in &file.spec.nodes {
        if nodes.contains_key(&node.name) {
            continue;
        }
        let subnet = subnets
            .iter()
            .map(ToString::to_string)
            .find(|subnet| !taken_subnets.contains(subnet))
            .ok_or_else(|| {
                PlanError(format!(
                    "the pod CIDR {} has no free /{mask} for node {}",
                    file.spec.pod_cidr, node.name
                ))
            })?;
        taken_subnets.push(subnet.clone());
        let address = node_addresses()
            .addresses()
            .map(|ip| ip.to_string())
            .find(|ip| !taken_ips.contains(ip))
            .ok_or_else(|| PlanError("the node network has no free address".into()))?;
        taken_ips.push(address.clone());
        nodes.insert(node.name.clone(), object(node, &subnet, &address));
    }
    Ok(nodes)
}

/// A node's labels: the file's, and those kubelet sets on every node.
fn labels(node: &LabNode) -> BTreeMap<String, String> {
    let mut labels = node.labels.clone();
    labels.insert(HOSTNAME_LABEL.to_owned(), node.name.clone());
    labels.insert("kubernetes.io/os".to_owned(), "linux".to_owned());
    labels
}

fn object(node: &LabNode, subnet: &str, address: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(node.name.clone()),
            labels: Some(labels(node)),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(subnet.to_owned()),
            pod_cidrs: Some(vec![subnet.to_owned()]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: address.to_owned(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: node.name.clone(),
                },
            ]),
            ..NodeStatus::default()
        }),
    }
}
