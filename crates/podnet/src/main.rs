//! `podnet`: the one binary of the podnet cluster network.
//!
//! Invoked under the name of a CNI plugin (`bridge`, `host-local`, `loopback`, `portmap`), it
//! behaves as that plugin; otherwise it is a command-line tool with subcommands. The plugins
//! also come alone, as the small `podnet-cni` executable `podnet cni install` puts in place.

mod agent;
mod cni;
mod dns;
mod lab;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "podnet",
    version,
    about = "The Kubernetes cluster network in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CNI plugins: install them, or run one explicitly.
    #[command(subcommand)]
    Cni(cni::Command),
    /// A multi-node cluster network on this host: nodes and pods are network namespaces.
    #[command(subcommand)]
    Lab(lab::Command),
    /// The node agent: routes pod traffic between nodes, masquerades egress.
    Agent(podnet_agent::AgentArgs),
    /// The cluster DNS server: Services by name, everything else forwarded (CoreDNS's job).
    Dns(podnet_dns::DnsArgs),
    /// A built-in workload (what the lab runs for traefik/whoami, nginx and pause images).
    Workload {
        /// whoami, nginx or pause.
        name: String,
        /// The container's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // A runtime executes the plugin by its CNI name: answer as that plugin, with no CLI parsing
    // and nothing printed but the CNI answer.
    if let Some(code) = podnet_cni::run_as_invoked() {
        return code;
    }
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Cni(command) => cni::run(command),
        Command::Lab(command) => lab::run(command),
        Command::Agent(args) => agent::run(args),
        Command::Dns(args) => dns::run(args),
        Command::Workload { name, args } => Ok(workload::run(&name, &args)),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("podnet: {err:#}");
            ExitCode::FAILURE
        }
    }
}
