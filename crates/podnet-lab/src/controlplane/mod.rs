//! The lab's embedded control plane: what the API server and the controllers would decide.
//!
//! From the lab file and the state already running it computes the desired cluster: Node
//! objects with a pod subnet each ([`nodes`], the node IPAM controller's job), namespaces, the
//! pods of Deployments ([`workloads`], the ReplicaSet controller's job), the node of every pod
//! ([`scheduler`]), Services with their addresses and ports ([`services`], the API server's
//! allocators and MetalLB's), and the EndpointSlices behind them ([`endpointslices`]). Like a
//! cluster's network add-on, it also runs the node agent on every node as a DaemonSet would: a
//! hostNetwork pod `kube-system/podnet-agent-NODE`; and like kubeadm it installs the cluster's
//! DNS ([`addons`]). Everything here is a pure function, so
//! `lab apply` can diff the result against what runs and touch only what changed.

pub mod addons;
pub mod endpointslices;
pub mod nodes;
pub mod scheduler;
pub mod services;
pub mod workloads;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use podnet_model::{DEFAULT_NAMESPACE, Event, Kind, Object, ObjectKey, pod_node};

pub use nodes::NODE_NETWORK;
pub use workloads::NODE_CNI_CONF;

use crate::cluster::Cluster;
use crate::paths::LabPaths;
use crate::spec::LabFile;

