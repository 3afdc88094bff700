//! The lab daemon's control protocol on the lab's Unix socket: one JSON request per connection,
//! answered by one JSON response, or, for `Watch`, by a stream of watch events, one JSON line
//! each (the lab's side of the source seam: lists, then changes, kind by kind).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::{Deserialize, Serialize};

use podnet_model::Kind;

use crate::containers::ContainerStatus;

/// A request to the lab daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Report nodes and pods.
    Status,
    /// Change the lab to match this lab file.
    Apply {
        /// The lab file's text.
        file: String,
    },
    /// Where and how to run a command in a pod's container.
    Exec {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The container; the first one when `None`.
        container: Option<String>,
    },
    /// The objects of a kind, as the lab's API server stores them.
    Get {
        /// The kind.
        kind: Kind,
        /// Only this namespace's, when given.
        namespace: Option<String>,
        /// Only the object of this name, when given.
        name: Option<String>,
    },
    /// Tear everything down and exit.
    Down,
    /// Stream watch events of these kinds (one JSON line each) until the connection closes:
    /// the source seam as node agents in the lab see it.
    Watch {
        /// The kinds to list and watch.
        kinds: Vec<Kind>,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The lab's state.
    Status(LabStatus),
    /// What an apply changed.
    Applied(Vec<String>),
    /// A container to exec in.
    Exec(ExecTarget),
    /// Objects.
    Objects(Vec<podnet_model::Object>),
    /// Done.
    Ok,
    /// The request failed.
    Error(String),
}

/// What `podnet lab status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabStatus {
    /// The lab's name.
    pub name: String,
    /// The cluster's pod CIDR.
    pub pod_cidr: String,
    /// How pods on different nodes reach each other (`vxlan`, `host-gw`, or `custom CNI configuration`).
    pub backend: String,
    /// The nodes.
    pub nodes: Vec<NodeRow>,
    /// The pods.
    pub pods: Vec<PodRow>,
    /// The services.
    pub services: Vec<ServiceRow>,
}

/// One service's row, as `kubectl get services` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRow {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// ClusterIP, NodePort, LoadBalancer or ExternalName.
    pub kind: String,
    /// Its ClusterIP, `None` for a headless service.
    pub cluster_ip: String,
    /// Load-balancer and external addresses, or the external name.
    pub external: String,
    /// `80/TCP`, `80:31000/TCP`.
    pub ports: String,
}

/// One node's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRow {
    /// The node's name.
    pub name: String,
    /// Its underlay address.
    pub address: String,
    /// Its pod subnet.
    pub pod_cidr: String,
    /// Its network namespace.
    pub netns: String,
}

/// One pod's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRow {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Its node.
    pub node: String,
    /// Its IPs.
    pub ips: Vec<String>,
    /// Its network namespace.
    pub netns: String,
    /// Its containers.
    pub containers: Vec<ContainerStatus>,
    /// `Running`, `Pending`, `Terminating`, `ContainerCreating`, `CrashLoopBackOff`, ..., as
    /// `kubectl get pods` says.
    pub phase: String,
    /// Why the pod is not running, when it is not.
    pub message: Option<String>,
}

/// Where to run a command: the container's namespaces and environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecTarget {
    /// The sandbox's network namespace.
    pub netns: String,
    /// The sandbox's UTS namespace pin.
    pub uts: String,
    /// The sandbox's files over the host's (its resolv.conf), as `(source, target)`.
    pub files: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    /// The container's environment.
    pub env: Vec<(String, String)>,
}

/// Sends `request` to the daemon listening on `socket` and returns its response.
pub fn call(socket: &Path, request: &Request) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(socket)?;
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))
}
