//! CNI plugins that replace the reference `bridge`, `host-local`, `loopback` and `portmap`.
//!
//! The Container Network Interface is the contract between a container runtime (containerd,
//! CRI-O, podman) and the programs that wire a container's network namespace. The runtime
//! executes a plugin with a command in the environment and a JSON configuration on stdin; the
//! plugin changes the kernel and prints a JSON result. [`spec`] holds the contract, [`skel`] the
//! executable's life cycle, and each plugin module one plugin.

pub mod delegate;
pub mod firewall;
pub mod ipam;
pub mod plugins;
pub mod runtime;
pub mod skel;
pub mod spec;
pub mod state;

pub use skel::{Call, Plugin};

use std::path::Path;

use ipam::host_local::HostLocal;
use plugins::{bridge::Bridge, loopback::Loopback, portmap::Portmap};

/// podnet's plugins, by the `type` network configurations name them with.
pub const PLUGINS: [(&str, &dyn Plugin); 4] = [
    ("bridge", &Bridge),
    ("host-local", &HostLocal),
    ("loopback", &Loopback),
    ("portmap", &Portmap),
];

/// The plugin of type `name`.
pub fn plugin(name: &str) -> Option<&'static dyn Plugin> {
    PLUGINS
        .iter()
        .find(|(type_, _)| *type_ == name)
        .map(|(_, plugin)| *plugin)
}

/// Why the plugins could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file of a plugin's name exists and is not a link to `executable`.
    #[error("{0} exists and is not podnet's; rerun with --force to replace it")]
    Occupied(std::path::PathBuf),
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: std::path::PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// Makes every plugin available in the CNI bin directory `dir`, as a symlink named after its
/// type to the running executable (the podnet binary, which answers as the plugin its name
/// says). Idempotent; replaces other files of the same names only when `force` is set.
pub fn install(dir: &Path, force: bool) -> Result<(), InstallError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| InstallError::Io { path, source }
    };
    let executable = std::env::current_exe()
        .and_then(|path| path.canonicalize())
        .map_err(io(Path::new("/proc/self/exe")))?;
    let executable = executable.as_path();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, _) in PLUGINS {
        let link = dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|target| target == executable) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            if !force {
                return Err(InstallError::Occupied(link));
            }
            std::fs::remove_file(&link).map_err(io(&link))?;
        }
        std::os::unix::fs::symlink(executable, &link).map_err(io(&link))?;
    }
    Ok(())
}
