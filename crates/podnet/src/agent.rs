//! `podnet agent`: the node agent, one per node.

use std::process::ExitCode;

use podnet_agent::AgentArgs;

/// Runs the agent; it returns only when its cluster source ends (both sources reconnect on their
/// own, so in practice never) or the API server cannot be configured.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(
        "agent for node {} with the {} backend, controllers {:?}",
        args.node,
        args.backend().name(),
        args.controllers
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stopped = match &args.lab {
            Some(lab) => podnet_agent::run(&args, &podnet_lab::source::LabSource::new(lab)).await,
            None => {
                let source = podnet_kube::KubeSource::connect(args.kubeconfig.as_deref()).await?;
                podnet_agent::run(&args, &source).await
            }
        };
        stopped.map_err(anyhow::Error::msg)
    })?;
    Ok(ExitCode::SUCCESS)
}
