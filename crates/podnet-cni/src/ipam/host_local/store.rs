//! host-local's on-disk store, laid out exactly like the reference plugin's.
//!
//! `DATADIR/NETWORK/` holds one file per allocated address, named after the address and holding
//! `CONTAINERID\r\nIFNAME`; `last_reserved_ip.N` remembers where round-robin allocation in range
//! set N stopped; `lock` is `flock`ed by whoever changes the directory, podnet or the reference
//! plugin alike, so a node can switch between them without losing an allocation.
//!
//! Finding an attachment's addresses in that layout means reading every address file. podnet
//! also keeps an index, `.podnet-owners/CONTAINERID:IFNAME:ADDRESS`: each entry is a second
//! name (a hard link) of the address file, so indexing costs a directory entry and no inode
//! (creating a file of its own cost an ADD 180-350 us on ext4), and ADD and DEL find an
//! attachment's addresses from one listing of the index, whether 5 or 250 pods run. The
//! reference plugin ignores the index (it never matches an owner), and whatever the index does
//! not know (addresses the reference plugin handed out) is still found by reading the address
//! files. Entries are confirmed by the address file of their name, so an entry outliving its
//! address (a killed DEL, the reference plugin's DEL) is ignored and GC removes it. Index files
//! of earlier podnet versions, `CONTAINERID:IFNAME` listing the addresses, are still read.
//!
//! Crash safety: an address file is written in full as a file without a name (`O_TMPFILE`) and
//! then linked into place, so it appears complete or not at all. A plugin killed at any point
//! therefore leaves either no file or a file that names its owner, which DEL or GC can free, and
//! never a temporary. On a file system without unnamed files, temporaries get names in
//! `.podnet-tmp/`; only a killed writer leaves one there, and as every writer holds the lock,
//! they are stale whenever the lock is taken and are removed then.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, Flock, FlockArg, OFlag};

use crate::spec::CniError;

/// Name of the lock file, shared with the reference plugin.
const LOCK_FILE: &str = "lock";
/// Prefix of `last_reserved_ip.N`.
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// Where podnet's named temporary files go (only where unnamed files are not supported); the
/// reference plugin ignores it.
const TEMP_DIR: &str = ".podnet-tmp";
/// Temporaries older podnet versions left beside the address files; GC removes them.
const OLD_TEMP_PREFIX: &str = ".podnet-tmp-";
/// Separator between container ID and interface name in an address file.
const LINE_BREAK: &str = "\r\n";
/// The owner index's directory.
const OWNERS_DIR: &str = ".podnet-owners";

/// An entry of the owner index, from its name: `CONTAINERID:IFNAME:ADDRESS`, or an earlier
/// version's `CONTAINERID:IFNAME` (no address: the file lists them). Interface names cannot
/// hold a colon, and whatever follows the second one is the address (IPv6 has colons).
struct IndexEntry {
    container_id: String,
    ifname: String,
    address: Option<IpAddr>,
}

impl IndexEntry {
    fn parse(name: &str) -> Option<Self> {
        let mut parts = name.splitn(3, ':');
        let (container_id, ifname) = (parts.next()?, parts.next()?);
        let address = match parts.next() {
            Some(address) => Some(address.parse().ok()?),
            None => None,
        };
        Some(IndexEntry {
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
            address,
        })
    }
}

/// Who an address belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The container ID.
    pub container_id: String,
    /// The interface name; `None` in files written by old reference versions (ID only).
    pub ifname: Option<String>,
}

impl Owner {
    fn parse(text: &str) -> Self {
        match text.trim().split_once(LINE_BREAK) {
            Some((id, ifname)) => Owner {
                container_id: id.trim().to_owned(),
                ifname: Some(ifname.trim().to_owned()),
            },
            None => Owner {
                container_id: text.trim().to_owned(),
                ifname: None,
            },
        }
    }

    /// True when this owner is the attachment (`container_id`, `ifname`). Files without an
    /// interface name belong to every interface of their container.
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname.as_deref().is_none_or(|own| own == ifname)
    }
}

