//! The Kubernetes API server as a cluster source: what a podnet component reads in a real
//! cluster, where the lab's daemon is replaced by the API server.
//!
//! A watch in Kubernetes is a list (every object and the collection's `resourceVersion`)
//! followed by a stream of ADDED, MODIFIED and DELETED events from that version on; when the
//! stream breaks or the version expires, the client lists again. kube-rs's watcher does that
//! protocol; this module mirrors its events into [`ClusterState`] snapshots. A snapshot is
//! published only once the list is complete: a half-listed cluster would look to the node agent
//! as if nodes had gone, and it would remove their routes.
//!
//! Only Node objects are watched today: they are all the node agent needs (its peers' pod
//! subnets and addresses). Pods and Namespaces stay empty in the snapshots.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config, ResourceExt};
use podnet_model::{ClusterSource, ClusterState};
use tokio::sync::watch;

/// Why the API server cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig file cannot be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Neither a kubeconfig nor the in-cluster service account is available.
    #[error(
        "no Kubernetes API configuration: run inside a pod (service account), set KUBECONFIG, or pass --kubeconfig ({0})"
    )]
    Infer(String),
    /// The client cannot be built from the configuration.
    #[error("Kubernetes client: {0}")]
    Client(String),
}

/// Cluster state from the Kubernetes API server: the cluster's implementation of the source
/// seam.
pub struct KubeSource {
    states: watch::Receiver<Arc<ClusterState>>,
}

impl KubeSource {
    /// Connects with `kubeconfig`, or else as kubectl would: the in-cluster service account,
    /// `$KUBECONFIG`, `~/.kube/config`. Must be called inside a tokio runtime.
    pub async fn connect(kubeconfig: Option<&Path>) -> Result<Self, KubeError> {
        let config = match kubeconfig {
            Some(path) => {
                let invalid = |message: String| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    message,
                };
                let file = Kubeconfig::read_from(path).map_err(|err| invalid(err.to_string()))?;
                Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(|err| invalid(err.to_string()))?
            }
            None => Config::infer()
                .await
                .map_err(|err| KubeError::Infer(err.to_string()))?,
        };
        let client = Client::try_from(config).map_err(|err| KubeError::Client(err.to_string()))?;
        Ok(Self::watch(client))
    }

    /// Watches the cluster through `client` until the source is dropped. Must be called inside a
    /// tokio runtime.
    pub fn watch(client: Client) -> Self {
        let (sender, states) = watch::channel(Arc::new(ClusterState::default()));
        let nodes = watcher::watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
        tokio::spawn(async move {
            let mut mirror = Mirror::default();
            futures::pin_mut!(nodes);
            loop {
                let event = tokio::select! {
                    event = nodes.next() => event,
                    () = sender.closed() => return,
                };
                match event {
                    Some(Ok(event)) => {
                        if mirror.apply(event) {
                            let state = ClusterState {
                                nodes: mirror.live.clone(),
                                ..ClusterState::default()
                            };
                            sender.send_replace(Arc::new(state));
                        }
                    }
                    // The watcher retries with backoff; say why it has to.
                    Some(Err(err)) => tracing::warn!("watching Nodes: {err}"),
                    None => return,
                }
            }
        });
        KubeSource { states }
    }
}

impl ClusterSource for KubeSource {
    fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.states.clone()
    }
}

/// The objects of one kind as the watch describes them, by name.
#[derive(Default)]
struct Mirror<K> {
    /// The complete set, once a list has completed.
    live: BTreeMap<String, K>,
    /// A list in progress: replaces `live` when it completes.
    listing: Option<BTreeMap<String, K>>,
    /// Whether a list has completed since the start.
    synced: bool,
}

impl<K: kube::Resource> Mirror<K> {
    /// Applies one watch event; true when `live` is complete and has changed.
    fn apply(&mut self, event: Event<K>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                self.listing
                    .get_or_insert_default()
                    .insert(object.name_any(), object);
                false
            }
            Event::InitDone => {
                self.live = self.listing.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(object) => {
                self.live.insert(object.name_any(), object);
                self.synced
            }
            Event::Delete(object) => self.live.remove(&object.name_any()).is_some() && self.synced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    fn names(mirror: &Mirror<Node>) -> Vec<&str> {
        mirror.live.keys().map(String::as_str).collect()
    }

    #[test]
    fn nothing_is_published_before_the_first_list_completes() {
        let mut mirror = Mirror::default();
        assert!(!mirror.apply(Event::Init));
        assert!(!mirror.apply(Event::InitApply(node("a"))));
        assert!(names(&mirror).is_empty());
        assert!(mirror.apply(Event::InitDone));
        assert_eq!(names(&mirror), ["a"]);
    }

    #[test]
    fn events_change_the_set_and_a_relist_replaces_it_whole() {
        let mut mirror = Mirror::default();
        for event in [
            Event::Init,
            Event::InitApply(node("a")),
            Event::InitApply(node("b")),
            Event::InitDone,
        ] {
            mirror.apply(event);
        }
        assert!(mirror.apply(Event::Apply(node("c"))));
        assert!(mirror.apply(Event::Delete(node("a"))));
        assert!(
            !mirror.apply(Event::Delete(node("a"))),
            "deleting twice changes nothing"
        );
        assert_eq!(names(&mirror), ["b", "c"]);

        // A relist (the watch expired): the old set stays until the new one is complete, and
        // objects missing from it are gone.
        assert!(!mirror.apply(Event::Init));
        assert!(!mirror.apply(Event::InitApply(node("c"))));
        assert_eq!(names(&mirror), ["b", "c"]);
        assert!(mirror.apply(Event::InitDone));
        assert_eq!(names(&mirror), ["c"]);
    }
}
