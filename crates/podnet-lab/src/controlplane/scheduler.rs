//! The scheduler: a node for every pod that has none, among the nodes its `nodeSelector`
//! allows, the least loaded first. A pod no node fits stays Pending, with the reason the
//! scheduler gives.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use podnet_model::pod_node;

use crate::cluster::Cluster;

/// Gives every unscheduled pod a node; marks the pods no node fits Pending.
pub fn schedule(cluster: &mut Cluster) {
    let mut load: HashMap<String, usize> = cluster.nodes.keys().map(|node| (node.clone(), 0)).collect();
    for pod in cluster.pods.values() {
        if let Some(node) = pod_node(pod) {
            *load.entry(node.to_owned()).or_default() += 1;
        }
    }
    let nodes: Vec<(String, std::collections::BTreeMap<String, String>)> = cluster
        .nodes
        .iter()
        .map(|(name, node)| (name.clone(), node.metadata.labels.clone().unwrap_or_default()))
        .collect();
    for pod in cluster.pods.values_mut() {
        if pod_node(pod).is_some() {
            continue;
        }
        let selector = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_selector.clone())
            .unwrap_or_default();
        let fitting = nodes
            .iter()
            .filter(|(_, labels)| selector.iter().all(|(key, value)| labels.get(key) == Some(value)))
            .map(|(name, _)| name)
            .min_by_key(|name| (load[*name], (*name).clone()));
        match fitting {
            Some(node) => {
                *load.get_mut(node).expect("known node") += 1;
                pod.spec.as_mut().expect("validated").node_name = Some(node.clone());
                if pod
                    .status
                    .as_ref()
                    .is_some_and(|status| status.phase.as_deref() == Some("Pending"))
                {
                    pod.status = None;
                }
            }
            None => pod.status = Some(unschedulable(nodes.len())),
        }
    }
}

/// Why no node fits, as the scheduler says it.
fn unschedulable(nodes: usize) -> PodStatus {
    PodStatus {
        phase: Some("Pending".into()),
        conditions: Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(format!(
                "0/{nodes} nodes are available: {nodes} node(s) didn't match Pod's node affinity/selector."
            )),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    }
}

/// Why `pod` is not scheduled, when it is not.
pub fn pending_reason(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == "PodScheduled" && condition.status == "False")
        .and_then(|condition| condition.message.clone())
}
