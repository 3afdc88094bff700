//! `podnet cni`: the CNI plugins as executables a runtime can find.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

/// `podnet cni` subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Install the plugins into a CNI bin directory, so runtimes find them by type.
    Install {
        /// The CNI bin directory (containerd's and CRI-O's default is /opt/cni/bin).
        #[arg(long, default_value = "/opt/cni/bin")]
        dir: PathBuf,
        /// Replace files of the same name (for instance the reference plugins).
        #[arg(long)]
        force: bool,
    },
    /// Run one plugin: CNI environment and stdin in, answer on stdout.
    Run {
        /// The plugin type: bridge, host-local, loopback or portmap.
        plugin: String,
    },
}

/// Runs a `podnet cni` subcommand.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Install { dir, force } => {
            install(&dir, force)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { plugin: name } => match podnet_cni::plugin(&name) {
            Some(plugin) => Ok(podnet_cni::skel::main(plugin)),
            None => {
                bail!("unknown plugin {name:?}: podnet provides bridge, host-local, loopback and portmap")
            }
        },
    }
}

/// Copies the plugins' executable into `dir` and links each plugin's name to it.
fn install(dir: &Path, force: bool) -> anyhow::Result<()> {
    let installed = podnet_cni::install(dir, force)?;
    println!(
        "podnet's bridge, host-local, loopback and portmap plugins are in {} (links to {})",
        dir.display(),
        installed.display()
    );
    Ok(())
}
