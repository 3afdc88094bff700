//! The kinds of Kubernetes objects podnet reads, as one type.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::ObjectKey;

/// A kind of object a component can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `v1/Node`: a node's addresses and pod subnet.
    Node,
    /// `v1/Namespace`: its labels (NetworkPolicy selects namespaces by them).
    Namespace,
    /// `v1/Pod`: its node, addresses, labels and readiness.
    Pod,
    /// `v1/Service`: a stable address and ports in front of pods.
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`: the addresses behind a service.
    EndpointSlice,
    /// `networking.k8s.io/v1/NetworkPolicy`: which traffic pods accept and send.
    NetworkPolicy,
}

impl Kind {
    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::Namespace)
    }
}

/// One object of any kind podnet reads (boxed: objects are large and travel through channels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "object")]
pub enum Object {
    /// A Node.
    Node(Box<Node>),
    /// A Namespace.
    Namespace(Box<Namespace>),
    /// A Pod.
    Pod(Box<Pod>),
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// A NetworkPolicy.
    NetworkPolicy(Box<NetworkPolicy>),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Node(node) => &node.metadata,
            Object::Namespace(namespace) => &namespace.metadata,
            Object::Pod(pod) => &pod.metadata,
            Object::Service(service) => &service.metadata,
            Object::EndpointSlice(slice) => &slice.metadata,
            Object::NetworkPolicy(policy) => &policy.metadata,
        }
    }

    /// The object's key: namespace (empty for cluster-scoped kinds) and name.
    pub fn key(&self) -> ObjectKey {
        if self.kind().namespaced() {
            ObjectKey::of(self.metadata())
        } else {
            ObjectKey::cluster(self.metadata().name.as_deref().unwrap_or_default())
        }
    }
}
