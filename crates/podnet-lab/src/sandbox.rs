//! Pod sandboxes: what the pause container holds in Kubernetes.
//!
//! A pod's containers share one network namespace (so they talk over `localhost` and cannot
//! bind the same port) and one UTS namespace (so `hostname` is the pod's name). The sandbox owns
//! both: it exists before the first container starts and outlives container restarts. Like
//! containerd, the lab pins the namespaces, brings `lo` up with the loopback plugin and attaches
//! `eth0` by running the node's CNI network list through the CNI protocol. hostNetwork pods
//! use the node's namespaces instead and get no CNI attachment. Every pod also gets its own
//! `/etc/resolv.conf` ([`resolv`]), which its processes see bound over the host's.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use podnet_cni::runtime::{Attachment, NetworkConfigList, Runtime};
use podnet_cni::spec::CniError;
use podnet_model::ObjectKey;
use podnet_netlink::{Netns, UtsNs};
use serde_json::{Value, json};

use crate::failures::Failures;
use crate::kubelet;
use crate::paths::LabPaths;
use crate::reaper;
use crate::resolv::{self, ClusterDns};
use crate::topology::{self, NodeRuntime};

/// The interface name of a pod's network attachment.
const POD_INTERFACE: &str = "eth0";
/// How long a sandbox waits for its node's CNI configuration (the node agent writes it when
/// it starts), as kubelet waits while the network plugin is "not ready".
const NETWORK_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A failure to create or remove a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A namespace operation failed.
    #[error("{0}")]
    Kernel(#[from] podnet_netlink::Error),
    /// A CNI plugin refused.
    #[error("CNI {command}: {error}")]
    Cni {
        /// ADD or DEL.
        command: &'static str,
        /// The plugin's error.
        error: CniError,
    },
    /// A file could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The node has no usable CNI configuration.
    #[error("network not ready: {0}")]
    NetworkNotReady(String),
}

/// A pod's sandbox.
#[derive(Debug)]
pub struct Sandbox {
    /// The network namespace the containers run in.
    pub netns: Arc<Netns>,
    /// The UTS namespace the containers run in.
    pub uts: Arc<UtsNs>,
    /// Its files over the host's (its resolv.conf), as `(source, target)`.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// The pod's IPs.
    pub ips: Vec<IpAddr>,
    /// The CNI container ID, and the ADD result DEL needs back; `None` for hostNetwork pods.
    attachment: Option<(String, Value)>,
}

/// Creates the sandbox of `pod` on `node`. On failure nothing of it is left behind.
pub fn create(
    paths: &LabPaths,
    node: &NodeRuntime,
    runtime: &Runtime,
    key: &ObjectKey,
    pod: &Pod,
    dns: &ClusterDns,
) -> Result<Sandbox, SandboxError> {
    let dir = paths.pod_dir(key);
    std::fs::create_dir_all(&dir)?;
    let resolv_conf = dir.join("resolv.conf");
    let conf = resolv::for_pod(pod, &key.namespace, dns, &topology::node_resolv_conf());
    std::fs::write(&resolv_conf, conf.render())?;
    let files = vec![(resolv_conf, PathBuf::from("/etc/resolv.conf"))];
    if podnet_model::pod_host_network(pod) {
        return Ok(Sandbox {
            netns: node.netns.clone(),
            uts: node.uts.clone(),
            files,
            ips: vec![node.address],
            attachment: None,
        });
    }
    let netns_name = paths.pod_netns(key);
    let netns = Netns::create_named(&netns_name)?;
    let created = (|| {
        let uts = UtsNs::create(&dir.join("uts"), &kubelet::pod_hostname(key, pod))?;
        let id = pod.metadata.uid.clone().unwrap_or_else(|| netns_name.clone());
        let (result, ips) = attach(node, runtime, &netns, &id, pod)?;
        Ok(Sandbox {
            netns: Arc::new(netns),
            uts: Arc::new(uts),
            files,
            ips,
            attachment: Some((id, result)),
        })
    })();
    if created.is_err() {
        let _ = UtsNs::delete(&dir.join("uts"));
        let _ = reaper::delete_netns(&netns_name);
        let _ = std::fs::remove_dir_all(&dir);
    }
    created
}

