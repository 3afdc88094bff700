//! The cluster DNS server: what CoreDNS does in a cluster with its `kubernetes` plugin
//! (`pods insecure`, `fallthrough in-addr.arpa ip6.arpa`), `forward . /etc/resolv.conf` and
//! `cache`.
//!
//! Pods resolve names through it (kubelet writes its Service address into their resolv.conf).
//! Names in the cluster domain are answered from Services, EndpointSlices and Namespaces as
//! the Kubernetes DNS specification, schema 1.1.0, lays them out ([`cluster`]); names given
//! with `--static-record` from those ([`static_zone`]); everything else is forwarded to
//! upstream servers ([`forward`]) and their answers cached ([`cache`]). Cluster objects come
//! only through the source seam ([`podnet_model::ClusterSource`]); changes are answered as soon
//! as the source reports them, without a restart, while queries keep reading.
//!
//! Threads: one UDP worker per core, each with its own socket on the listen address
//! (SO_REUSEPORT: the kernel spreads clients over them) and its own single-threaded runtime, so
//! a query is received, answered and sent on one core without a lock or a queue; one thread
//! for TCP; the caller's runtime follows the cluster. See [`DnsServer`].

mod answer;
mod cache;
mod cli;
pub mod cluster;
mod error;
mod forward;
mod message;
mod metrics;
mod names;
mod resolv_conf;
mod resolver;
mod server;
mod sharded;
mod static_zone;
#[cfg(test)]
mod testing;

use podnet_model::ClusterSource;

pub use cli::{DnsArgs, StaticRecord};
pub use error::DnsError;
pub use server::DnsServer;

/// Serves DNS as `args` describe, from `source` (`None` with `--no-cluster`), until the
/// process ends; returns when a socket cannot be bound or the source closes its watch.
pub async fn run(args: &DnsArgs, source: Option<&dyn ClusterSource>) -> Result<(), DnsError> {
    DnsServer::bind(args)?.serve(source).await
}