/// Label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Why the file cannot be applied to the running lab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// The desired cluster for `file`, keeping what `running` already decided (node subnets, pod
/// placement and status, service addresses) wherever the file did not change it. Its
/// EndpointSlices are the file's own; the controller's follow the pods ([`slices_for`]). Its
/// NetworkPolicies are the file's, as the API server stores them.
pub fn plan(file: &LabFile, running: &Cluster, paths: &LabPaths) -> Result<Cluster, PlanError> {
    let mut desired = Cluster {
        nodes: nodes::plan(file, running)?,
        namespaces: plan_namespaces(file),
        ..Cluster::default()
    };
    for mut pod in workloads::pods(file, running, paths) {
        let key = ObjectKey::of(&pod.metadata);
        if !desired.namespaces.contains_key(&key.namespace) {
            return Err(missing_namespace(format!("pod {key}"), &key.namespace));
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
            .filter(|previous| previous.metadata.deletion_timestamp.is_none() && same_spec(previous, &pod));
        let pod = match kept {
            Some(previous) if pod_node(previous).is_none_or(|node| desired.nodes.contains_key(node)) => {
                // Labels change in place, as the API server lets them: same pod, same sandbox.
                let mut kept = previous.clone();
                kept.metadata.labels = pod.metadata.labels;
                kept
            }
            _ => {
                pod.metadata.uid = Some(workloads::new_uid(&key));
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
    scheduler::schedule(&mut desired);
    for service in &file.services {
        let key = ObjectKey::of(&service.metadata);
        if !desired.namespaces.contains_key(&key.namespace) {
            return Err(missing_namespace(format!("Service {key}"), &key.namespace));
        }
    }
    desired.services = services::plan(&file.spec, &file.services, running)?;
    desired.endpoint_slices = in_namespaces(&file.endpoint_slices, &desired.namespaces)?;
    desired.network_policies = in_namespaces(&file.network_policies, &desired.namespaces)?;
    Ok(desired)
}

/// Refuses an object (`what`) in a namespace the lab does not have.
fn missing_namespace(what: String, namespace: &str) -> PlanError {
    PlanError(format!(
        "{what}: namespace {namespace:?} does not exist; add a Namespace document for it"
    ))
}

/// The file's `objects` as the cluster stores them, by key and with their namespace filled in;
/// refused when one is in a namespace the cluster does not have.
fn in_namespaces<T>(
    objects: &[T],
    namespaces: &BTreeMap<String, Namespace>,
) -> Result<BTreeMap<ObjectKey, T>, PlanError>
where
    T: Clone + k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    objects
        .iter()
        .map(|object| {
            let key = ObjectKey::of(object.metadata());
            if !namespaces.contains_key(&key.namespace) {
                return Err(missing_namespace(format!("{} {key}", T::KIND), &key.namespace));
            }
            let mut object = object.clone();
            object.metadata_mut().namespace = Some(key.namespace.clone());
            Ok((key, object))
        })
        .collect()
}

/// Brings the controller's EndpointSlices of the services `which` (all when `None`) up to date
/// with the cluster's pods; returns the watch events of what changed. With `None`, slices of
/// services that no longer exist go too. The lab file's own slices are left alone.
pub fn slices_for(cluster: &mut Cluster, which: Option<&[ObjectKey]>) -> Vec<Event> {
    let mut services: BTreeSet<ObjectKey> = match which {
        Some(keys) => keys.iter().cloned().collect(),
        None => cluster.services.keys().cloned().collect(),
    };
    // The controller's slices of each of those services, found in one pass.
    let mut existing: std::collections::HashMap<ObjectKey, Vec<ObjectKey>> = std::collections::HashMap::new();
    for (slice_key, slice) in &cluster.endpoint_slices {
        if !endpointslices::managed(slice) {
            continue;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(crate::spec::SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let service = ObjectKey {
            namespace: slice_key.namespace.clone(),
            name: service.clone(),
        };
        if which.is_none() || services.contains(&service) {
            existing.entry(service).or_default().push(slice_key.clone());
        }
    }
    if which.is_none() {
        services.extend(existing.keys().cloned());
    }
    let mut events = Vec::new();
    for key in services {
        let wanted: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> = match cluster.services.get(&key) {
            Some(service) => endpointslices::for_service(&key, service, &cluster.pods),
            None => Vec::new(),
        };
        let wanted_keys: Vec<ObjectKey> = wanted
            .iter()
            .map(|slice| ObjectKey::of(&slice.metadata))
            .collect();
        for slice_key in existing.remove(&key).unwrap_or_default() {
            if !wanted_keys.contains(&slice_key) {
                events.extend(cluster.remove(Kind::EndpointSlice, &slice_key));
            }
        }
        for slice in wanted {
            events.extend(cluster.put(Object::EndpointSlice(Box::new(slice))));
        }
    }
    events
}

/// The services whose selector picks `pod` (in its namespace).
pub fn services_selecting(cluster: &Cluster, key: &ObjectKey, pod: &Pod) -> Vec<ObjectKey> {
    cluster
        .services
        .iter()
        .filter(|(service_key, service)| endpointslices::selects(service_key, service, key, pod))
        .map(|(service_key, _)| service_key.clone())
        .collect()
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

/// The pods of `file` in the order they start.
pub fn start_order(desired: &Cluster, file: &LabFile, paths: &LabPaths) -> Vec<ObjectKey> {
    let mut order: Vec<ObjectKey> = workloads::pods(file, desired, paths)
        .iter()
        .map(|pod| ObjectKey::of(&pod.metadata))
        .filter(|key| desired.pods.contains_key(key))
        .collect();
    // Replicas named anew by this plan come after those the file names.
    for key in desired.pods.keys() {
        if !order.contains(key) {
            order.push(key.clone());
        }
    }
    order
}

/// Whether a running pod still matches the file's pod (its node aside, which the scheduler may
/// have filled in; its labels aside, which may change on a running pod).
fn same_spec(running: &Pod, wanted: &Pod) -> bool {
    let mut running_spec = running.spec.clone();
    let wanted_spec = wanted.spec.clone();
    if let (Some(running), Some(wanted)) = (running_spec.as_mut(), wanted_spec.as_ref())
        && wanted.node_name.is_none()
    {
        running.node_name = None;
    }
    running_spec == wanted_spec
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
        let desired = plan(&file(TWO_NODES_AND_A_DEPLOYMENT), &Cluster::default(), &paths()).unwrap();
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
        let first = plan(&lab, &Cluster::default(), &paths()).unwrap();
        assert_eq!(first.pods.len(), 3 + 2, "three replicas and an agent per node");
        let per_node: Vec<usize> = ["node1", "node2"]
            .iter()
            .map(|node| {
                first
                    .pods
                    .iter()
                    .filter(|(key, pod)| key.namespace == "default" && pod_node(pod) == Some(*node))
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

        // Scaled down to one, the ready replica stays.
        let mut running = second;
        let ready = running
            .pods
            .keys()
            .filter(|key| key.namespace == "default")
            .nth(2)
            .unwrap()
            .clone();
        running.pods.get_mut(&ready).unwrap().status = Some(k8s_openapi::api::core::v1::PodStatus {
            conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let one = file(&TWO_NODES_AND_A_DEPLOYMENT.replace("replicas: 3", "replicas: 1"));
        let scaled = plan(&one, &running, &paths()).unwrap();
        let replicas: Vec<&ObjectKey> = scaled
            .pods
            .keys()
            .filter(|key| key.namespace == "default")
            .collect();
        assert_eq!(replicas, [&ready]);
    }

    #[test]
    fn a_relabelled_pod_is_kept_with_its_new_labels() {
        let pod = |labels: &str| {
            file(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {labels}\nspec:\n  containers:\n  - {{name: c, image: nginx}}\n"
            ))
        };
        let first = plan(&pod("{app: a}"), &Cluster::default(), &paths()).unwrap();
        let relabelled = plan(&pod("{app: a, role: friend}"), &first, &paths()).unwrap();
        let key = first.pods.keys().find(|key| key.name == "p").unwrap();
        assert_eq!(first.pods[key].metadata.uid, relabelled.pods[key].metadata.uid);
        assert_eq!(
            relabelled.pods[key].metadata.labels,
            Some([("app".into(), "a".into()), ("role".into(), "friend".into())].into())
        );
    }

    #[test]
    fn a_changed_pod_is_replaced_and_an_unknown_node_or_namespace_refused() {
        let pod = |image: &str| {
            file(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - {{name: c, image: {image}}}\n"
            ))
        };
        let first = plan(&pod("nginx"), &Cluster::default(), &paths()).unwrap();
        let changed = plan(&pod("traefik/whoami"), &first, &paths()).unwrap();
        let key = first.pods.keys().find(|key| key.name == "p").unwrap();
        assert_ne!(first.pods[key].metadata.uid, changed.pods[key].metadata.uid);

        let refusal = |pod: &str| {
            let text = format!(
                "---\napiVersion: v1\nkind: Pod\n{pod}  containers:\n  - {{name: c, image: nginx}}\n"
            );
            plan(&file(&text), &Cluster::default(), &paths()).unwrap_err().0
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
        let desired = plan(&file(TWO_NODES_AND_A_DEPLOYMENT), &Cluster::default(), &paths()).unwrap();
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
            args.starts_with("agent --node node1 --lab demo --backend vxlan --vni 1 --vxlan-port 8472"),
            "{args}"
        );
        let custom = file("spec:\n  cni: {cniVersion: \"1.0.0\", name: net, type: bridge}\n");
        assert!(
            plan(&custom, &Cluster::default(), &paths())
                .unwrap()
                .pods
                .is_empty()
        );
    }

    #[test]
    fn nodes_keep_their_subnet_when_others_come_and_go() {
        let three = plan(&file("spec:\n  nodes: 3\n"), &Cluster::default(), &paths()).unwrap();
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

    #[test]
    fn slices_follow_their_service_and_go_with_it() {
        let with_service = file(&format!(
            "{TWO_NODES_AND_A_DEPLOYMENT}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports:\n  - {{port: 80}}\n"
        ));
        let mut cluster = plan(&with_service, &Cluster::default(), &paths()).unwrap();
        let created = slices_for(&mut cluster, None);
        assert_eq!(created.len(), 1, "{created:?}");
        assert_eq!(cluster.endpoint_slices.len(), 1);
        assert!(slices_for(&mut cluster, None).is_empty(), "nothing changed");

        cluster.services.clear();
        let removed = slices_for(&mut cluster, None);
        assert!(
            matches!(removed.as_slice(), [Event::Deleted(Kind::EndpointSlice, _)]),
            "{removed:?}"
        );
        assert!(cluster.endpoint_slices.is_empty());
    }

    #[test]
    fn network_policies_land_in_the_plan_in_their_namespace() {
        let policy = |name: &str, namespace: Option<&str>| {
            let namespace = namespace
                .map(|namespace| format!("  namespace: {namespace}\n"))
                .unwrap_or_default();
            format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n{namespace}spec:\n  podSelector: {{matchLabels: {{app: db}}}}\n  policyTypes: [Ingress]\n"
            )
        };
        let shop = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {team: shop}\n";
        let lab = file(&format!(
            "{shop}{}{}",
            policy("deny", None),
            policy("deny", Some("shop"))
        ));
        let desired = plan(&lab, &Cluster::default(), &paths()).unwrap();
        let keys: Vec<String> = desired.network_policies.keys().map(ToString::to_string).collect();
        assert_eq!(keys, ["default/deny", "shop/deny"]);
        for (key, stored) in &desired.network_policies {
            assert_eq!(stored.metadata.namespace.as_deref(), Some(key.namespace.as_str()));
            assert_eq!(
                stored.spec, lab.network_policies[0].spec,
                "the file's spec, as written"
            );
        }
        let objects = desired.list(Kind::NetworkPolicy);
        assert!(
            objects
                .iter()
                .all(|object| matches!(object, Object::NetworkPolicy(_))),
            "{objects:?}"
        );

        let refused = plan(
            &file(&policy("deny", Some("billing"))),
            &Cluster::default(),
            &paths(),
        )
        .unwrap_err()
        .0;
        assert_eq!(
            refused,
            "NetworkPolicy billing/deny: namespace \"billing\" does not exist; add a Namespace document for it"
        );
    }
}
