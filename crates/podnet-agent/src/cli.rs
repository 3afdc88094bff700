//! The agent's command line, shared by the binary that parses it and the lab that writes it
//! for the agent pods it runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use podnet_model::Backend;

use crate::routing::cniconf::CniTarget;

/// `podnet agent` arguments.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct AgentArgs {
    /// The node this agent runs on (its Node object's name).
    #[arg(long)]
    pub node: String,
    /// Read cluster state from this podnet lab (its daemon's socket) instead of the Kubernetes
    /// API server.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub lab: Option<String>,
    /// Reach the Kubernetes API server with this kubeconfig; without it (and without --lab),
    /// the pod's service account, $KUBECONFIG or ~/.kube/config, as kubectl does.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// How pod traffic crosses between nodes.
    #[arg(long, value_enum, default_value_t = BackendName::Vxlan)]
    pub backend: BackendName,
    /// VXLAN network identifier.
    #[arg(long, default_value_t = 1)]
    pub vni: u32,
    /// VXLAN UDP port.
    #[arg(long, default_value_t = 8472)]
    pub vxlan_port: u16,
    /// Write the node's CNI network configuration here.
    #[arg(long)]
    pub cni_conf: Option<PathBuf>,
    /// The CNI plugins' state directory named in that configuration.
    #[arg(long, default_value = "/var/lib/podnet/cni")]
    pub cni_state_dir: PathBuf,
    /// host-local's data directory named in that configuration.
    #[arg(long, default_value = "/var/lib/cni/networks")]
    pub ipam_dir: PathBuf,
    /// The controllers to run: `routing` (pod bridge, routes to other nodes, CNI
    /// configuration), `egress` (masquerading out of the cluster), `proxy` (Services). Leave
    /// out `proxy` to keep kube-proxy, or run only `proxy` to replace kube-proxy beside
    /// another network plugin.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = ControllerName::ALL)]
    pub controllers: Vec<ControllerName>,
    /// The cluster's pod network (comma-separated CIDRs): traffic from it to a service keeps
    /// its source address, traffic from elsewhere is masqueraded. Without it, every node's
    /// `spec.podCIDR` (kube-proxy's `--cluster-cidr`).
    #[arg(long, value_delimiter = ',')]
    pub cluster_cidr: Vec<ipnet::Ipv4Net>,
    /// Where the service proxy answers health checks (`/healthz`), as kube-proxy does.
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub healthz_address: SocketAddr,
    /// Where the agent serves Prometheus metrics (`/metrics`), as kube-proxy does.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub metrics_address: SocketAddr,
}

/// A controller's name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ControllerName {
    /// The pod bridge, routes to other nodes, CNI configuration.
    Routing,
    /// Masquerading of traffic leaving the cluster.
    Egress,
    /// Services.
    Proxy,
    /// NetworkPolicy.
    Policy,
}

impl ControllerName {
    /// Every controller.
    pub const ALL: [ControllerName; 4] = [
        ControllerName::Routing,
        ControllerName::Egress,
        ControllerName::Proxy,
        ControllerName::Policy,
    ];
}

/// A backend's name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendName {
    /// VXLAN encapsulation.
    Vxlan,
    /// Routes through the peer nodes.
    HostGw,
}

impl AgentArgs {
    /// Arguments for `node` with every default.
    pub fn for_node(node: &str) -> Self {
        AgentArgs {
            node: node.to_owned(),
            lab: None,
            kubeconfig: None,
            backend: BackendName::Vxlan,
            vni: 1,
            vxlan_port: 8472,
            cni_conf: None,
            cni_state_dir: "/var/lib/podnet/cni".into(),
            ipam_dir: "/var/lib/cni/networks".into(),
            controllers: ControllerName::ALL.to_vec(),
            cluster_cidr: Vec::new(),
            healthz_address: ([0, 0, 0, 0], 10256).into(),
            metrics_address: ([127, 0, 0, 1], 10249).into(),
        }
    }

    /// Uses `backend`.
    pub fn with_backend(mut self, backend: Backend) -> Self {
        match backend {
            Backend::Vxlan { vni, port } => {
                self.backend = BackendName::Vxlan;
                self.vni = vni;
                self.vxlan_port = port;
            }
            Backend::HostGw => self.backend = BackendName::HostGw,
        }
        self
    }

    /// The backend the arguments name.
    pub fn backend(&self) -> Backend {
        match self.backend {
            BackendName::Vxlan => Backend::Vxlan {
                vni: self.vni,
                port: self.vxlan_port,
            },
            BackendName::HostGw => Backend::HostGw,
        }
    }

    /// Whether controller `name` runs.
    pub fn runs(&self, name: ControllerName) -> bool {
        self.controllers.contains(&name)
    }

    /// Where the CNI configuration goes, when the agent writes one.
    pub fn cni_target(&self) -> Option<CniTarget> {
        self.cni_conf.clone().map(|conf| CniTarget {
            conf,
            state_dir: self.cni_state_dir.clone(),
            ipam_dir: self.ipam_dir.clone(),
        })
    }

    /// The arguments as a command line (after `podnet agent`), which parses back to `self`.
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv = vec!["--node".to_owned(), self.node.clone()];
        let mut flag = |name: &str, value: String| argv.extend([format!("--{name}"), value]);
        if let Some(lab) = &self.lab {
            flag("lab", lab.clone());
        }
        if let Some(kubeconfig) = &self.kubeconfig {
            flag("kubeconfig", kubeconfig.display().to_string());
        }
        let backend = self.backend.to_possible_value().expect("no skipped variants");
        flag("backend", backend.get_name().to_owned());
        flag("vni", self.vni.to_string());
        flag("vxlan-port", self.vxlan_port.to_string());
        if let Some(conf) = &self.cni_conf {
            flag("cni-conf", conf.display().to_string());
        }
        flag("cni-state-dir", self.cni_state_dir.display().to_string());
        flag("ipam-dir", self.ipam_dir.display().to_string());
        if !self.cluster_cidr.is_empty() {
            let cidrs: Vec<String> = self.cluster_cidr.iter().map(ToString::to_string).collect();
            flag("cluster-cidr", cidrs.join(","));
        }
        flag("healthz-address", self.healthz_address.to_string());
        flag("metrics-address", self.metrics_address.to_string());
        let controllers: Vec<String> = self
            .controllers
            .iter()
            .map(|controller| {
                controller
                    .to_possible_value()
                    .expect("no skipped variants")
                    .get_name()
                    .to_owned()
            })
            .collect();
        flag("controllers", controllers.join(","));
        argv
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: AgentArgs,
    }

    #[test]
    fn the_command_line_parses_back_to_the_same_arguments() {
        let mut args = AgentArgs::for_node("k8s-w1").with_backend(Backend::Vxlan { vni: 7, port: 4789 });
        args.lab = Some("demo".into());
        args.cni_conf = Some("/run/podnet/labs/demo/nodes/k8s-w1/network.conflist".into());
        args.controllers = vec![ControllerName::Routing, ControllerName::Egress];
        args.cluster_cidr = vec!["10.244.0.0/16".parse().unwrap()];
        let argv = std::iter::once("agent".to_owned()).chain(args.to_argv());
        assert_eq!(Command::parse_from(argv).args, args);
        let host_gw = AgentArgs::for_node("n").with_backend(Backend::HostGw);
        let argv = std::iter::once("agent".to_owned()).chain(host_gw.to_argv());
        assert_eq!(Command::parse_from(argv).args, host_gw);
    }
}
