//! The podnet lab: a multi-node Kubernetes network on one Linux host.
//!
//! Nodes and pods are network namespaces, containers are processes inside them, and a small
//! embedded control plane plays the API server and controllers. Everything runs on the real
//! kernel: pods are wired by podnet's CNI plugins, invoked through the CNI protocol exactly as
//! containerd would invoke them.
//!
//! Layout: [`spec`] reads lab files; [`controlplane`] decides (pure) what the [`cluster`]
//! should hold; [`daemon`] owns a running lab, using [`topology`] for nodes, [`sandbox`] for
//! pods, [`kubelet`] and [`containers`] for processes, and [`reaper`] for teardown; [`client`]
//! is the command line's side of [`protocol`], [`source`] the node agents' side.

pub mod agnhost;
pub mod builtin;
pub mod client;
pub mod cluster;
pub mod containers;
pub mod controlplane;
pub mod daemon;
pub mod failures;
pub mod kubelet;
pub mod paths;
pub mod protocol;
pub mod reaper;
pub mod resolv;
pub mod sandbox;
pub mod sctp;
pub mod source;
pub mod spec;
pub mod topology;
pub mod workload;

/// Installs podnet's CNI plugins into the lab's CNI bin directory.
pub fn install_cni_plugins(paths: &paths::LabPaths) -> Result<(), podnet_cni::InstallError> {
    podnet_cni::install(&paths.cni_bin(), true).map(drop)
}