/// The directory of one network, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Opens (creating it if needed) and locks the directory of `network` under `data_dir`.
    pub fn lock(data_dir: &Path, network: &str) -> Result<Self, CniError> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(|err| io_error("create", &dir, err))?;
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|err| io_error("open", &lock_path, err))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_error("lock", &lock_path, errno.into()))?;
        let store = Store { dir, _lock: lock };
        store.remove_stale_temporaries()?;
        Ok(store)
    }

    /// Opens the directory of `network`, locked, only when it exists (DEL and GC, which never
    /// create it).
    pub fn lock_existing(data_dir: &Path, network: &str) -> Result<Option<Self>, CniError> {
        if !data_dir.join(network).is_dir() {
            return Ok(None);
        }
        Self::lock(data_dir, network).map(Some)
    }

    /// Every allocated address with its owner.
    pub fn reservations(&self) -> Result<Vec<(IpAddr, Owner)>, CniError> {
        let entries = fs::read_dir(&self.dir).map_err(|err| io_error("list", &self.dir, err))?;
        let mut reservations = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| io_error("list", &self.dir, err))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<IpAddr>().ok())
            else {
                continue;
            };
            match fs::read_to_string(entry.path()) {
                Ok(text) => reservations.push((ip, Owner::parse(&text))),
                // Removed meanwhile by someone not taking the lock (by hand): not allocated any more.
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("read", &entry.path(), err)),
            }
        }
        Ok(reservations)
    }

    /// The addresses the index says `container_id`/`ifname` holds, confirmed by their files;
    /// `None` when the index has no entry for it.
    pub fn indexed(&self, container_id: &str, ifname: &str) -> Result<Option<Vec<IpAddr>>, CniError> {
        let mut found = false;
        let mut ips = Vec::new();
        for entry in self.index_entries()? {
            if entry.container_id != container_id || entry.ifname != ifname {
                continue;
            }
            found = true;
            match entry.address {
                Some(ip) => ips.push(ip),
                None => {
                    let path = self.owner_path(container_id, ifname);
                    let text = fs::read_to_string(&path).map_err(|err| io_error("read", &path, err))?;
                    ips.extend(text.lines().filter_map(|line| line.trim().parse::<IpAddr>().ok()));
                }
            }
        }
        if !found {
            return Ok(None);
        }
        ips.retain(|ip| {
            fs::read_to_string(self.address_path(*ip))
                .is_ok_and(|owner| Owner::parse(&owner).is(container_id, ifname))
        });
        Ok(Some(ips))
    }

    /// The entries of the index, in no particular order.
    fn index_entries(&self) -> Result<Vec<IndexEntry>, CniError> {
        let dir = self.dir.join(OWNERS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error("list", &dir, err)),
        };
        Ok(entries
            .flatten()
            .filter_map(|entry| IndexEntry::parse(entry.file_name().to_str()?))
            .collect())
    }

    /// Every address `container_id`/`ifname` holds: from the index, else from the files.
    pub fn held_by(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
        if let Some(ips) = self.indexed(container_id, ifname)? {
            return Ok(ips);
        }
        Ok(self
            .reservations()?
            .into_iter()
            .filter(|(_, owner)| owner.is(container_id, ifname))
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Records in the index that `container_id`/`ifname` holds `ips` (reserved already).
    pub fn index(&self, container_id: &str, ifname: &str, ips: &[IpAddr]) -> Result<(), CniError> {
        let dir = self.dir.join(OWNERS_DIR);
        fs::create_dir_all(&dir).map_err(|err| io_error("create", &dir, err))?;
        for ip in ips {
            let (address, entry) = (self.address_path(*ip), self.entry_path(container_id, ifname, *ip));
            let linked = fs::hard_link(&address, &entry).or_else(|err| match err.kind() {
                // Left by an earlier holding of the same address: it names the old file.
                ErrorKind::AlreadyExists => {
                    fs::remove_file(&entry).and_then(|()| fs::hard_link(&address, &entry))
                }
                _ => Err(err),
            });
            linked.map_err(|err| io_error("link", &entry, err))?;
        }
        Ok(())
    }

    /// Drops `container_id`/`ifname` from the index.
    pub fn unindex(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        for entry in self.index_entries()? {
            if entry.container_id != container_id || entry.ifname != ifname {
                continue;
            }
            let path = match entry.address {
                Some(ip) => self.entry_path(container_id, ifname, ip),
                None => self.owner_path(container_id, ifname),
            };
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("remove", &path, err)),
            }
        }
        Ok(())
    }

    /// The attachments the index knows, as (container ID, interface name).
    pub fn indexed_owners(&self) -> Vec<(String, String)> {
        let mut owners: Vec<(String, String)> = self
            .index_entries()
            .unwrap_or_default()
            .into_iter()
            .map(|entry| (entry.container_id, entry.ifname))
            .collect();
        owners.sort();
        owners.dedup();
        owners
    }

    /// The index entry of `ip` held by `container_id`/`ifname`.
    fn entry_path(&self, container_id: &str, ifname: &str, ip: IpAddr) -> PathBuf {
        self.dir
            .join(OWNERS_DIR)
            .join(format!("{container_id}:{ifname}:{ip}"))
    }

    /// An index file of an earlier podnet version, listing the attachment's addresses.
    fn owner_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(OWNERS_DIR).join(format!("{container_id}:{ifname}"))
    }

    /// Whether `ip` is allocated.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        self.address_path(ip).exists()
    }

    /// Allocates `ip` to the attachment; returns false when somebody holds it already.
    pub fn reserve(
        &self,
        ip: IpAddr,
        container_id: &str,
        ifname: &str,
        range_set: usize,
    ) -> Result<bool, CniError> {
        let target = self.address_path(ip);
        let owner = format!("{container_id}{LINE_BREAK}{ifname}");
        match self.publish(&target, &owner) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(err) => return Err(io_error("create", &target, err)),
        }
        // Only a hint for where to search next: a torn write just restarts the search at the
        // range's start, so it is written in place, as the reference plugin does. Failing to
        // write it is no reason to fail the reservation (which could then leak).
        let _ = overwrite(
            &self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}")),
            &ip.to_string(),
        );
        Ok(true)
    }

    /// Frees `ip`; freeing a free address succeeds.
    pub fn release(&self, ip: IpAddr) -> Result<(), CniError> {
        let path = self.address_path(ip);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error("remove", &path, err)),
        }
    }

    /// Where round-robin allocation in `range_set` stopped last time.
    pub fn last_reserved(&self, range_set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn address_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Writes `content` to `path` so that the file appears complete or not at all: written
    /// unnamed, then linked into place. Fails with `AlreadyExists` when `path` exists.
    fn publish(&self, path: &Path, content: &str) -> std::io::Result<()> {
        let dir = path.parent().expect("store paths have a directory");
        let unnamed = OpenOptions::new()
            .write(true)
            .mode(0o644)
            .custom_flags(OFlag::O_TMPFILE.bits())
            .open(dir);
        let mut file = match unnamed {
            Ok(file) => file,
            Err(err) if unnamed_files_unsupported(&err) => return self.publish_named(path, content),
            Err(err) => return Err(err),
        };
        file.write_all(content.as_bytes())?;
        nix::unistd::linkat(
            AT_FDCWD,
            format!("/proc/self/fd/{}", file.as_raw_fd()).as_str(),
            AT_FDCWD,
            path,
            AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(std::io::Error::from)
    }

    /// [`publish`](Self::publish) through a named temporary in `.podnet-tmp/`.
    fn publish_named(&self, path: &Path, content: &str) -> std::io::Result<()> {
        let dir = self.dir.join(TEMP_DIR);
        fs::create_dir_all(&dir)?;
        let temporary = dir.join(std::process::id().to_string());
        fs::write(&temporary, content)?;
        let placed = fs::hard_link(&temporary, path);
        let _ = fs::remove_file(&temporary);
        placed
    }

    /// Removes the named temporaries a killed writer left (none where unnamed files work).
    fn remove_stale_temporaries(&self) -> Result<(), CniError> {
        let dir = self.dir.join(TEMP_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(io_error("list", &dir, err)),
        };
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        Ok(())
    }

    /// Removes the temporaries older podnet versions left beside the address files.
    pub fn remove_old_temporaries(&self) -> Result<(), CniError> {
        let entries = fs::read_dir(&self.dir).map_err(|err| io_error("list", &self.dir, err))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(OLD_TEMP_PREFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// Writes `content` over the start of the file at `path` and cuts it to that length, without
/// ever truncating it to nothing first: ext4 takes a truncation to zero followed by a write for
/// a file being replaced and writes it back to disk at once (`auto_da_alloc`), which made this
/// one small write a third of host-local's time.
fn overwrite(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.write_all_at(content.as_bytes(), 0)?;
    file.set_len(content.len() as u64)
}

/// Whether opening an unnamed file failed because the file system (or kernel) has none.
fn unnamed_files_unsupported(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL)
    )
}

fn io_error(action: &str, path: &Path, err: std::io::Error) -> CniError {
    CniError::io(format!("host-local: cannot {action} {}", path.display())).details(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("podnet-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_the_reference_layout() {
        let data = temp_dir("layout");
        let store = Store::lock(&data, "net").unwrap();
        let ip: IpAddr = "10.88.7.2".parse().unwrap();
        assert!(store.reserve(ip, "h1", "eth0", 0).unwrap());
        assert!(!store.reserve(ip, "h2", "eth0", 0).unwrap(), "double allocation");
        assert_eq!(fs::read(data.join("net/10.88.7.2")).unwrap(), b"h1\r\neth0");
        assert_eq!(
            fs::read_to_string(data.join("net/last_reserved_ip.0")).unwrap(),
            "10.88.7.2"
        );
        // Written in place: a shorter address leaves nothing of a longer one.
        let long: IpAddr = "10.88.7.200".parse().unwrap();
        assert!(store.reserve(long, "h3", "eth0", 0).unwrap());
        store.release(long).unwrap();
        assert!(
            store
                .reserve("10.88.7.3".parse().unwrap(), "h3", "eth0", 0)
                .unwrap()
        );
        assert_eq!(
            fs::read_to_string(data.join("net/last_reserved_ip.0")).unwrap(),
            "10.88.7.3"
        );
        store.release("10.88.7.3".parse().unwrap()).unwrap();
        assert!(data.join("net/lock").exists());
        let names: Vec<_> = fs::read_dir(data.join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temporary left: {names:?}");
        drop(store);
        fs::remove_dir_all(data).unwrap();
    }

    #[test]
    fn the_owner_index_is_confirmed_by_the_address_files() {
        let data = temp_dir("index");
        let store = Store::lock(&data, "net").unwrap();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap());
        assert!(store.reserve(a, "c1", "eth0", 0).unwrap());
        assert!(store.reserve(b, "c1", "eth0", 1).unwrap());
        assert_eq!(
            store.indexed("c1", "eth0").unwrap(),
            None,
            "no index yet: the files say it"
        );
        assert_eq!(store.held_by("c1", "eth0").unwrap().len(), 2);
        store.index("c1", "eth0", &[a, b]).unwrap();
        let mut indexed = store.indexed("c1", "eth0").unwrap().unwrap();
        indexed.sort();
        assert_eq!(indexed, vec![a, b]);
        // Entries are second names of the address files: no file of their own.
        let entry = data.join("net/.podnet-owners/c1:eth0:fd00::2");
        assert_eq!(
            fs::metadata(&entry).unwrap().ino(),
            fs::metadata(data.join("net/fd00::2")).unwrap().ino()
        );
        // An address released behind the index's back is not reported.
        store.release(b).unwrap();
        assert_eq!(store.held_by("c1", "eth0").unwrap(), vec![a]);
        store.unindex("c1", "eth0").unwrap();
        assert_eq!(store.indexed_owners(), Vec::<(String, String)>::new());
        // An earlier version's index file is read and removed too.
        fs::write(data.join("net/.podnet-owners/c2:eth0"), "10.0.0.2\n").unwrap();
        store.release(a).unwrap();
        assert!(store.reserve(a, "c2", "eth0", 0).unwrap());
        assert_eq!(store.indexed("c2", "eth0").unwrap(), Some(vec![a]));
        assert_eq!(store.indexed_owners(), [("c2".to_owned(), "eth0".to_owned())]);
        store.unindex("c2", "eth0").unwrap();
        assert!(store.indexed_owners().is_empty());
        drop(store);
        fs::remove_dir_all(data).unwrap();
    }

    #[test]
    fn reads_old_id_only_files_and_cleans_stale_temporaries() {
        let data = temp_dir("legacy");
        fs::create_dir_all(data.join("net")).unwrap();
        fs::write(data.join("net/10.0.0.9"), "oldcontainer").unwrap();
        fs::write(data.join("net/.podnet-tmp-99999"), "left by an old version").unwrap();
        fs::create_dir_all(data.join("net/.podnet-tmp")).unwrap();
        fs::write(data.join("net/.podnet-tmp/99998"), "half written").unwrap();
        let store = Store::lock(&data, "net").unwrap();
        assert!(!data.join("net/.podnet-tmp/99998").exists(), "stale at lock");
        let reservations = store.reservations().unwrap();
        assert_eq!(reservations.len(), 1);
        assert!(reservations[0].1.is("oldcontainer", "eth7"));
        store.remove_old_temporaries().unwrap();
        assert!(!data.join("net/.podnet-tmp-99999").exists());
        drop(store);
        fs::remove_dir_all(data).unwrap();
    }

    #[test]
    fn both_ways_of_publishing_create_and_leave_no_temporary() {
        let data = temp_dir("publish");
        let store = Store::lock(&data, "net").unwrap();
        let path = data.join("net/file");
        for named in [false, true] {
            let publish = |content: &str| {
                if named {
                    store.publish_named(&path, content)
                } else {
                    store.publish(&path, content)
                }
            };
            publish("one").unwrap();
            let taken = publish("two").unwrap_err();
            assert_eq!(taken.kind(), ErrorKind::AlreadyExists);
            assert_eq!(fs::read_to_string(&path).unwrap(), "one");
            fs::remove_file(&path).unwrap();
        }
        let temporaries = fs::read_dir(data.join("net/.podnet-tmp")).unwrap().count();
        assert_eq!(temporaries, 0);
        drop(store);
        fs::remove_dir_all(data).unwrap();
    }
}
