//! Network namespaces (and the UTS namespaces pod sandboxes pair them with): opening,
//! entering, creating and deleting them.
//!
//! A namespace lives as long as something refers to it: a process inside it, an open file
//! descriptor, or a bind mount. Named namespaces follow the `ip netns` convention: an empty file
//! under `/run/netns` with the namespace bind-mounted onto it, so `ip netns exec NAME` and
//! container runtimes (`CNI_NETNS=/run/netns/NAME`) find them. `setns(2)` changes the namespace
//! of the calling *thread* only, which is why [`Netns::run`] always works on a fresh thread and
//! never touches the caller's. A socket belongs to the namespace it was created in, for life:
//! [`Netns::socket_in`] creates one there by stepping the calling thread in and straight back
//! out, which costs two system calls instead of a thread.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

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

impl NetnsId {
    /// The identity of the namespace at `path` (a pin, or `/proc/PID/ns/net`).
    pub fn of_path(path: &Path) -> Result<Self> {
        let meta =
            fs::metadata(path).map_err(|err| Error::system(format!("stat {}", path.display()), err))?;
        Ok(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
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
        if fs.filesystem_type() != NSFS_MAGIC {
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
        run_in(
            SandboxView {
                netns: self,
                uts: None,
                files: &[],
            },
            f,
        )
    }

    /// Runs `create` (which makes a socket, and nothing else: no blocking, no spawning) with the
    /// calling thread inside this namespace, and returns the thread to its own namespace.
    ///
    /// # Panics
    /// When the thread cannot return to its namespace, which leaves nothing sane to go on with.
    pub fn socket_in<T>(&self, create: impl FnOnce() -> T) -> Result<T> {
        let own = File::open("/proc/thread-self/ns/net")
            .map_err(|err| Error::system("open the thread's network namespace", err))?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|err| Error::system(format!("enter network namespace {}", self.path.display()), err))?;
        let socket = create();
        setns(own.as_fd(), CloneFlags::CLONE_NEWNET)
            .expect("a thread can always return to the network namespace it came from");
        Ok(socket)
    }

    /// Creates a new network namespace pinned at `/run/netns/NAME`.
    ///
    /// Fails if a namespace of that name exists already; the new namespace has only a `lo` link,
    /// still down.
    pub fn create_named(name: &str) -> Result<Self> {
        let path = named_path(name)?;
        prepare_run_dir()?;
        pin_new(CloneFlags::CLONE_NEWNET, "net", &path, || Ok(()))?;
        Self::open(&path)
    }

    /// Deletes the named namespace pinned at `/run/netns/NAME`; deleting a missing one succeeds.
    ///
    /// The namespace itself disappears once the last process and handle inside it are gone.
    pub fn delete_named(name: &str) -> Result<()> {
        unpin(&named_path(name)?)
    }

    /// Whether a namespace named NAME is pinned under `/run/netns`.
    pub fn exists_named(name: &str) -> bool {
        named_path(name).is_ok_and(|path| Self::open(path).is_ok())
    }
}

/// A UTS namespace (hostname and domain name) pinned at a path, as a pod sandbox holds one so
/// that all its containers see the pod's name as their hostname.
#[derive(Debug)]
pub struct UtsNs {
    file: File,
}

impl UtsNs {
    /// Creates a UTS namespace whose hostname is `hostname`, pinned at `path`.
    pub fn create(path: &Path, hostname: &str) -> Result<Self> {
        pin_new(CloneFlags::CLONE_NEWUTS, "uts", path, || {
            nix::unistd::sethostname(hostname)
                .map_err(|err| Error::system(format!("set hostname {hostname}"), err))
        })?;
        Self::open(path)
    }

    /// Opens a pinned UTS namespace.
    pub fn open(path: &Path) -> Result<Self> {
        File::open(path)
            .map(|file| UtsNs { file })
            .map_err(|err| Error::system(format!("open UTS namespace {}", path.display()), err))
    }

    /// Removes the pin at `path`; removing a missing one succeeds.
    pub fn delete(path: &Path) -> Result<()> {
        unpin(path)
    }
}

/// What a process started in a sandbox (a pod's) sees: its network namespace, its UTS
/// namespace (hostname), and files bound over the host's in a mount namespace of its own (a
/// pod's `/etc/resolv.conf`).
#[derive(Debug, Clone, Copy)]
pub struct SandboxView<'a> {
    /// The network namespace.
    pub netns: &'a Netns,
    /// The UTS namespace, if not the caller's.
    pub uts: Option<&'a UtsNs>,
    /// `(source, target)` pairs: `source` appears at `target`.
    pub files: &'a [(PathBuf, PathBuf)],
}

/// Runs `f` on a new thread inside `view`: processes it spawns start there; the caller's thread
/// is untouched.
pub fn run_in<T: Send>(view: SandboxView<'_>, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(view.netns.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|err| {
                    Error::system(
                        format!("enter network namespace {}", view.netns.path.display()),
                        err,
                    )
                })?;
                if let Some(uts) = view.uts {
                    setns(uts.file.as_fd(), CloneFlags::CLONE_NEWUTS)
                        .map_err(|err| Error::system("enter UTS namespace", err))?;
                }
                bind_files(view.files)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Gives the calling thread a mount namespace of its own in which each `(source, target)` file
/// is bound over `target`; nothing when `files` is empty. Mounts made there never reach the
/// host's namespace. Only for a thread that exists for this (or a process about to exec): the
/// thread keeps the new namespace, and the processes it starts inherit it.
pub fn bind_files(files: &[(PathBuf, PathBuf)]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    // A thread shares its file-system context with the process's other threads until it
    // unshares it; only then can it have a mount namespace of its own.
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
        .map_err(|err| Error::system("unshare the mount namespace", err))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|err| Error::system("keep the new mount namespace's mounts from the host's", err))?;
    for (source, target) in files {
        mount(
            Some(source.as_path()),
            target.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|err| {
            Error::system(
                format!("bind {} over {}", source.display(), target.display()),
                err,
            )
        })?;
    }
    Ok(())
}

/// Creates a namespace of `kind` on a fresh thread, runs `inside` in it, and pins it at `path`
/// (an empty file bind-mounted with the thread's `/proc/thread-self/ns/<entry>`).
fn pin_new(
    kind: CloneFlags,
    entry: &str,
    path: &Path,
    inside: impl FnOnce() -> Result<()> + Send,
) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|err| Error::system(format!("create {}", path.display()), err))?;
    let pinned = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                unshare(kind).map_err(|err| Error::system(format!("unshare {entry} namespace"), err))?;
                inside()?;
                mount(
                    Some(format!("/proc/thread-self/ns/{entry}").as_str()),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|err| Error::system(format!("bind mount {}", path.display()), err))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    if pinned.is_err() {
        let _ = fs::remove_file(path);
    }
    pinned
}

/// Unmounts and removes a namespace pin; a missing pin is fine.
fn unpin(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => {}
        Err(err) => return Err(Error::system(format!("unmount {}", path.display()), err)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::system(format!("remove {}", path.display()), err)),
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
