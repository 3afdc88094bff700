//! The lab's embedded control plane: what the API server and the controllers would decide.
//!
//! From the lab file and the state already running it computes the desired cluster: Node
//! objects with a pod subnet each (the node IPAM controller's job), namespaces, the pods of
//! Deployments (the ReplicaSet controller's job) and the node of every pod (the scheduler's
//! job). Like a cluster's network add-on, it also runs the node agent on every node as a
//! DaemonSet would: a hostNetwork pod `kube-system/podnet-agent-NODE`. It is a pure function, so
//! `lab apply` can diff the result against what runs and touch only what changed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{
    Container, Namespace, Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use podnet_model::{ClusterState, DEFAULT_NAMESPACE, ObjectKey, pod_node};

use crate::paths::LabPaths;
use crate::spec::LabFile;
use crate::stable_hash::Fnv1a;

/// The underlay segment node addresses are taken from.
pub const NODE_NETWORK: &str = "192.168.10.0/24";
/// Host number of the first node on the underlay (`192.168.10.11`).
const FIRST_NODE_HOST: u32 = 11;
/// Label naming a node's hostname, as kubelet sets it.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The node agent's name, as its pods and their label carry it.
const AGENT: &str = "podnet-agent";
/// A node's CNI configuration, in its directory.
pub const NODE_CNI_CONF: &str = "network.conflist";
/// Label the Deployment controller puts on its pods.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Why the file cannot be applied to the running lab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// The desired cluster for `file`, keeping what `running` already decided (node subnets, pod
/// placement, pod status) wherever the file did not change it.
pub fn plan(file: &LabFile, running: &ClusterState, paths: &LabPaths) -> Result<ClusterState, PlanError> {
    let mut desired = ClusterState {
        nodes: plan_nodes(file, running)?,
        namespaces: plan_namespaces(file),
        pods: BTreeMap::new(),
    };
    for mut pod in all_pods(file, paths) {
        let key = ObjectKey::of(&pod.metadata);
        if !desired.namespaces.contains_key(&key.namespace) {
            return Err(PlanError(format!(
                "pod {key}: namespace {:?} does not exist; add a Namespace document for it",
                key.namespace
            )));
        }
        if let Some(node) = pod_node(&pod)
            && !desired.nodes.contains_key(node)
        {
            return Err(PlanError(format!(
                "pod {key}: nodeName {node:?} is not a node of this lab (nodes: {})",
                desired.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        pod.metadata.namespace = Some(key.namespace.clone());
        let kept = running
            .pods
            .get(&key)
            .filter(|previous| same_spec(previous, &pod));
        let pod = match kept {
            Some(previous) if pod_node(previous).is_some_and(|node| desired.nodes.contains_key(node)) => {
                previous.clone()
            }
            _ => {
                pod.metadata.uid = Some(new_uid(&key));
                pod.status = None;
                pod
            }
        };
        if desired.pods.insert(key.clone(), pod).is_some() {
            return Err(PlanError(format!(
                "pod {key} is defined twice: a Pod of that name collides with a Deployment's replica or a node agent's pod"
            )));
        }
    }
    schedule(&mut desired);
    Ok(desired)
}

fn plan_nodes(file: &LabFile, running: &ClusterState) -> Result<BTreeMap<String, Node>, PlanError> {
    let mask = file.spec.node_cidr_mask_size;
    let subnets: Vec<Ipv4Net> = file
        .spec
        .pod_cidr
        .subnets(mask)
        .map_err(|err| PlanError(err.to_string()))?
        .take(4096)
        .collect();
    let node_network: Ipv4Net = NODE_NETWORK.parse().expect("valid");
    let mut nodes = BTreeMap::new();
    let mut taken_subnets: Vec<String> = Vec::new();
    let mut taken_ips: Vec<String> = Vec::new();
    // Nodes that keep running keep their subnet and address.
    for name in &file.spec.nodes {
        if let Some(node) = running.nodes.get(name) {
            taken_subnets.extend(node.spec.as_ref().and_then(|spec| spec.pod_cidr.clone()));
            taken_ips.extend(podnet_model::node_address(node, "InternalIP").map(str::to_owned));
            nodes.insert(name.clone(), node.clone());
        }
    }
    for name in &file.spec.nodes {
        if nodes.contains_key(name) {
            continue;
        }
        let subnet = subnets
            .iter()
            .map(ToString::to_string)
            .find(|subnet| !taken_subnets.contains(subnet))
            .ok_or_else(|| {
                PlanError(format!(
                    "the pod CIDR {} has no free /{mask} for node {name}",
                    file.spec.pod_cidr
                ))
            })?;
        taken_subnets.push(subnet.clone());
        let address = (FIRST_NODE_HOST..255)
            .map(|host| Ipv4Addr::from(u32::from(node_network.network()) + host).to_string())
            .find(|ip| !taken_ips.contains(ip))
            .ok_or_else(|| PlanError("the node network has no free address".into()))?;
        taken_ips.push(address.clone());
        nodes.insert(name.clone(), node_object(name, &subnet, &address));
    }
    Ok(nodes)
}

fn node_object(name: &str, subnet: &str, address: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (HOSTNAME_LABEL.to_owned(), name.to_owned()),
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ])),
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
                    address: name.to_owned(),
                },
            ]),
            ..NodeStatus::default()
        }),
    }
}

