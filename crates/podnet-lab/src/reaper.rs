//! Removing a lab's namespaces for good: the processes inside first, then the pins.
//!
//! A network namespace only disappears when nothing refers to it any more; a container
//! process that survived its supervisor would keep a deleted pod's namespace (and its veth,
//! and its addresses) alive, invisible to `ip netns`. Deleting therefore always kills what
//! runs inside, found by comparing `/proc/PID/ns/net` with the namespace's identity.

use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use podnet_netlink::{Netns, NetnsId, netns::NETNS_RUN_DIR};

use crate::failures::Failures;
use crate::paths::LabPaths;

/// The processes whose network namespace is `netns`.
pub fn processes_in(netns: NetnsId) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            NetnsId::of_path(&Path::new("/proc").join(pid.to_string()).join("ns/net"))
                .is_ok_and(|id| id == netns)
        })
        .map(Pid::from_raw)
        .collect()
}

/// Kills everything inside the named namespace and deletes it; a missing one is fine.
pub fn delete_netns(name: &str) -> Result<(), podnet_netlink::Error> {
    let path = podnet_netlink::netns::named_path(name)?;
    if let Ok(id) = NetnsId::of_path(&path) {
        // Our own process must never be inside a namespace it deletes.
        let own = std::process::id() as i32;
        for pid in processes_in(id) {
            if pid.as_raw() != own {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
    Netns::delete_named(name)
}

/// Removes every namespace and file of lab `paths`, whatever state it was left in.
/// Returns what could not be removed.
pub fn sweep(paths: &LabPaths) -> Failures {
    let mut failures = Failures::new();
    let mut names: Vec<String> = std::fs::read_dir(NETNS_RUN_DIR)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
                .filter(|name| paths.owns_netns(name))
                .collect()
        })
        .unwrap_or_default();
    // Pods (`LAB_NS_POD`) before nodes and the fabric (`LAB_NAME`), as in an orderly shutdown.
    names.sort_by_key(|name| std::cmp::Reverse(name.matches('_').count()));
    for name in names {
        failures.check(format!("namespace {name}"), delete_netns(&name));
    }
    // UTS pins are bind mounts below the state directory: unmount before removing it.
    for pin in uts_pins(paths.root()) {
        failures.check(pin.display(), podnet_netlink::UtsNs::delete(&pin));
    }
    match std::fs::remove_dir_all(paths.root()) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => failures.push(format!("{}: {err}", paths.root().display())),
    }
    failures
}

fn uts_pins(root: &Path) -> Vec<std::path::PathBuf> {
    let mut pins: Vec<std::path::PathBuf> = Some(root.join("external-uts"))
        .into_iter()
        .filter(|pin| pin.exists())
        .collect();
    for group in ["nodes", "pods"] {
        if let Ok(entries) = std::fs::read_dir(root.join(group)) {
            pins.extend(
                entries
                    .flatten()
                    .map(|entry| entry.path().join("uts"))
                    .filter(|pin| pin.exists()),
            );
        }
    }
    pins
}
