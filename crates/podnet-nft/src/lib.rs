//! nftables transactions, applied atomically by `nft -f -`.
//!
//! nftables keeps rules in tables that each owner creates for itself, unlike iptables' shared
//! chains: podnet only ever touches tables it created. A script piped to `nft -f -` is one kernel
//! transaction: it applies entirely or not at all, so a half-written ruleset is never live. This
//! is how Kubernetes' own nftables proxy (knftables) drives the kernel.
//!
//! Kernel cost worth knowing: a transaction that *deletes* anything makes the `nft` process wait
//! for an RCU grace period when it exits (10-20 ms measured), while one that only adds returns in
//! about 3 ms. Hot paths should therefore add, and delete only when something really goes away.

mod probe;

pub use probe::table_exists;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};

/// An nftables address family, as written in nft scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `ip`: IPv4 only.
    Ip,
    /// `inet`: IPv4 and IPv6 in one table.
    Inet,
}

impl Family {
    /// The family keyword of nft scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Inet => "inet",
        }
    }

    /// The `NFPROTO_*` number of the family.
    fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
        }
    }
}

/// The nft executable, found on `PATH`.
const NFT: &str = "nft";

/// A failed nftables transaction.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `nft` could not be started.
    #[error("cannot run `nft` (is the nftables package installed?): {0}")]
    Spawn(#[source] std::io::Error),
    /// The kernel or `nft` rejected the transaction; nothing of it was applied.
    #[error("nftables rejected the transaction: {stderr}")]
    Rejected {
        /// What `nft` printed (it quotes the offending line of the script).
        stderr: String,
    },
}

/// An nft script built up command by command and applied as one transaction.
#[derive(Debug, Default, Clone)]
pub struct Transaction {
    script: String,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one nft command (`add element inet podnet-cni ...`).
    pub fn push(&mut self, command: impl AsRef<str>) -> &mut Self {
        self.script.push_str(command.as_ref());
        self.script.push('\n');
        self
    }

    /// Appends a command built with `format_args!`, without an intermediate string.
    pub fn push_fmt(&mut self, command: std::fmt::Arguments<'_>) -> &mut Self {
        let _ = self.script.write_fmt(command);
        self.script.push('\n');
        self
    }

    /// Appends commands that delete `object` (`chain inet t c`, `element inet t s { x }`) whether
    /// or not it exists: nft 1.0.6 has no `destroy`, but `add` of an existing object is a no-op,
    /// so `add` then `delete` always succeeds.
    pub fn push_delete(&mut self, object: &str) -> &mut Self {
        self.push_fmt(format_args!("add {object}"));
        self.push_fmt(format_args!("delete {object}"))
    }

    /// The script text.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// Applies the transaction and waits for the kernel's answer.
    pub fn apply(&self) -> Result<(), Error> {
        self.start()?.wait()
    }

    /// Starts applying the transaction in an `nft` process and returns at once, so the caller
    /// can do other work while the kernel commits; [`Pending::wait`] collects the outcome.
    pub fn start(&self) -> Result<Pending, Error> {
        let mut child = Command::new(NFT)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::Spawn)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A short script fits in the pipe buffer; if nft died early, its stderr says why.
        let _ = stdin.write_all(self.script.as_bytes());
        drop(stdin);
        Ok(Pending { child })
    }
}

/// A transaction being applied by a running `nft` process.
#[derive(Debug)]
pub struct Pending {
    child: Child,
}

impl Pending {
    /// Waits for `nft` to finish and reports whether the kernel accepted the transaction.
    pub fn wait(self) -> Result<(), Error> {
        let output = self.child.wait_with_output().map_err(Error::Spawn)?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::Rejected {
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_of_possibly_missing_object_adds_first() {
        let mut transaction = Transaction::new();
        transaction.push_delete("element inet podnet-cni masq-v4 { 10.0.0.0/24 }");
        assert_eq!(
            transaction.script(),
            "add element inet podnet-cni masq-v4 { 10.0.0.0/24 }\n\
             delete element inet podnet-cni masq-v4 { 10.0.0.0/24 }\n"
        );
    }
}