fn plan_namespaces(file: &LabFile) -> BTreeMap<String, Namespace> {
    let mut namespaces: BTreeMap<String, Namespace> = [DEFAULT_NAMESPACE, "kube-system"]
        .into_iter()
        .map(|name| {
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            (name.to_owned(), namespace)
        })
        .collect();
    for namespace in &file.namespaces {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        namespaces.insert(name, namespace.clone());
    }
    for (name, namespace) in &mut namespaces {
        namespace
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
    }
    namespaces
}

/// The pods of every Deployment: `replicas` copies of its template, named like the ReplicaSet
/// controller names them (`DEPLOYMENT-TEMPLATEHASH-SUFFIX`), deterministically so that
/// applying the same file twice changes nothing.
fn deployment_pods(file: &LabFile) -> Vec<Pod> {
    let mut pods = Vec::new();
    for deployment in &file.deployments {
        let spec = deployment.spec.as_ref().expect("validated");
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let namespace = deployment
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let template = serde_json::to_string(&spec.template).expect("templates serialize");
        let template_hash = short_hash(&template, 10);
        for index in 0..spec.replicas.unwrap_or(1) {
            let mut metadata = spec.template.metadata.clone().unwrap_or_default();
            metadata.name = Some(format!(
                "{name}-{template_hash}-{}",
                short_hash(&(index, &template_hash), 5)
            ));
            metadata.namespace = Some(namespace.clone());
            metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(TEMPLATE_HASH_LABEL.to_owned(), template_hash.clone());
            metadata.owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.clone(),
                uid: String::new(),
                controller: Some(true),
                ..OwnerReference::default()
            }]);
            pods.push(Pod {
                metadata,
                spec: spec.template.spec.clone(),
                status: None,
            });
        }
    }
    pods
}

/// The pods of `file` in the order they start: node agents (pods need the CNI configuration
/// they write), then Pods as written, then each Deployment's replicas.
pub fn start_order(file: &LabFile, paths: &LabPaths) -> Vec<ObjectKey> {
    all_pods(file, paths)
        .iter()
        .map(|pod| ObjectKey::of(&pod.metadata))
        .collect()
}

/// Every pod `file` asks for, in start order.
fn all_pods(file: &LabFile, paths: &LabPaths) -> Vec<Pod> {
    let mut pods = agent_pods(file, paths);
    pods.extend(file.pods.iter().cloned());
    pods.extend(deployment_pods(file));
    pods
}

