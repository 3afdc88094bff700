//! The node's CNI network configuration, written by the agent as flannel or Calico write theirs:
//! the node's pod subnet for host-local, and the pod MTU the backend needs (a VXLAN node's
//! pods must send packets 50 bytes smaller than the underlay carries).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::plan::NodePlan;

/// The name of the network podnet configures.
pub const NETWORK: &str = "podnet";
/// The pod bridge on every node.
pub const BRIDGE: &str = "cni0";

/// Where the node's CNI configuration goes and where its plugins keep their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniTarget {
    /// The configuration list file (containerd reads `/etc/cni/net.d/*.conflist`).
    pub conf: PathBuf,
    /// The plugins' attachment records.
    pub state_dir: PathBuf,
    /// host-local's data directory.
    pub ipam_dir: PathBuf,
}

/// The configuration list for `plan`.
pub fn render(plan: &NodePlan, target: &CniTarget) -> String {
    let config = json!({
        "cniVersion": "1.1.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "hairpinMode": true,
                "mtu": plan.pod_mtu,
                "stateDir": target.state_dir,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": plan.pod_cidr.to_string(), "gateway": plan.gateway.addr().to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": target.ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "stateDir": target.state_dir}
        ]
    });
    serde_json::to_string_pretty(&config).expect("configurations serialize")
}

/// Writes `text` to `path` atomically (a runtime never reads half a file), unless it is there.
pub fn write(path: &Path, text: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)?;
    Ok(true)
}
