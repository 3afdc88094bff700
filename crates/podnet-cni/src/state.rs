//! Attachment records: what a plugin created for each attachment, kept on disk.
//!
//! The reference plugins rebuild everything DEL needs from `prevResult` or from names hashed out
//! of the container ID; when neither is available (the runtime lost its cache, the namespace is
//! gone) they leak. podnet's plugins write a small JSON record per attachment before touching
//! the kernel, so DEL and GC always know exactly what to remove. Records live under
//! `STATE_DIR/PLUGIN/NETWORK/CONTAINERID:IFNAME.json`; changes that must be seen together (add a
//! record and decide what the network still needs) happen under one `flock`.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::spec::CniError;

/// Where podnet's plugins keep their records unless the configuration says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/podnet/cni";

/// The record directory of one plugin on one network.
#[derive(Debug, Clone)]
pub struct Records {
    root: PathBuf,
    dir: PathBuf,
}

/// The lock that serialises record changes of all networks of one state directory.
pub struct RecordLock {
    _flock: Flock<File>,
}

impl Records {
    /// The records of `plugin` for `network` under `state_dir`.
    pub fn new(state_dir: &Path, plugin: &str, network: &str) -> Self {
        Records {
            root: state_dir.to_owned(),
            dir: state_dir.join(plugin).join(network),
        }
    }

    /// Takes the state directory's lock, creating the directory if needed.
    pub fn lock(&self) -> Result<RecordLock, CniError> {
        fs::create_dir_all(&self.root).map_err(|err| io_error("create", &self.root, err))?;
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|err| io_error("open", &path, err))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(|flock| RecordLock { _flock: flock })
            .map_err(|(_, errno)| io_error("lock", &path, errno.into()))
    }

    /// Writes the record of an attachment, replacing any previous one atomically.
    pub fn write<T: Serialize>(
        &self,
        _lock: &RecordLock,
        container_id: &str,
        ifname: &str,
        record: &T,
    ) -> Result<(), CniError> {
        fs::create_dir_all(&self.dir).map_err(|err| io_error("create", &self.dir, err))?;
        let path = self.path(container_id, ifname);
        let temporary = path.with_extension("tmp");
        let text = serde_json::to_vec(record).expect("records serialize");
        fs::write(&temporary, text).map_err(|err| io_error("write", &temporary, err))?;
        fs::rename(&temporary, &path).map_err(|err| io_error("write", &path, err))
    }

    /// The record of an attachment, if there is one.
    pub fn read<T: DeserializeOwned>(&self, container_id: &str, ifname: &str) -> Result<Option<T>, CniError> {
        let path = self.path(container_id, ifname);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
                CniError::io(format!("corrupt attachment record {}", path.display())).details(err.to_string())
            }),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("read", &path, err)),
        }
    }

    /// Removes the record of an attachment; removing a missing one succeeds.
    pub fn remove(&self, _lock: &RecordLock, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let path = self.path(container_id, ifname);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error("remove", &path, err)),
        }
    }

    /// Every record of this plugin on this network, with its container ID and interface name.
    pub fn list<T: DeserializeOwned>(&self) -> Result<Vec<(String, String, T)>, CniError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error("list", &self.dir, err)),
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            // Neither container IDs nor interface names may contain ':'.
            let Some((container_id, ifname)) = stem.split_once(':') else {
                continue;
            };
            if let Some(record) = self.read(container_id, ifname)? {
                records.push((container_id.to_owned(), ifname.to_owned(), record));
            }
        }
        Ok(records)
    }

    /// Every record of this plugin on every network of the state directory.
    pub fn list_all_networks<T: DeserializeOwned>(&self) -> Result<Vec<T>, CniError> {
        let plugin_dir = self.dir.parent().expect("records live in PLUGIN/NETWORK");
        let Ok(networks) = fs::read_dir(plugin_dir) else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        for network in networks.flatten() {
            let other = Records {
                root: self.root.clone(),
                dir: network.path(),
            };
            records.extend(other.list::<T>()?.into_iter().map(|(_, _, record)| record));
        }
        Ok(records)
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}:{ifname}.json"))
    }
}

fn io_error(action: &str, path: &Path, err: std::io::Error) -> CniError {
    CniError::io(format!("cannot {action} {}", path.display())).details(err.to_string())
}
