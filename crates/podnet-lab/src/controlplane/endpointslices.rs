//! The EndpointSlice controller: for every service with a selector, the ready (and not ready,
//! and terminating) pods behind each of its ports, at most 100 to a slice.
//!
//! A pod matching the selector in the service's namespace is an endpoint once it has an IP.
//! Its conditions come from the pod: `serving` is its readiness, `terminating` its deletion,
//! and `ready` is serving and not terminating (or always, with `publishNotReadyAddresses`).
//! A named `targetPort` is resolved on each pod; a pod that lacks the name is no endpoint of
//! that port, so pods are grouped into slices by the ports they resolve to.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_model::{ObjectKey, pod_finished, pod_ips, pod_node};

use super::workloads::short_hash;
use crate::spec::SERVICE_NAME_LABEL;

/// The most endpoints the controller puts in one slice (its default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label naming who manages a slice.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The controller's name in that label.
const CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// Whether the controller manages slices for `service`.
pub fn manages(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        spec.type_.as_deref() != Some("ExternalName")
            && spec
                .selector
                .as_ref()
                .is_some_and(|selector| !selector.is_empty())
    })
}

/// Whether `pod` is selected by `service` (same namespace, every selector label).
pub fn selects(key: &ObjectKey, service: &Service, pod_key: &ObjectKey, pod: &Pod) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|spec| spec.selector.as_ref()) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    pod_key.namespace == key.namespace
        && !selector.is_empty()
        && selector
            .iter()
            .all(|(label, value)| labels.and_then(|labels| labels.get(label)) == Some(value))
}

/// The slices of `service` for the `pods` of the cluster.
pub fn for_service<'a>(
    key: &ObjectKey,
    service: &Service,
    pods: impl IntoIterator<Item = (&'a ObjectKey, &'a Pod)>,
) -> Vec<EndpointSlice> {
    if !manages(service) {
        return Vec::new();
    }
    let spec = service.spec.as_ref().expect("managed services have a spec");
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let service_ports = spec.ports.as_deref().unwrap_or_default();
    // Pods grouped by the ports they resolve to.
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    let mut selected: Vec<(&ObjectKey, &Pod)> = pods
        .into_iter()
        .filter(|(pod_key, pod)| selects(key, service, pod_key, pod))
        .collect();
    selected.sort_by_key(|(pod_key, _)| *pod_key);
    for (pod_key, pod) in selected {
        let Some(endpoint) = endpoint(pod_key, pod, &key.name, publish_not_ready) else {
            continue;
        };
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|port| resolve(port, pod))
            .collect();
        let group = serde_json::to_string(&ports).expect("ports serialize");
        groups
            .entry(group)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint);
    }
    if groups.is_empty() {
        // A service without endpoints still has its (empty) slice.
        groups.insert(String::new(), (Vec::new(), Vec::new()));
    }
    let mut slices = Vec::new();
    for (group, (ports, endpoints)) in groups {
        let chunks: Vec<Vec<Endpoint>> = if endpoints.is_empty() {
            vec![Vec::new()]
        } else {
            endpoints
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .map(<[Endpoint]>::to_vec)
                .collect()
        };
        for (index, endpoints) in chunks.into_iter().enumerate() {
            slices.push(slice(key, service, &group, index, ports.clone(), endpoints));
        }
    }
    slices
}

/// The endpoint of `pod`, when it has an IP and has not finished.
fn endpoint(key: &ObjectKey, pod: &Pod, service: &str, publish_not_ready: bool) -> Option<Endpoint> {
    let address = pod_ips(pod).into_iter().find(|ip| ip.is_ipv4())?;
    if pod_finished(pod) {
        return None;
    }
    let serving = pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let spec = pod.spec.as_ref();
    let hostname = spec
        .filter(|spec| spec.subdomain.as_deref() == Some(service))
        .and_then(|spec| spec.hostname.clone());
    Some(Endpoint {
        addresses: vec![address.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(publish_not_ready || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname,
        node_name: pod_node(pod).map(str::to_owned),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    })
}

/// Whether the pod's `Ready` condition is true.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

/// A service port as it reaches `pod`: its target port resolved, or none when the pod lacks
/// the named port.
fn resolve(port: &ServicePort, pod: &Pod) -> Option<EndpointPort> {
    let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(number)) => *number,
        Some(IntOrString::String(name)) => {
            pod.spec
                .iter()
                .flat_map(|spec| &spec.containers)
                .flat_map(|container| container.ports.iter().flatten())
                .find(|container_port| {
                    container_port.name.as_deref() == Some(name.as_str())
                        && container_port.protocol.as_deref().unwrap_or("TCP") == protocol
                })?
                .container_port
        }
    };
    Some(EndpointPort {
        name: Some(port.name.clone().unwrap_or_default()),
        port: Some(number),
        protocol: Some(protocol),
        app_protocol: port.app_protocol.clone(),
    })
}

fn slice(
    key: &ObjectKey,
    service: &Service,
    group: &str,
    index: usize,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), key.name.clone());
    labels.insert(MANAGED_BY_LABEL.to_owned(), CONTROLLER.to_owned());
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", key.name, short_hash(&(group, index), 5))),
            namespace: Some(key.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: key.name.clone(),
                uid: service.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: (!ports.is_empty()).then_some(ports),
    }
}

/// Whether `slice` was made by this controller (the lab file's own slices are not).
pub fn managed(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == CONTROLLER)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServiceSpec};

    use super::*;

    fn pod(index: usize, ready: bool) -> (ObjectKey, Pod) {
        let key = ObjectKey {
            namespace: "default".into(),
            name: format!("web-{index:03}"),
        };
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some("default".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node1".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(format!("10.244.{}.{}", index / 200, index % 200 + 2)),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        };
        (key, pod)
    }

    fn service() -> (ObjectKey, Service) {
        let service = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_owned(), "web".to_owned())].into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        (ObjectKey::of(&service.metadata), service)
    }

    #[test]
    fn at_most_a_hundred_endpoints_go_to_a_slice() {
        let pods: Vec<(ObjectKey, Pod)> = (0..250).map(|index| pod(index, true)).collect();
        let (key, service) = service();
        let slices = for_service(&key, &service, pods.iter().map(|(key, pod)| (key, pod)));
        let sizes: Vec<usize> = slices.iter().map(|slice| slice.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let names: std::collections::BTreeSet<_> =
            slices.iter().map(|slice| slice.metadata.name.clone()).collect();
        assert_eq!(names.len(), 3, "distinct names");
    }

    #[test]
    fn conditions_follow_readiness_deletion_and_publish_not_ready() {
        let (_, mut terminating) = pod(1, true);
        terminating.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let key = ObjectKey::of(&terminating.metadata);
        let conditions =
            |publish: bool, pod: &Pod| endpoint(&key, pod, "web", publish).unwrap().conditions.unwrap();
        let terminating_conditions = conditions(false, &terminating);
        assert_eq!(
            (
                terminating_conditions.ready,
                terminating_conditions.serving,
                terminating_conditions.terminating
            ),
            (Some(false), Some(true), Some(true))
        );
        let (_, unready) = pod(2, false);
        assert_eq!(conditions(false, &unready).ready, Some(false));
        assert_eq!(conditions(true, &unready).ready, Some(true));
        let (_, mut no_ip) = pod(3, true);
        no_ip.status.as_mut().unwrap().pod_ip = None;
        assert!(
            endpoint(&key, &no_ip, "web", false).is_none(),
            "no IP, no endpoint"
        );
    }
}
