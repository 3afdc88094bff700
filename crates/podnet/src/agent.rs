//! `podnet agent`: the node agent, one per node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use podnet_agent::{AgentConfig, Backend, CniTarget};

/// How the agent is configured.
#[derive(Args)]
pub struct AgentArgs {
    /// The node this agent runs on (its Node object's name).
    #[arg(long)]
    node: String,
    /// Read cluster state from this podnet lab (its daemon's socket) instead of the Kubernetes
    /// API server.
    #[arg(long, conflicts_with = "kubeconfig")]
    lab: Option<String>,
    /// Reach the Kubernetes API server with this kubeconfig; without it (and without --lab),
    /// the pod's service account, $KUBECONFIG or ~/.kube/config, as kubectl does.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// How pod traffic crosses between nodes.
    #[arg(long, value_enum, default_value_t = BackendName::Vxlan)]
    backend: BackendName,
    /// VXLAN network identifier.
    #[arg(long, default_value_t = 1)]
    vni: u32,
    /// VXLAN UDP port.
    #[arg(long, default_value_t = 8472)]
    vxlan_port: u16,
    /// Write the node's CNI network configuration here.
    #[arg(long)]
    cni_conf: Option<PathBuf>,
    /// The CNI plugins' state directory named in that configuration.
    #[arg(long, default_value = "/var/lib/podnet/cni")]
    cni_state_dir: PathBuf,
    /// host-local's data directory named in that configuration.
    #[arg(long, default_value = "/var/lib/cni/networks")]
    ipam_dir: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendName {
    Vxlan,
    HostGw,
}

/// Runs the agent; it returns only when its cluster source ends (both sources reconnect on their
/// own, so in practice never) or the API server cannot be configured.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let backend = match args.backend {
        BackendName::Vxlan => Backend::Vxlan {
            vni: args.vni,
            port: args.vxlan_port,
        },
        BackendName::HostGw => Backend::HostGw,
    };
    let config = AgentConfig {
        node: args.node,
        backend,
        cni: args.cni_conf.map(|conf| CniTarget {
            conf,
            state_dir: args.cni_state_dir,
            ipam_dir: args.ipam_dir,
        }),
    };
    tracing::info!(
        "agent for node {} with the {} backend",
        config.node,
        backend.name()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stopped = match &args.lab {
            Some(lab) => {
                let source = podnet_lab::daemon::LabSource::watch(lab);
                podnet_agent::run(config, &source).await
            }
            None => {
                let source = podnet_kube::KubeSource::connect(args.kubeconfig.as_deref()).await?;
                podnet_agent::run(config, &source).await
            }
        };
        stopped.map_err(anyhow::Error::msg)
    })?;
    Ok(ExitCode::SUCCESS)
}
