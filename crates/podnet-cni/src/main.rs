//! `podnet-cni`: podnet's CNI plugins alone, in an executable a tenth of podnet's size.
//!
//! Every pod start executes a plugin, so its start-up is on every pod's path: this executable
//! holds nothing but the plugins (no agent, lab or API client to map and relocate), and starts
//! in half the time `podnet` takes. `podnet cni install` copies it into the CNI bin directory and
//! links each plugin's type name to it; it answers as the plugin its name says.

use std::process::ExitCode;

fn main() -> ExitCode {
    podnet_cni::run_as_invoked().unwrap_or_else(|| {
        eprintln!(
            "podnet-cni runs as a CNI plugin, under the name of one (bridge, host-local, loopback, portmap): install it with `podnet cni install`"
        );
        ExitCode::FAILURE
    })
}
