//! Where a lab keeps its state, and how its namespaces are named.
//!
//! Everything a lab creates is findable from its name alone, so `lab down` can clean up even
//! after the lab's daemon died: namespaces are named `LAB_NODE` and `LAB_NAMESPACE_POD` (`_`
//! never occurs in Kubernetes names, so one lab's names never match another's), and files live
//! under `/run/podnet/labs/LAB`, which vanishes on reboot together with the namespaces.

use std::path::{Path, PathBuf};

use podnet_model::ObjectKey;

/// The directory holding every lab's state.
pub const LABS_DIR: &str = "/run/podnet/labs";

/// The state directory and namespace names of one lab.
#[derive(Debug, Clone)]
pub struct LabPaths {
    name: String,
    root: PathBuf,
}

impl LabPaths {
    /// The paths of lab `name`.
    pub fn new(name: &str) -> Self {
        LabPaths {
            name: name.to_owned(),
            root: Path::new(LABS_DIR).join(name),
        }
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The daemon's control socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// The daemon's log.
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    /// The CNI bin directory the lab's runtime executes plugins from.
    pub fn cni_bin(&self) -> PathBuf {
        self.root.join("cni-bin")
    }

    /// A node's directory: its CNI configuration, IPAM data and plugin state.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node)
    }

    /// A pod's directory: its UTS namespace pin and container logs.
    pub fn pod_dir(&self, key: &ObjectKey) -> PathBuf {
        self.root
            .join("pods")
            .join(format!("{}_{}", key.namespace, key.name))
    }

    /// The network namespace of a node.
    pub fn node_netns(&self, node: &str) -> String {
        format!("{}_{node}", self.name)
    }

    /// The network namespace of a pod's sandbox.
    pub fn pod_netns(&self, key: &ObjectKey) -> String {
        format!("{}_{}_{}", self.name, key.namespace, key.name)
    }

    /// The namespace holding the underlay segment that connects the nodes.
    pub fn fabric_netns(&self) -> String {
        format!("{}_fabric", self.name)
    }

    /// The namespace playing a client outside the cluster and the internet.
    pub fn external_netns(&self) -> String {
        format!("{}_external", self.name)
    }

    /// The external namespace's UTS namespace pin.
    pub fn external_uts(&self) -> PathBuf {
        self.root.join("external-uts")
    }

    /// The log of the internet's web server.
    pub fn internet_log(&self) -> PathBuf {
        self.root.join("internet.log")
    }

    /// Whether a network namespace name belongs to this lab.
    pub fn owns_netns(&self, netns: &str) -> bool {
        netns
            .strip_prefix(&self.name)
            .is_some_and(|rest| rest.starts_with('_'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_one_lab_never_match_another() {
        let demo = LabPaths::new("demo");
        let other = LabPaths::new("demo-x");
        let key = ObjectKey {
            namespace: "default".into(),
            name: "web".into(),
        };
        assert_eq!(demo.pod_netns(&key), "demo_default_web");
        assert_eq!(demo.node_netns("node1"), "demo_node1");
        assert!(demo.owns_netns(&demo.fabric_netns()));
        assert!(!demo.owns_netns(&other.node_netns("node1")));
        assert!(!other.owns_netns(&demo.node_netns("node1")));
    }
}
