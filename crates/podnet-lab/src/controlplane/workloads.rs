//! The pods a lab file asks for: the node agent's DaemonSet, the file's Pods, and the replicas
//! of its Deployments (the ReplicaSet controller's job).

use std::collections::BTreeMap;
use std::hash::Hash;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use podnet_agent::AgentArgs;
use podnet_model::{DEFAULT_NAMESPACE, ObjectKey, pod_node};

use super::endpointslices::pod_ready;
use crate::cluster::Cluster;
use crate::paths::LabPaths;
use crate::spec::LabFile;
use podnet_model::stable_hash::Fnv1a;

/// The node agent's name, as its pods and their label carry it.
const AGENT: &str = "podnet-agent";
/// A node's CNI configuration, in its directory.
pub const NODE_CNI_CONF: &str = "network.conflist";
/// Label the Deployment controller puts on its pods.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Every pod `file` asks for, in start order: node agents (pods need the CNI configuration they
/// write), then Pods as written, then each Deployment's replicas. Replicas already running
/// (same template, live node, not terminating) are kept; missing ones get new names.
pub fn pods(file: &LabFile, running: &Cluster, paths: &LabPaths) -> Vec<Pod> {
    let mut pods = agent_pods(file, paths);
    pods.extend(file.pods.iter().cloned());
    pods.extend(deployment_pods(file, running));
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
            let dir = paths.node_dir(&node.name);
            let mut args = AgentArgs::for_node(&node.name).with_backend(file.spec.backend);
            args.lab = Some(paths.name().to_owned());
            args.cni_conf = Some(dir.join(NODE_CNI_CONF));
            args.cni_state_dir = dir.join("cni-state");
            args.ipam_dir = dir.join("ipam");
            let argv = std::iter::once("agent".to_owned())
                .chain(args.to_argv())
                .collect();
            Pod {
                metadata: ObjectMeta {
                    name: Some(format!("{AGENT}-{}", node.name)),
                    namespace: Some("kube-system".into()),
                    labels: Some(BTreeMap::from([("app".to_owned(), AGENT.to_owned())])),
                    ..ObjectMeta::default()
                },
                spec: Some(PodSpec {
                    node_name: Some(node.name.clone()),
                    host_network: Some(true),
                    containers: vec![Container {
                        name: "agent".into(),
                        image: Some(crate::workload::PODNET_IMAGE.into()),
                        args: Some(argv),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
                status: None,
            }
        })
        .collect()
}

/// The replicas of every Deployment, named like the ReplicaSet controller names them:
/// `DEPLOYMENT-TEMPLATEHASH-SUFFIX`, the suffix random for each new replica.
fn deployment_pods(file: &LabFile, running: &Cluster) -> Vec<Pod> {
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
        let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
        let prefix = format!("{name}-{template_hash}-");
        // Replicas that still run this template on a live node; scaling down keeps the ones the
        // ReplicaSet controller would (scheduled before pending, ready before not), then by name.
        let mut kept: Vec<&Pod> = running
            .pods
            .iter()
            .filter(|(key, pod)| {
                key.namespace == namespace
                    && key.name.starts_with(&prefix)
                    && pod.metadata.deletion_timestamp.is_none()
                    && pod_node(pod).is_none_or(|node| {
                        running.nodes.contains_key(node) && file.spec.nodes.iter().any(|n| n.name == node)
                    })
            })
            .map(|(_, pod)| pod)
            .collect();
        kept.sort_by_key(|pod| (pod_node(pod).is_none(), !pod_ready(pod)));
        kept.truncate(replicas);
        let mut names: Vec<String> = kept.iter().filter_map(|pod| pod.metadata.name.clone()).collect();
        pods.extend(kept.into_iter().cloned());
        while names.len() < replicas {
            let candidate = format!(
                "{prefix}{}",
                short_hash(&(&prefix, names.len(), unique_seed()), 5)
            );
            if names.contains(&candidate)
                || running.pods.contains_key(&ObjectKey {
                    namespace: namespace.clone(),
                    name: candidate.clone(),
                })
            {
                continue;
            }
            let mut metadata = spec.template.metadata.clone().unwrap_or_default();
            metadata.name = Some(candidate.clone());
            metadata.namespace = Some(namespace.clone());
            metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(TEMPLATE_HASH_LABEL.to_owned(), template_hash.clone());
            metadata.owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: format!("{name}-{template_hash}"),
                uid: String::new(),
                controller: Some(true),
                ..OwnerReference::default()
            }]);
            pods.push(Pod {
                metadata,
                spec: spec.template.spec.clone(),
                status: None,
            });
            names.push(candidate);
        }
    }
    pods
}

/// A value that differs on every call, for names that must be new.
fn unique_seed() -> (u128, u32, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    (nanos, std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A new object uid.
pub fn new_uid(key: &ObjectKey) -> String {
    let seed = unique_seed();
    let a = short_hash(&(key, seed), 16);
    let b = short_hash(&(seed, key), 16);
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
pub fn short_hash(value: &impl Hash, length: usize) -> String {
    use std::hash::Hasher;
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
