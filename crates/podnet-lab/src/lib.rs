//! The podnet lab: a multi-node Kubernetes network on one Linux host.
//!
//! Nodes and pods are network namespaces, containers are processes inside them, and a small
//! embedded control plane plays the API server and controllers. Everything runs on the real
//! kernel: pods are wired by podnet's CNI plugins, invoked through the CNI protocol exactly as
//! containerd would invoke them.
//!
//! Layout: [`spec`] reads lab files; [`controlplane`] decides (pure); [`daemon`] owns a running
//! lab, using [`topology`] for nodes, [`sandbox`] for pods, [`containers`] for processes and
//! [`reaper`] for teardown; [`client`] is the command line's side of [`protocol`].

pub mod builtin;
pub mod client;
pub mod containers;
pub mod controlplane;
pub mod daemon;
pub mod paths;
pub mod protocol;
pub mod reaper;
pub mod sandbox;
pub mod spec;
mod stable_hash;
pub mod topology;
pub mod workload;

/// Links podnet's CNI plugins into the lab's CNI bin directory.
pub fn install_cni_plugins(paths: &paths::LabPaths) -> Result<(), podnet_cni::InstallError> {
    podnet_cni::install(&paths.cni_bin(), true)
}
