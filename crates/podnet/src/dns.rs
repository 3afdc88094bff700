//! `podnet dns`: the cluster DNS server (what CoreDNS is in a cluster).

use std::process::ExitCode;

use podnet_dns::DnsArgs;

/// Runs the DNS server until its cluster source ends; errors say which socket or file failed.
pub fn run(args: DnsArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    // The answering threads have runtimes of their own; this one follows the cluster.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stopped = match (&args.lab, args.no_cluster) {
            (_, true) => podnet_dns::run(&args, None).await,
            (Some(lab), false) => {
                podnet_dns::run(&args, Some(&podnet_lab::source::LabSource::new(lab))).await
            }
            (None, false) => {
                let source = podnet_kube::KubeSource::connect(args.kubeconfig.as_deref()).await?;
                podnet_dns::run(&args, Some(&source)).await
            }
        };
        stopped.map_err(anyhow::Error::from)
    })?;
    Ok(ExitCode::SUCCESS)
}
