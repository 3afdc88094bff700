//! `podnet cni`: the CNI plugins as executables a runtime can find.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use podnet_cni::Plugin;
use podnet_cni::ipam::host_local::HostLocal;
use podnet_cni::plugins::{bridge::Bridge, loopback::Loopback, portmap::Portmap};

/// The plugins, by the `type` a network configuration names them with.
pub const PLUGINS: [(&str, &dyn Plugin); 4] = [
    ("bridge", &Bridge),
    ("host-local", &HostLocal),
    ("loopback", &Loopback),
    ("portmap", &Portmap),
];

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
}

/// The plugin a program name (argv[0]) stands for, if any.
pub fn plugin_for_argv0(argv0: &OsStr) -> Option<&'static dyn Plugin> {
    let name = Path::new(argv0).file_name()?.to_str()?;
    plugin(name)
}

fn plugin(name: &str) -> Option<&'static dyn Plugin> {
    PLUGINS
        .iter()
        .find(|(type_, _)| *type_ == name)
        .map(|(_, plugin)| *plugin)
}

/// Runs a `podnet cni` subcommand.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Install { dir, force } => {
            install(&dir, force)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { plugin: name } => match plugin(&name) {
            Some(plugin) => Ok(podnet_cni::skel::main(plugin)),
            None => {
                bail!("unknown plugin {name:?}: podnet provides bridge, host-local, loopback and portmap")
            }
        },
    }
}

/// Symlinks each plugin name in `dir` to this executable.
pub fn install(dir: &Path, force: bool) -> anyhow::Result<()> {
    let executable = std::env::current_exe()
        .and_then(|path| path.canonicalize())
        .context("cannot locate the podnet executable")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, _) in PLUGINS {
        let link = dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|target| target == executable) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            if !force {
                bail!(
                    "{} exists and is not podnet's; rerun with --force to replace it",
                    link.display()
                );
            }
            std::fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&executable, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    Ok(())
}
