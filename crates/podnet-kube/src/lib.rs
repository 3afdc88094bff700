//! The Kubernetes API server as a cluster source: what a podnet component reads in a real
//! cluster, where the lab's daemon is replaced by the API server.
//!
//! A watch in Kubernetes is a list (every object and the collection's `resourceVersion`)
//! followed by a stream of ADDED, MODIFIED and DELETED events from that version on; when the
//! stream breaks or the version expires (`410 Gone`), the client lists again. kube-rs's watcher
//! does that protocol, one watcher per kind; this module turns its events into the source
//! seam's ([`Event`]) and says `Synced` once every kind has been listed completely: before
//! that, a half-listed cluster would look to the node agent as if nodes or services had gone.

use std::collections::HashSet;
use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use podnet_model::{ClusterSource, Event, Kind, Object, WATCH_BUFFER};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

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

/// Cluster objects from the Kubernetes API server: the cluster's implementation of the source
/// seam.
pub struct KubeSource {
    client: Client,
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
        Ok(KubeSource { client })
    }
}

impl ClusterSource for KubeSource {
    /// One watcher per kind, behind a barrier: `Synced` once each has listed. Must be called
    /// inside a tokio runtime.
    fn watch(&self, kinds: &[Kind]) -> mpsc::Receiver<Event> {
        let (sender, events) = mpsc::channel(WATCH_BUFFER);
        let barrier = Barrier::new(kinds);
        for kind in kinds {
            let (client, sender, barrier) = (self.client.clone(), sender.clone(), barrier.clone());
            match kind {
                Kind::Node => spawn_watcher::<Node>(client, sender, barrier),
                Kind::Namespace => spawn_watcher::<Namespace>(client, sender, barrier),
                Kind::Pod => spawn_watcher::<Pod>(client, sender, barrier),
                Kind::Service => spawn_watcher::<Service>(client, sender, barrier),
                Kind::EndpointSlice => spawn_watcher::<EndpointSlice>(client, sender, barrier),
                Kind::NetworkPolicy => spawn_watcher::<NetworkPolicy>(client, sender, barrier),
            }
        }
        events
    }
}

/// A kind podnet watches, and how its objects become the seam's.
trait Watched:
    kube::Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    /// The seam's kind.
    const KIND: Kind;
    /// The seam's object.
    fn object(self) -> Object;
}

macro_rules! watched {
    ($($type:ident),*) => {$(
        impl Watched for $type {
            const KIND: Kind = Kind::$type;
            fn object(self) -> Object {
                Object::$type(Box::new(self))
            }
        }
    )*};
}

watched!(Node, Namespace, Pod, Service, EndpointSlice, NetworkPolicy);

/// Says `Synced` once every kind has been listed.
#[derive(Clone)]
struct Barrier {
    waiting: Arc<Mutex<Option<HashSet<Kind>>>>,
}

impl Barrier {
    fn new(kinds: &[Kind]) -> Self {
        Barrier {
            waiting: Arc::new(Mutex::new(Some(kinds.iter().copied().collect()))),
        }
    }

    /// `kind` has listed (its `Listed` is sent); true when it was the last one.
    fn listed(&self, kind: Kind) -> bool {
        let mut waiting = self.waiting.lock().expect("barrier lock");
        let Some(kinds) = waiting.as_mut() else {
            return false;
        };
        kinds.remove(&kind);
        if kinds.is_empty() {
            *waiting = None;
            return true;
        }
        false
    }
}

/// Turns one kube-rs watcher event into the seam's.
fn translate<K: Watched>(event: watcher::Event<K>) -> Event {
    match event {
        watcher::Event::Init => Event::Relisting(K::KIND),
        watcher::Event::InitApply(object) | watcher::Event::Apply(object) => Event::Applied(object.object()),
        watcher::Event::InitDone => Event::Listed(K::KIND),
        watcher::Event::Delete(object) => {
            let object = object.object();
            Event::Deleted(K::KIND, object.key())
        }
    }
}

fn spawn_watcher<K: Watched>(client: Client, sender: mpsc::Sender<Event>, barrier: Barrier) {
    let stream = watcher::watcher(Api::<K>::all(client), watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = sender.closed() => return,
            };
            match event {
                Some(Ok(event)) => {
                    let event = translate(event);
                    let listed = event == Event::Listed(K::KIND);
                    if sender.send(event).await.is_err() {
                        return;
                    }
                    if listed && barrier.listed(K::KIND) && sender.send(Event::Synced).await.is_err() {
                        return;
                    }
                }
                // The watcher retries with backoff; say why it has to.
                Some(Err(err)) => tracing::warn!("watching {:?}s: {err}", K::KIND),
                None => return,
            }
        }
    });
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

    #[test]
    fn watcher_events_become_the_seams() {
        assert_eq!(
            translate::<Node>(watcher::Event::Init),
            Event::Relisting(Kind::Node)
        );
        assert_eq!(
            translate::<Node>(watcher::Event::InitDone),
            Event::Listed(Kind::Node)
        );
        assert_eq!(
            translate(watcher::Event::Delete(node("a"))),
            Event::Deleted(Kind::Node, podnet_model::ObjectKey::cluster("a"))
        );
        assert!(matches!(
            translate(watcher::Event::Apply(node("a"))),
            Event::Applied(Object::Node(_))
        ));
    }

    #[test]
    fn network_policies_are_namespaced_objects_of_their_own_kind() {
        let policy = NetworkPolicy {
            metadata: ObjectMeta {
                name: Some("deny".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            ..NetworkPolicy::default()
        };
        assert!(matches!(
            translate(watcher::Event::Apply(policy.clone())),
            Event::Applied(Object::NetworkPolicy(_))
        ));
        assert_eq!(
            translate(watcher::Event::Delete(policy)),
            Event::Deleted(
                Kind::NetworkPolicy,
                podnet_model::ObjectKey {
                    namespace: "shop".into(),
                    name: "deny".into(),
                }
            )
        );
    }

    #[test]
    fn synced_comes_once_every_kind_has_listed_and_only_once() {
        let barrier = Barrier::new(&[Kind::Node, Kind::Service]);
        assert!(!barrier.listed(Kind::Node));
        assert!(!barrier.listed(Kind::Node), "a relist of one kind is not enough");
        assert!(barrier.listed(Kind::Service));
        assert!(!barrier.listed(Kind::Service), "later relists say nothing more");
    }
}
