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
pub mod skel;
pub mod spec;
pub mod state;

pub use skel::{Call, Plugin};
