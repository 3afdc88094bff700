//! The lab's objects, stored as an API server stores them, and the changes watchers are told.
//!
//! Every write goes through [`Cluster::put`], [`Cluster::remove`] or [`Cluster::replace`], which
//! compare the new object with the stored one and return the watch events of what really
//! changed: the daemon publishes exactly those, so a node agent hears about one pod's new
//! status, not about the whole cluster again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use podnet_model::{Event, Kind, Object, ObjectKey};

/// The lab's objects by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods.
    pub pods: BTreeMap<ObjectKey, Pod>,
    /// Services.
    pub services: BTreeMap<ObjectKey, Service>,
    /// EndpointSlices.
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// NetworkPolicies.
    pub network_policies: BTreeMap<ObjectKey, NetworkPolicy>,
}

impl Cluster {
    /// Every object of `kind`, as a watch lists them.
    pub fn list(&self, kind: Kind) -> Vec<Object> {
        match kind {
            Kind::Node => self
                .nodes
                .values()
                .cloned()
                .map(|node| Object::Node(Box::new(node)))
                .collect(),
            Kind::Namespace => self
                .namespaces
                .values()
                .cloned()
                .map(|namespace| Object::Namespace(Box::new(namespace)))
                .collect(),
            Kind::Pod => self
                .pods
                .values()
                .cloned()
                .map(|pod| Object::Pod(Box::new(pod)))
                .collect(),
            Kind::Service => self
                .services
                .values()
                .cloned()
                .map(|service| Object::Service(Box::new(service)))
                .collect(),
            Kind::EndpointSlice => self
                .endpoint_slices
                .values()
                .cloned()
                .map(|slice| Object::EndpointSlice(Box::new(slice)))
                .collect(),
            Kind::NetworkPolicy => self
                .network_policies
                .values()
                .cloned()
                .map(|policy| Object::NetworkPolicy(Box::new(policy)))
                .collect(),
        }
    }

    /// Stores `object`; the event when it is new or different.
    pub fn put(&mut self, object: Object) -> Option<Event> {
        let key = object.key();
        let changed = match &object {
            Object::Node(node) => store(&mut self.nodes, key.name.clone(), node),
            Object::Namespace(namespace) => store(&mut self.namespaces, key.name.clone(), namespace),
            Object::Pod(pod) => store(&mut self.pods, key, pod),
            Object::Service(service) => store(&mut self.services, key, service),
            Object::EndpointSlice(slice) => store(&mut self.endpoint_slices, key, slice),
            Object::NetworkPolicy(policy) => store(&mut self.network_policies, key, policy),
        };
        changed.then_some(Event::Applied(object))
    }

    /// Removes an object; the event when it existed.
    pub fn remove(&mut self, kind: Kind, key: &ObjectKey) -> Option<Event> {
        let removed = match kind {
            Kind::Node => self.nodes.remove(&key.name).is_some(),
            Kind::Namespace => self.namespaces.remove(&key.name).is_some(),
            Kind::Pod => self.pods.remove(key).is_some(),
            Kind::Service => self.services.remove(key).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            Kind::NetworkPolicy => self.network_policies.remove(key).is_some(),
        };
        removed.then(|| Event::Deleted(kind, key.clone()))
    }

    /// Makes the objects of `kinds` those of `desired`; the events of what changed, kind by
    /// kind (nodes and namespaces first, as a cluster creates them first). Only what changed
    /// is copied.
    pub fn replace(&mut self, desired: &Cluster, kinds: &[Kind]) -> Vec<Event> {
        let mut events = Vec::new();
        for kind in kinds {
            let cluster_key = |name: &String| ObjectKey::cluster(name);
            let key = |key: &ObjectKey| key.clone();
            events.extend(match kind {
                Kind::Node => replace(&mut self.nodes, &desired.nodes, *kind, cluster_key, |node| {
                    Object::Node(Box::new(node))
                }),
                Kind::Namespace => replace(
                    &mut self.namespaces,
                    &desired.namespaces,
                    *kind,
                    cluster_key,
                    |namespace| Object::Namespace(Box::new(namespace)),
                ),
                Kind::Pod => replace(&mut self.pods, &desired.pods, *kind, key, |pod| {
                    Object::Pod(Box::new(pod))
                }),
                Kind::Service => replace(&mut self.services, &desired.services, *kind, key, |service| {
                    Object::Service(Box::new(service))
                }),
                Kind::EndpointSlice => replace(
                    &mut self.endpoint_slices,
                    &desired.endpoint_slices,
                    *kind,
                    key,
                    |slice| Object::EndpointSlice(Box::new(slice)),
                ),
                Kind::NetworkPolicy => replace(
                    &mut self.network_policies,
                    &desired.network_policies,
                    *kind,
                    key,
                    |policy| Object::NetworkPolicy(Box::new(policy)),
                ),
            });
        }
        events
    }
}

/// Makes `current` equal to `desired`: removals first, then what is new or different.
fn replace<K: Ord + Clone, T: Clone + PartialEq>(
    current: &mut BTreeMap<K, T>,
    desired: &BTreeMap<K, T>,
    kind: Kind,
    object_key: impl Fn(&K) -> ObjectKey,
    object: impl Fn(T) -> Object,
) -> Vec<Event> {
    let mut events = Vec::new();
    current.retain(|key, _| {
        let wanted = desired.contains_key(key);
        if !wanted {
            events.push(Event::Deleted(kind, object_key(key)));
        }
        wanted
    });
    for (key, wanted) in desired {
        if store(current, key.clone(), wanted) {
            events.push(Event::Applied(object(wanted.clone())));
        }
    }
    events
}

/// Inserts `object` under `key` unless an equal one is there; whether it changed anything.
fn store<K: Ord, T: Clone + PartialEq>(map: &mut BTreeMap<K, T>, key: K, object: &T) -> bool {
    if map.get(&key) == Some(object) {
        return false;
    }
    map.insert(key, object.clone());
    true
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(name: &str, node: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn only_real_changes_become_events() {
        let mut cluster = Cluster::default();
        assert!(cluster.put(Object::Pod(Box::new(pod("a", "n1")))).is_some());
        assert!(
            cluster.put(Object::Pod(Box::new(pod("a", "n1")))).is_none(),
            "unchanged"
        );
        assert!(cluster.put(Object::Pod(Box::new(pod("a", "n2")))).is_some());
        let key = ObjectKey {
            namespace: "default".into(),
            name: "a".into(),
        };
        assert_eq!(
            cluster.remove(Kind::Pod, &key),
            Some(Event::Deleted(Kind::Pod, key.clone()))
        );
        assert_eq!(cluster.remove(Kind::Pod, &key), None);
    }

    #[test]
    fn replace_reports_additions_changes_and_removals() {
        let mut running = Cluster::default();
        running.put(Object::Pod(Box::new(pod("a", "n1"))));
        running.put(Object::Pod(Box::new(pod("b", "n1"))));
        let mut desired = Cluster::default();
        desired.put(Object::Pod(Box::new(pod("b", "n2"))));
        desired.put(Object::Pod(Box::new(pod("c", "n1"))));
        let events = running.replace(&desired, &[Kind::Pod]);
        let described: Vec<String> = events
            .iter()
            .map(|event| match event {
                Event::Applied(object) => format!("apply {}", object.key()),
                Event::Deleted(_, key) => format!("delete {key}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            described,
            ["delete default/a", "apply default/b", "apply default/c"]
        );
        assert_eq!(running, desired);
    }
}
