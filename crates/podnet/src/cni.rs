//! `podnet cni`: the CNI plugins as executables a runtime can find.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use podnet_cni::Plugin;

/// `podnet cni` subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Link the plugins into a CNI bin directory, so runtimes find them by type.
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
    /// Destroy the veth pair of an attachment bridge's DEL detached (started by DEL).
    #[command(hide = true)]
    Reap {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        network: String,
        #[arg(long)]
        container_id: String,
        #[arg(long)]
        ifname: String,
        #[arg(long)]
        link: String,
    },
}

/// The plugin a program name (argv[0]) stands for, if any.
pub fn plugin_for_argv0(argv0: &OsStr) -> Option<&'static dyn Plugin> {
    podnet_cni::plugin(Path::new(argv0).file_name()?.to_str()?)
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
        Command::Reap {
            state_dir,
            network,
            container_id,
            ifname,
            link,
        } => {
            podnet_cni::plugins::bridge::reap(&state_dir, &network, &container_id, &ifname, &link)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Symlinks each plugin name in `dir` to this executable.
fn install(dir: &Path, force: bool) -> anyhow::Result<()> {
    podnet_cni::install(dir, force)?;
    println!(
        "podnet's bridge, host-local, loopback and portmap plugins are in {}",
        dir.display()
    );
    Ok(())
}