/// The node agent's DaemonSet, one hostNetwork pod per node. A lab with its own CNI
/// configuration (a single node, nothing to route) runs none.
fn agent_pods(file: &LabFile, paths: &LabPaths) -> Vec<Pod> {
    if file.spec.cni.is_some() {
        return Vec::new();
    }
    file.spec
        .nodes
        .iter()
        .map(|node| {
            let dir = paths.node_dir(node);
            let mut args: Vec<String> = [
                "agent",
                "--lab",
                paths.name(),
                "--node",
                node,
                "--backend",
                file.spec.backend.name(),
            ]
            .map(str::to_owned)
            .to_vec();
            if let podnet_agent::Backend::Vxlan { vni, port } = file.spec.backend {
                args.extend([
                    "--vni".into(),
                    vni.to_string(),
                    "--vxlan-port".into(),
                    port.to_string(),
                ]);
            }
            for (flag, path) in [
                ("--cni-conf", dir.join(NODE_CNI_CONF)),
                ("--cni-state-dir", dir.join("cni-state")),
                ("--ipam-dir", dir.join("ipam")),
            ] {
                args.extend([flag.to_owned(), path.display().to_string()]);
            }
            Pod {
                metadata: ObjectMeta {
                    name: Some(format!("{AGENT}-{node}")),
                    namespace: Some("kube-system".into()),
                    labels: Some(BTreeMap::from([("app".to_owned(), AGENT.to_owned())])),
                    ..ObjectMeta::default()
                },
                spec: Some(PodSpec {
                    node_name: Some(node.clone()),
                    host_network: Some(true),
                    containers: vec![Container {
                        name: "agent".into(),
                        image: Some(crate::workload::PODNET_IMAGE.into()),
                        args: Some(args),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
                status: None,
            }
        })
        .collect()
}

/// Gives every unscheduled pod the node with the fewest pods (ties by name).
fn schedule(state: &mut ClusterState) {
    let mut load: HashMap<String, usize> = state.nodes.keys().map(|node| (node.clone(), 0)).collect();
    for pod in state.pods.values() {
        if let Some(node) = pod_node(pod) {
            *load.entry(node.to_owned()).or_default() += 1;
        }
    }
    let node_names: Vec<String> = state.nodes.keys().cloned().collect();
    for pod in state.pods.values_mut() {
        if pod_node(pod).is_some() {
            continue;
        }
        let node = node_names
            .iter()
            .min_by_key(|node| (load[*node], (*node).clone()))
            .expect("a lab has nodes")
            .clone();
        *load.get_mut(&node).expect("known node") += 1;
        pod.spec.as_mut().expect("validated").node_name = Some(node);
    }
}

/// Whether a running pod still matches the file's pod (its node aside, which the scheduler may
/// have filled in).
fn same_spec(running: &Pod, wanted: &Pod) -> bool {
    let mut running_spec = running.spec.clone();
    let wanted_spec = wanted.spec.clone();
    if let (Some(running), Some(wanted)) = (running_spec.as_mut(), wanted_spec.as_ref())
        && wanted.node_name.is_none()
    {
        running.node_name = None;
    }
    running_spec == wanted_spec && running.metadata.labels == wanted.metadata.labels
}

fn new_uid(key: &ObjectKey) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let a = short_hash(&(key, nanos, std::process::id()), 16);
    let b = short_hash(&(nanos, key), 16);
    format!(
        "{}-{}-{}-{}-{}",
        &a[..8],
        &a[8..12],
        &a[12..16],
        &b[..4],
        &b[4..16]
    )
}

/// `length` lower-case alphanumerics derived from `value` (stable across runs).
fn short_hash(value: &impl Hash, length: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut round = 0u64;
    while out.len() < length {
        let mut hasher = Fnv1a::default();
        (round, value).hash(&mut hasher);
        let mut bits = hasher.finish();
        while bits > 0 && out.len() < length {
            out.push(ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char);
            bits /= ALPHABET.len() as u64;
        }
        round += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    fn paths() -> LabPaths {
        LabPaths::new("demo")
    }

    fn file(body: &str) -> LabFile {
        spec::parse(&format!(
            "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: demo\n{body}"
        ))
        .unwrap()
    }

    const TWO_NODES_AND_A_DEPLOYMENT: &str = "spec:\n  nodes: 2\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - {name: nginx, image: nginx}\n";

    #[test]
    fn nodes_get_distinct_subnets_and_addresses() {
        let desired = plan(
            &file(TWO_NODES_AND_A_DEPLOYMENT),
            &ClusterState::default(),
            &paths(),
        )
        .unwrap();
        let cidrs: Vec<_> = desired.nodes.values().map(podnet_model::node_pod_cidrs).collect();
        assert_eq!(cidrs[0][0].to_string(), "10.244.0.0/24");
        assert_eq!(cidrs[1][0].to_string(), "10.244.1.0/24");
        assert_eq!(
            podnet_model::node_address(&desired.nodes["node2"], "InternalIP"),
            Some("192.168.10.12")
        );
        assert_eq!(
            desired.namespaces["default"].metadata.labels.as_ref().unwrap()[NAMESPACE_NAME_LABEL],
            "default"
        );
    }

    #[test]
    fn deployments_expand_to_spread_pods_with_stable_names() {
        let lab = file(TWO_NODES_AND_A_DEPLOYMENT);
        let first = plan(&lab, &ClusterState::default(), &paths()).unwrap();
        assert_eq!(first.pods.len(), 3 + 2, "three replicas and an agent per node");
        let per_node: Vec<usize> = ["node1", "node2"]
            .iter()
            .map(|node| {
                first
                    .pods_on(node)
                    .filter(|(key, _)| key.namespace == "default")
                    .count()
            })
            .collect();
        assert_eq!(per_node.iter().sum::<usize>(), 3);
        assert!(per_node.iter().all(|count| *count >= 1));
        for key in first.pods.keys().filter(|key| key.namespace == "default") {
            assert!(
                key.name.starts_with("web-") && key.name.len() == "web-".len() + 10 + 1 + 5,
                "{key}"
            );
        }
        // Applying the same file again keeps every pod as it is (same uid, same node).
        let second = plan(&lab, &first, &paths()).unwrap();
        assert_eq!(
            first
                .pods
                .values()
                .map(|pod| pod.metadata.uid.clone())
                .collect::<Vec<_>>(),
            second
                .pods
                .values()
                .map(|pod| pod.metadata.uid.clone())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_changed_pod_is_replaced_and_an_unknown_node_or_namespace_refused() {
        let pod = |image: &str| {
            file(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - {{name: c, image: {image}}}\n"
            ))
        };
        let first = plan(&pod("nginx"), &ClusterState::default(), &paths()).unwrap();
        let changed = plan(&pod("traefik/whoami"), &first, &paths()).unwrap();
        let key = first.pods.keys().find(|key| key.name == "p").unwrap();
        assert_ne!(first.pods[key].metadata.uid, changed.pods[key].metadata.uid);

        let refusal = |pod: &str| {
            let text = format!(
                "---\napiVersion: v1\nkind: Pod\n{pod}  containers:\n  - {{name: c, image: nginx}}\n"
            );
            plan(&file(&text), &ClusterState::default(), &paths())
                .unwrap_err()
                .0
        };
        assert!(
            refusal("metadata:\n  name: p\nspec:\n  nodeName: k8s-w9\n").contains("not a node of this lab")
        );
        assert!(
            refusal("metadata:\n  name: p\n  namespace: shop\nspec:\n")
                .contains("namespace \"shop\" does not exist")
        );
        assert!(
            refusal("metadata:\n  name: podnet-agent-node1\n  namespace: kube-system\nspec:\n")
                .contains("pod kube-system/podnet-agent-node1 is defined twice")
        );
    }

    #[test]
    fn every_node_runs_an_agent_pod_on_its_own_network() {
        let desired = plan(
            &file(TWO_NODES_AND_A_DEPLOYMENT),
            &ClusterState::default(),
            &paths(),
        )
        .unwrap();
        let agents: Vec<&Pod> = desired
            .pods
            .values()
            .filter(|pod| pod.metadata.namespace.as_deref() == Some("kube-system"))
            .collect();
        assert_eq!(agents.len(), 2);
        let spec = agents[0].spec.as_ref().unwrap();
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.node_name.as_deref(), Some("node1"));
        let args = spec.containers[0].args.clone().unwrap().join(" ");
        assert!(
            args.starts_with("agent --lab demo --node node1 --backend vxlan --vni 1 --vxlan-port 8472"),
            "{args}"
        );
        let custom = file("spec:\n  cni: {cniVersion: \"1.0.0\", name: net, type: bridge}\n");
        assert!(
            plan(&custom, &ClusterState::default(), &paths())
                .unwrap()
                .pods
                .is_empty()
        );
    }

    #[test]
    fn nodes_keep_their_subnet_when_others_come_and_go() {
        let three = plan(&file("spec:\n  nodes: 3\n"), &ClusterState::default(), &paths()).unwrap();
        let without_first = file("spec:\n  nodes: [{name: node2}, {name: node3}, {name: node4}]\n");
        let next = plan(&without_first, &three, &paths()).unwrap();
        assert_eq!(next.nodes["node2"], three.nodes["node2"]);
        assert_eq!(next.nodes["node3"], three.nodes["node3"]);
        // The new node takes the subnet and address node1 freed.
        assert_eq!(
            podnet_model::node_pod_cidrs(&next.nodes["node4"])[0].to_string(),
            "10.244.0.0/24"
        );
    }
}
