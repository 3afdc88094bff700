//! podnet's nftables tables.
//!
//! nftables keeps rules in tables that each owner creates for itself, unlike iptables' shared
//! chains: podnet only ever touches the tables named in [`registry`]. A table is described with
//! the typed [`model`] (chains and their rules, sets and maps and their elements). Changes reach
//! the kernel as one atomic transaction each: structure as an nft [`script`] applied by
//! `nft -f`, element changes straight over netlink ([`elements`]). The [`syncer`] keeps a table
//! equal to a desired state by sending only what changed.

pub mod elements;
pub mod model;
pub mod registry;
pub mod script;
pub mod syncer;

pub use elements::Operation;
pub use model::{BaseChain, Chain, ChainType, Data, Datum, Element, Family, Hook, Set, Table, Verdict};
pub use script::{Pending, Script};
pub use syncer::{Backend, Committed, Kernel, Recorder, Syncer};

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
    /// The kernel refused a netlink transaction; nothing of it was applied.
    #[error(transparent)]
    Netlink(#[from] podnet_netlink::Error),
}

/// Whether table `table` exists in the calling thread's network namespace: one netlink round
/// trip (asking `nft` costs a process).
pub fn table_exists(table: &Table) -> Result<bool, Error> {
    Kernel::new().table_exists(table)
}
