//! CNI plugins that replace the reference `bridge`, `host-local`, `loopback` and `portmap`.
//!
//! The Container Network Interface is the contract between a container runtime (containerd,
//! CRI-O, podman) and the programs that wire a container's network namespace. The runtime
//! executes a plugin with a command in the environment and a JSON configuration on stdin; the
//! plugin changes the kernel and prints a JSON result. [`spec`] holds the contract, [`skel`] the
//! executable's life cycle, and each plugin module one plugin.

pub mod admission;
pub mod delegate;
pub mod firewall;
pub mod ipam;
pub mod phases;
pub mod plugins;
pub mod runtime;
pub mod skel;
pub mod spec;
pub mod state;

pub mod install;

pub use install::{InstallError, install};
pub use skel::{Call, Plugin};

use std::path::Path;
use std::process::ExitCode;

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

/// What the name this process was started under asks for: the plugin of that type, or the
/// background reaper bridge's DEL starts (see [`plugins::bridge`]). `None` for any other name.
///
/// Runtimes execute plugins by their type name (through the links [`install`] makes), so both
/// the `podnet` binary and the small `podnet-cni` one start here before anything else.
pub fn run_as_invoked() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    let name = Path::new(&argv0).file_name()?.to_str()?;
    if name == plugins::bridge::REAPER {
        return Some(plugins::bridge::reaper_main(args));
    }
    plugin(name).map(skel::main)
}
