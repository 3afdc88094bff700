//! Errors of kernel operations, each naming the object it failed on.

use std::io;
use std::path::PathBuf;

/// A failed namespace or netlink operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a netlink request.
    #[error("{operation} failed: {source}")]
    Kernel {
        /// What was attempted, with the object it was attempted on (`add address 10.0.0.2/24 to eth0`).
        operation: String,
        /// The errno the kernel answered with.
        #[source]
        source: io::Error,
    },
    /// A path given as a network namespace does not exist or is not one.
    #[error("{path}: {reason}")]
    Netns {
        /// The path that was given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A named link, address or route was expected but not found.
    #[error("{0} not found")]
    NotFound(String),
    /// Talking to the kernel failed at the transport level (socket, encoding, decoding).
    #[error("netlink: {0}")]
    Transport(String),
    /// Any other system call (mount, unshare, setns, file access) failed.
    #[error("{operation}: {source}")]
    System {
        /// What was attempted.
        operation: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The errno of a kernel or system error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } | Error::System { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True when the object the operation targeted already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(nix::libc::EEXIST)
    }

    /// True when the object the operation targeted is gone (ENOENT, ENODEV, ESRCH, or not found).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
            || matches!(
                self.errno(),
                Some(nix::libc::ENOENT | nix::libc::ENODEV | nix::libc::ESRCH)
            )
    }

    pub(crate) fn system(operation: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::System {
            operation: operation.into(),
            source: source.into(),
        }
    }
}

/// Result of a kernel operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
