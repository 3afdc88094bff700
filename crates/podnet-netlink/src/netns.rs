//! Network namespaces: opening, entering, creating and deleting them.
//!
//! A namespace lives as long as something refers to it: a process inside it, an open file
//! descriptor, or a bind mount. Named namespaces follow the `ip netns` convention: an empty file
//! under `/run/netns` with the namespace bind-mounted onto it, so `ip netns exec NAME` and
//! container runtimes (`CNI_NETNS=/run/netns/NAME`) find them. `setns(2)` changes the namespace
//! of the calling *thread* only, which is why [`Netns::run`] always works on a fresh thread and
//! never touches the caller's.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};

use crate::error::{Error, Result};

/// Where named network namespaces are pinned, as with `ip netns add`.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open handle on a network namespace; it keeps the namespace alive while it is open.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

/// Identity of a namespace: two handles refer to the same namespace when these are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetnsId {
    dev: u64,
    ino: u64,
}

impl Netns {
    /// Opens the namespace at `path` (a `/run/netns/NAME` pin or `/proc/PID/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|err| Error::Netns {
            path: path.to_owned(),
            reason: match err.kind() {
                std::io::ErrorKind::NotFound => "no such network namespace".into(),
                _ => format!("cannot open: {err}"),
            },
        })?;
        let fs = fstatfs(&file).map_err(|err| Error::system(format!("statfs {}", path.display()), err))?;
        if fs.filesystem_type() != NSFS_MAGIC && fs.filesystem_type() != PROC_SUPER_MAGIC {
            return Err(Error::Netns {
                path: path.to_owned(),
                reason: "not a network namespace (expected an nsfs bind mount or /proc/PID/ns/net)".into(),
            });
        }
        Ok(Netns {
            file,
            path: path.to_owned(),
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// The path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's identity, comparable across handles and with `/proc/PID/ns/net`.
    pub fn id(&self) -> Result<NetnsId> {
        let meta = self
            .file
            .metadata()
            .map_err(|err| Error::system(format!("stat {}", self.path.display()), err))?;
        Ok(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Runs `f` on a new thread that has entered this namespace; the caller's thread is untouched.
    ///
    /// Sockets created by `f` stay bound to this namespace, and processes spawned by `f` start in
    /// it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.file.as_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|err| {
                        Error::system(format!("enter network namespace {}", self.path.display()), err)
                    })?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Creates a new network namespace pinned at `/run/netns/NAME`.
    ///
    /// Fails if a namespace of that name exists already; the new namespace has only a `lo` link,
    /// still down.
    pub fn create_named(name: &str) -> Result<Self> {
        let path = named_path(name)?;
        prepare_run_dir()?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|err| Error::system(format!("create {}", path.display()), err))?;
        let pinned = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<()> {
                    unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(|err| Error::system("unshare network namespace", err))?;
                    mount(
                        Some("/proc/thread-self/ns/net"),
                        &path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|err| Error::system(format!("bind mount {}", path.display()), err))
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        if let Err(err) = pinned {
            let _ = fs::remove_file(&path);
            return Err(err);
        }
        Self::open(&path)
    }

    /// Deletes the named namespace pinned at `/run/netns/NAME`; deleting a missing one succeeds.
    ///
    /// The namespace itself disappears once the last process and handle inside it are gone.
    pub fn delete_named(name: &str) -> Result<()> {
        let path = named_path(name)?;
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => {}
            Err(err) => return Err(Error::system(format!("unmount {}", path.display()), err)),
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::system(format!("remove {}", path.display()), err)),
        }
    }

    /// Whether a namespace named NAME is pinned under `/run/netns`.
    pub fn exists_named(name: &str) -> bool {
        named_path(name).is_ok_and(|path| Self::open(path).is_ok())
    }
}

/// The pin path of a named namespace, refusing names that would escape `/run/netns`.
pub fn named_path(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.len() > 255 {
        return Err(Error::Netns {
            path: PathBuf::from(name),
            reason: "invalid namespace name: use 1-255 characters without '/'".into(),
        });
    }
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that pins made later
/// propagate into mount namespaces created earlier (container runtimes rely on this).
fn prepare_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).map_err(|err| Error::system(format!("create {NETNS_RUN_DIR}"), err))?;
    let make_shared = || {
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself first.
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|err| Error::system(format!("bind mount {NETNS_RUN_DIR}"), err))?;
            make_shared().map_err(|err| Error::system(format!("share {NETNS_RUN_DIR}"), err))
        }
        Err(err) => Err(Error::system(format!("share {NETNS_RUN_DIR}"), err)),
    }
}

impl std::os::fd::AsFd for Netns {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}
