//! What can stop the DNS server, each error saying what was wrong and what to do.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the DNS server could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A DNS socket could not be bound.
    #[error(
        "cannot answer DNS over {protocol} on {address}: {source}; another DNS server (systemd-resolved, \
         dnsmasq, CoreDNS) may hold the port, and ports below 1024 need root or CAP_NET_BIND_SERVICE: \
         stop it, or choose another address with --listen"
    )]
    Bind {
        /// `UDP` or `TCP`.
        protocol: &'static str,
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An HTTP endpoint could not be bound.
    #[error("cannot serve {endpoint} on {address}: {source}; free the port or choose another with --{flag}")]
    Http {
        /// The paths served there (`/health`...).
        endpoint: String,
        /// The address.
        address: SocketAddr,
        /// The flag choosing it.
        flag: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// No upstream could be read from resolv.conf.
    #[error(
        "cannot find upstream nameservers in {}: {reason}; name them with --upstream, or pass --no-forward \
         to answer only the cluster's and the static names",
        path.display()
    )]
    Upstreams {
        /// The resolv.conf read.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The cluster domain is no domain name.
    #[error("the cluster domain {0:?} is not a domain name: pass --cluster-domain cluster.local, say")]
    ClusterDomain(String),
    /// The caller gave no cluster source while the arguments ask for a cluster.
    #[error(
        "no cluster source to read Services from: pass --no-cluster to serve only static records and forwarding"
    )]
    NoSource,
    /// A worker thread could not be started.
    #[error("cannot start the DNS server's {what}: {source}")]
    Thread {
        /// Which thread.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster source closed its watch: records would go stale.
    #[error("the cluster source closed its watch: the DNS server can no longer follow Services; restart it")]
    SourceClosed,
}
