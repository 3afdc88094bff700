//! The source seam: how a component learns about cluster objects, kind by kind.
//!
//! A component asks a [`ClusterSource`] for the kinds it needs and receives a stream of
//! [`Event`]s, shaped like the Kubernetes watch protocol: for each kind a complete list
//! (`Relisting`, the objects as `Applied`, `Listed`), then changes one object at a time. When a
//! watch breaks, the source lists that kind again; objects missing from the new list are gone.
//! `Synced` arrives once every requested kind has been listed: before it a component's picture
//! is incomplete (a node agent would remove routes of nodes it has not heard of yet), so it
//! must not act on it. Components keep what they need in compact form, not whole objects:
//! [`Mirror`] does the bookkeeping.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;

use crate::ObjectKey;
use crate::object::{Kind, Object};

/// One step of a watch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// A complete list of the kind follows: whatever of it is not applied before `Listed` is
    /// gone.
    Relisting(Kind),
    /// An object was listed, created or changed.
    Applied(Object),
    /// An object was deleted.
    Deleted(Kind, ObjectKey),
    /// The list of the kind is complete.
    Listed(Kind),
    /// Every requested kind has been listed at least once.
    Synced,
}

/// How many events a source keeps ready for a component that has not taken them yet: beyond,
/// the source stops reading, so that a large list (100,000 services) never sits in memory as
/// whole API objects.
pub const WATCH_BUFFER: usize = 256;

/// Where a component gets cluster objects from: the lab's control plane or the Kubernetes API
/// server.
pub trait ClusterSource: Send + Sync {
    /// Watches `kinds`: their lists, then their changes, until the receiver is dropped. The
    /// source reconnects (and relists) on its own when its connection breaks; it holds at most
    /// [`WATCH_BUFFER`] events the receiver has not taken.
    fn watch(&self, kinds: &[Kind]) -> mpsc::Receiver<Event>;
}

/// What [`Mirror::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Keys whose object was added or changed.
    pub applied: Vec<ObjectKey>,
    /// Keys whose object is gone (deleted, or missing from a relist).
    pub deleted: Vec<ObjectKey>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.deleted.is_empty()
    }
}

/// A component's copy of one kind, in whatever compact form `T` it keeps, maintained from
/// watch events (relists included).
#[derive(Debug)]
pub struct Mirror<T> {
    kind: Kind,
    objects: HashMap<ObjectKey, T>,
    /// Keys seen during a relist in progress.
    relisting: Option<HashSet<ObjectKey>>,
}

impl<T: PartialEq> Mirror<T> {
    /// An empty mirror of `kind`.
    pub fn new(kind: Kind) -> Self {
        Mirror {
            kind,
            objects: HashMap::new(),
            relisting: None,
        }
    }

    /// The objects now.
    pub fn objects(&self) -> &HashMap<ObjectKey, T> {
        &self.objects
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<&T> {
        self.objects.get(key)
    }

    /// Applies `event` if it concerns this kind: `convert` turns an object into its compact
    /// form (`None` drops it, as if deleted). Returns what changed: an object whose compact
    /// form is the same as before did not change.
    pub fn apply(&mut self, event: &Event, convert: impl FnOnce(&Object) -> Option<T>) -> Changes {
        let mut changes = Changes::default();
        match event {
            Event::Relisting(kind) if *kind == self.kind => self.relisting = Some(HashSet::new()),
            Event::Applied(object) if object.kind() == self.kind => {
                let key = object.key();
                if let Some(seen) = &mut self.relisting {
                    seen.insert(key.clone());
                }
                match convert(object) {
                    Some(compact) => {
                        if self.objects.get(&key) != Some(&compact) {
                            self.objects.insert(key.clone(), compact);
                            changes.applied.push(key);
                        }
                    }
                    None => {
                        if self.objects.remove(&key).is_some() {
                            changes.deleted.push(key);
                        }
                    }
                }
            }
            Event::Deleted(kind, key) if *kind == self.kind && self.objects.remove(key).is_some() => {
                changes.deleted.push(key.clone());
            }
            Event::Listed(kind) if *kind == self.kind => {
                if let Some(seen) = self.relisting.take() {
                    let gone: Vec<ObjectKey> = self
                        .objects
                        .keys()
                        .filter(|key| !seen.contains(*key))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.objects.remove(&key);
                        changes.deleted.push(key);
                    }
                }
            }
            _ => {}
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str) -> Event {
        Event::Applied(Object::Node(Box::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        })))
    }

    fn names(mirror: &Mirror<()>) -> Vec<String> {
        let mut names: Vec<String> = mirror.objects().keys().map(|key| key.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_relist_removes_what_it_no_longer_lists() {
        let mut mirror = Mirror::new(Kind::Node);
        for event in [
            Event::Relisting(Kind::Node),
            node("a"),
            node("b"),
            Event::Listed(Kind::Node),
        ] {
            mirror.apply(&event, |_| Some(()));
        }
        assert_eq!(names(&mirror), ["a", "b"]);
        mirror.apply(&Event::Relisting(Kind::Node), |_| Some(()));
        mirror.apply(&node("b"), |_| Some(()));
        assert_eq!(
            names(&mirror),
            ["a", "b"],
            "the old picture stays until the list is complete"
        );
        let changes = mirror.apply(&Event::Listed(Kind::Node), |_| Some(()));
        assert_eq!(changes.deleted, [ObjectKey::cluster("a")]);
        assert_eq!(names(&mirror), ["b"]);
    }

    #[test]
    fn events_of_other_kinds_and_unconvertible_objects_are_ignored_or_dropped() {
        let mut mirror = Mirror::new(Kind::Node);
        assert!(mirror.apply(&Event::Listed(Kind::Pod), |_| Some(())).is_empty());
        mirror.apply(&node("a"), |_| Some(()));
        let changes = mirror.apply(&node("a"), |_| None);
        assert_eq!(changes.deleted, [ObjectKey::cluster("a")]);
        assert!(mirror.objects().is_empty());
        assert!(
            mirror
                .apply(
                    &Event::Deleted(Kind::Node, ObjectKey::cluster("zz")),
                    |_| Some(())
                )
                .is_empty()
        );
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = node("a");
        let text = serde_json::to_string(&event).unwrap();
        assert!(text.contains("\"kind\":\"Node\""), "{text}");
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
    }
}
