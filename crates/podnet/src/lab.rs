//! `podnet lab`: a multi-node cluster network on this host.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use podnet_lab::client;

/// `podnet lab` subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Build the lab FILE describes and return once it is ready; it keeps running.
    Up {
        /// The lab file: a Lab header and Kubernetes YAML (Namespaces, Pods, Deployments).
        file: PathBuf,
    },
    /// Change a running lab to match FILE: create what appeared, remove what disappeared.
    Apply {
        /// The lab file.
        file: PathBuf,
    },
    /// Print objects of a kind as the lab's API server stores them (JSON, like `kubectl get -o json`).
    Get {
        /// nodes, namespaces, pods, services, endpointslices or networkpolicies.
        kind: String,
        /// Only the object of this name.
        name: Option<String>,
        /// Only this namespace's (all namespaces when omitted).
        #[arg(short, long)]
        namespace: Option<String>,
        /// The lab (the only running one when omitted).
        #[arg(long)]
        lab: Option<String>,
    },
    /// Show the lab's nodes, pods and services.
    Status {
        /// The lab (the only running one when omitted).
        #[arg(long)]
        lab: Option<String>,
    },
    /// Run a command in a pod's container: its network namespace, hostname and environment.
    Exec {
        #[command(flatten)]
        container: ContainerRef,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a container's output.
    Logs {
        #[command(flatten)]
        container: ContainerRef,
    },
    /// Remove the lab and everything it created. Removing a lab that is not up succeeds.
    Down {
        /// The lab (the only running one when omitted).
        #[arg(long)]
        lab: Option<String>,
    },
    /// The lab's daemon (started by `lab up`).
    #[command(hide = true)]
    Daemon {
        /// The lab's name.
        name: String,
    },
}

/// A container of a pod of a lab.
#[derive(Args)]
pub struct ContainerRef {
    /// The pod.
    pod: String,
    /// The pod's namespace.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The container (the pod's first when omitted).
    #[arg(short, long)]
    container: Option<String>,
    /// The lab (the only running one when omitted).
    #[arg(long)]
    lab: Option<String>,
}

/// Runs a `podnet lab` subcommand.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up { file } => {
            let status = client::up(&file, |line| eprintln!("  {line}"))?;
            print!("{}", client::format_status(&status));
        }
        Command::Apply { file } => {
            let changes = client::apply(&file)?;
            if changes.is_empty() {
                println!("nothing to change");
            }
            for change in changes {
                println!("{change}");
            }
        }
        Command::Get {
            kind,
            name,
            namespace,
            lab,
        } => {
            let kind = kind_named(&kind)?;
            let list = client::get(lab.as_deref(), kind, namespace.as_deref(), name.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Command::Status { lab } => print!("{}", client::format_status(&client::status(lab.as_deref())?)),
        Command::Exec {
            container: c,
            command,
        } => {
            let err = client::exec(
                c.lab.as_deref(),
                &c.namespace,
                &c.pod,
                c.container.as_deref(),
                &command,
            );
            return Err(err.into());
        }
        Command::Logs { container: c } => {
            let path = client::log_path(c.lab.as_deref(), &c.namespace, &c.pod, c.container.as_deref())?;
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            print!("{text}");
        }
        Command::Down { lab } => match client::down(lab.as_deref())? {
            Some(name) => println!("lab {name} removed"),
            None => println!("no lab is up: nothing to remove"),
        },
        Command::Daemon { name } => return Ok(daemon(&name)),
    }
    Ok(ExitCode::SUCCESS)
}

/// A kind as `kubectl get` names it.
fn kind_named(name: &str) -> anyhow::Result<podnet_model::Kind> {
    use podnet_model::Kind;
    Ok(match name.to_ascii_lowercase().as_str() {
        "node" | "nodes" | "no" => Kind::Node,
        "namespace" | "namespaces" | "ns" => Kind::Namespace,
        "pod" | "pods" | "po" => Kind::Pod,
        "service" | "services" | "svc" => Kind::Service,
        "endpointslice" | "endpointslices" => Kind::EndpointSlice,
        "networkpolicy" | "networkpolicies" | "netpol" => Kind::NetworkPolicy,
        other => anyhow::bail!(
            "unknown kind {other:?}: use nodes, namespaces, pods, services, endpointslices or networkpolicies"
        ),
    })
}

/// The daemon's life: a log on stderr, the readiness report on stdout.
fn daemon(name: &str) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(podnet_lab::daemon::run(name, std::io::stdout())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            println!("error {err}");
            eprintln!("lab {name}: {err}");
            ExitCode::FAILURE
        }
    }
}