/// Runs the CNI plugins for a new sandbox, from the node's namespace as a node's runtime would.
fn attach(
    node: &NodeRuntime,
    runtime: &Runtime,
    netns: &Netns,
    id: &str,
    pod: &Pod,
) -> Result<(Value, Vec<IpAddr>), SandboxError> {
    let netns_path: PathBuf = netns.path().to_owned();
    let loopback = NetworkConfigList::parse(
        &json!({"cniVersion": "1.1.0", "name": "cni-loopback", "type": "loopback"}).to_string(),
    )
    .expect("static configuration");
    let lo = Attachment {
        container_id: id,
        netns: &netns_path,
        ifname: "lo",
        args: Vec::new(),
        capabilities: Vec::new(),
    };
    node.netns
        .run(|| runtime.add(&loopback, &lo))?
        .map_err(|error| SandboxError::Cni {
            command: "ADD",
            error,
        })?;
    let network = node_network(node)?;
    let eth0 = pod_attachment(id, &netns_path, pod);
    let (result, parsed) = node
        .netns
        .run(|| runtime.add(&network, &eth0))?
        .map_err(|error| SandboxError::Cni {
            command: "ADD",
            error,
        })?;
    let ips = parsed.ips.iter().map(|ip| ip.address.addr()).collect();
    Ok((result, ips))
}

/// The node's CNI network configuration, once its agent has written it.
fn node_network(node: &NodeRuntime) -> Result<NetworkConfigList, SandboxError> {
    let deadline = Instant::now() + NETWORK_READY_TIMEOUT;
    loop {
        match std::fs::read_to_string(&node.network) {
            Ok(text) => {
                return NetworkConfigList::parse(&text).map_err(|err| {
                    SandboxError::NetworkNotReady(format!("{}: {err}", node.network.display()))
                });
            }
            Err(err) if Instant::now() > deadline => {
                return Err(SandboxError::NetworkNotReady(format!(
                    "node {} has no CNI configuration at {} ({err}); is its agent running? see `podnet lab logs -n kube-system podnet-agent-{}`",
                    node.name,
                    node.network.display(),
                    node.name
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The attachment of a pod's `eth0`: Kubernetes' CNI_ARGS and the pod's host ports.
fn pod_attachment<'a>(id: &'a str, netns: &'a std::path::Path, pod: &Pod) -> Attachment<'a> {
    let key = ObjectKey::of(&pod.metadata);
    let mappings: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|container| container.ports.iter().flatten())
        .filter_map(|port| {
            let host_port = port.host_port?;
            Some(json!({
                "hostPort": host_port,
                "containerPort": port.container_port,
                "protocol": port.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                "hostIP": port.host_ip.clone().unwrap_or_default(),
            }))
        })
        .collect();
    let mut capabilities = Vec::new();
    if !mappings.is_empty() {
        capabilities.push(("portMappings".to_owned(), Value::Array(mappings)));
    }
    Attachment {
        container_id: id,
        netns,
        ifname: POD_INTERFACE,
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), key.namespace),
            ("K8S_POD_NAME".into(), key.name),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), id.to_owned()),
        ],
        capabilities,
    }
}

/// Removes a sandbox: CNI DEL of its attachment (a hostNetwork pod has none), then its
/// namespaces and files. Never stops at the first failure.
pub fn destroy(
    paths: &LabPaths,
    node: &NodeRuntime,
    runtime: &Runtime,
    key: &ObjectKey,
    pod: &Pod,
    sandbox: &Sandbox,
) -> Failures {
    let mut failures = Failures::new();
    if let Some((id, result)) = &sandbox.attachment {
        let eth0 = pod_attachment(id, sandbox.netns.path(), pod);
        match node_network(node) {
            Ok(network) => match node.netns.run(|| runtime.del(&network, &eth0, Some(result))) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => failures.push(format!("CNI DEL: {err}")),
                Err(err) => failures.push(err.to_string()),
            },
            Err(err) => failures.push(err.to_string()),
        }
    }
    // Unmounted and unlinked by path: handles still open elsewhere only keep the emptied
    // namespaces alive until they are dropped.
    let dir = paths.pod_dir(key);
    failures.check("remove the UTS namespace", UtsNs::delete(&dir.join("uts")));
    failures.check(
        "delete the network namespace",
        reaper::delete_netns(&paths.pod_netns(key)),
    );
    if let Err(err) = std::fs::remove_dir_all(&dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        failures.push(format!("{}: {err}", dir.display()));
    }
    failures
}
