//! The only place in podnet that enters a network namespace or opens a netlink socket.
//!
//! A Linux network namespace is a private copy of the network stack: its own links, addresses,
//! routes, neighbour tables, netfilter rules and `/proc/sys/net` settings. A netlink socket is
//! bound to the namespace of the thread that created it and keeps talking to that namespace for
//! its whole life, whichever thread uses it later. [`Netns`] exploits that: it enters a
//! namespace on a short-lived dedicated OS thread, opens the socket there and hands it back, so
//! no caller's thread ever changes namespace.
//!
//! Above the raw [`socket`], [`Netlink`] offers typed operations (links, addresses, routes,
//! neighbours, bridge FDB); business code never builds netlink messages itself.

mod address;
pub mod conntrack;
mod error;
mod link;
mod neighbour;
pub mod netns;
pub mod nfnetlink;
mod route;
mod socket;
pub mod sysctl;

pub use address::Address;
pub use error::{Error, Result};
pub use link::{Link, LinkKind, VethPair, Vxlan, format_mac};
pub use neighbour::{FdbEntry, Neighbour};
pub use netns::{Netns, NetnsId, SandboxView, UtsNs};
pub use nfnetlink::NfNetlink;
pub use route::{Route, RouteProtocol, RouteScope};
pub use socket::Netlink;
