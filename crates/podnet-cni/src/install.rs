//! Putting the plugins where runtimes look for them.
//!
//! A runtime finds a plugin as `CNI_PATH/TYPE` and executes it. `podnet cni install` copies one
//! executable into the CNI bin directory as `podnet-cni` and links each plugin's type name to
//! it: the copy, not a link back to where podnet was started from, so the directory works on its
//! own (a DaemonSet's init container installs onto the host's `/opt/cni/bin`, where the image's
//! files are not). The executable is the small `podnet-cni` built beside `podnet` (it starts in
//! half the time: no agent, lab or API client to load), or podnet itself when that is missing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::PLUGINS;

/// The name of the installed executable, in the CNI bin directory and beside `podnet`.
pub const EXECUTABLE: &str = "podnet-cni";

/// Why the plugins could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file of a plugin's name exists and is not podnet's.
    #[error("{0} exists and is not podnet's; rerun with --force to replace it")]
    Occupied(PathBuf),
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// Installs the plugins into the CNI bin directory `dir` and returns the executable copied
/// there. Idempotent; files of the plugins' names that are not podnet's are replaced only when
/// `force` is set, and nothing is changed before that is known.
pub fn install(dir: &Path, force: bool) -> Result<PathBuf, InstallError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| InstallError::Io { path, source }
    };
    let running = std::env::current_exe()
        .and_then(|path| path.canonicalize())
        .map_err(io(Path::new("/proc/self/exe")))?;
    let beside = running.with_file_name(EXECUTABLE);
    let source = if beside.is_file() { beside } else { running };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let occupied: Vec<PathBuf> = PLUGINS
        .iter()
        .map(|(name, _)| dir.join(name))
        .filter(|link| link.symlink_metadata().is_ok() && !is_podnets(link))
        .collect();
    if let (Some(link), false) = (occupied.first(), force) {
        return Err(InstallError::Occupied(link.clone()));
    }

    // The executable, replaced atomically: a runtime may be starting it right now.
    let installed = dir.join(EXECUTABLE);
    if fs::canonicalize(&installed).ok().as_ref() != Some(&source) {
        let temporary = dir.join(format!(".{EXECUTABLE}.{}", std::process::id()));
        fs::copy(&source, &temporary).map_err(io(&temporary))?;
        let copied = fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755))
            .and_then(|()| fs::rename(&temporary, &installed));
        if let Err(err) = copied {
            let _ = fs::remove_file(&temporary);
            return Err(io(&installed)(err));
        }
    }
    for (name, _) in PLUGINS {
        let link = dir.join(name);
        if fs::read_link(&link).is_ok_and(|target| target == Path::new(EXECUTABLE)) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).map_err(io(&link))?;
        }
        std::os::unix::fs::symlink(EXECUTABLE, &link).map_err(io(&link))?;
    }
    Ok(installed)
}

/// Whether `link` is a link an install of podnet made: to `podnet-cni`, or (older installs) to
/// a `podnet` binary.
fn is_podnets(link: &Path) -> bool {
    fs::read_link(link).is_ok_and(|target| {
        target
            .file_name()
            .is_some_and(|name| name == EXECUTABLE || name == "podnet")
    })
}
