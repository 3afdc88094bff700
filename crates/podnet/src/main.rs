//! `podnet`: the one binary of the podnet cluster network.
//!
//! Invoked under the name of a CNI plugin (`bridge`, `host-local`, `loopback`, `portmap`, as
//! a container runtime does through the symlinks `podnet cni install` creates), it behaves as
//! that plugin; otherwise it is a command-line tool with subcommands.

mod cni;

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
}

fn main() -> ExitCode {
    // A runtime executes the plugin by its CNI name: answer as that plugin, with no CLI parsing
    // and nothing printed but the CNI answer.
    if let Some(plugin) = std::env::args_os()
        .next()
        .as_deref()
        .and_then(cni::plugin_for_argv0)
    {
        return podnet_cni::skel::main(plugin);
    }
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Cni(command) => cni::run(command),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("podnet: {err:#}");
            ExitCode::FAILURE
        }
    }
}
