//! The server's sockets and threads.
//!
//! [`DnsServer::bind`] opens everything first (UDP and TCP on the listen address, the HTTP
//! endpoints), so that a port in use is reported before anything runs. [`DnsServer::serve`]
//! then starts one thread per UDP worker ([`udp`]) and one for TCP ([`tcp`]), each with a
//! single-threaded tokio runtime of its own, and follows the cluster on the caller's runtime.
//! The threads stop when `serve` returns or is dropped.

mod query;
mod tcp;
mod udp;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use podnet_http::{Handler, not_found};
use podnet_model::ClusterSource;
use tokio::sync::watch;

use crate::cache::Cache;
use crate::cli::DnsArgs;
use crate::cluster::{self, ClusterZone};
use crate::error::DnsError;
use crate::forward::Forwarder;
use crate::metrics::{Counters, Metrics};
use crate::resolv_conf::{RESOLV_CONF, nameservers};
use crate::resolver::Resolver;
use crate::static_zone::StaticZones;

/// How many times a listen address with port 0 is tried for a port free for both UDP and TCP.
const FREE_PORT_TRIES: usize = 16;

/// A DNS server with its sockets bound, ready to serve.
pub struct DnsServer {
    udp: Vec<std::net::UdpSocket>,
    tcp: std::net::TcpListener,
    address: SocketAddr,
    http: Vec<podnet_http::Server>,
    endpoints: Endpoints,
    resolver: Arc<Resolver>,
    zone: Option<Arc<ClusterZone>>,
    /// Counts of each UDP worker, then of the TCP thread.
    counters: Vec<Arc<Counters>>,
    ready: Arc<AtomicBool>,
}

/// Where the HTTP endpoints listen.
#[derive(Debug, Clone, Copy)]
struct Endpoints {
    health: SocketAddr,
    ready: SocketAddr,
    metrics: SocketAddr,
}

impl DnsServer {
    /// Opens the sockets `args` ask for and prepares what answers: the cluster zone (empty until
    /// served), the static zones, the cache and the upstreams.
    pub fn bind(args: &DnsArgs) -> Result<Self, DnsError> {
        let zone = match args.no_cluster {
            true => None,
            false => Some(Arc::new(
                ClusterZone::new(&args.cluster_domain, args.ttl)
                    .ok_or_else(|| DnsError::ClusterDomain(args.cluster_domain.clone()))?,
            )),
        };
        let forwarder = match args.no_forward {
            true => None,
            false => Some(Forwarder::new(&upstreams(args, Path::new(RESOLV_CONF))?)),
        };
        let resolver = Arc::new(Resolver::new(
            zone.clone(),
            StaticZones::new(&args.static_records, args.ttl),
            Cache::new(args.cache_size),
            forwarder,
        ));
        let workers = args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1);
        let (udp, tcp) = bind_dns(args.listen, workers)?;
        let address = tcp.local_addr().map_err(|source| DnsError::Bind {
            protocol: "TCP",
            address: args.listen,
            source,
        })?;
        let counters: Vec<Arc<Counters>> = (0..=workers).map(|_| Arc::default()).collect();
        let ready = Arc::new(AtomicBool::new(zone.is_none()));
        let metrics = Arc::new(Metrics::new(counters.clone(), resolver.clone(), ready.clone()));
        let (http, endpoints) = serve_http(args, &metrics)?;
        Ok(DnsServer {
            udp,
            tcp,
            address,
            http,
            endpoints,
            resolver,
            zone,
            counters,
            ready,
        })
    }

    /// Where DNS is answered, over UDP and TCP.
    pub fn dns_address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/health` is answered.
    pub fn health_address(&self) -> SocketAddr {
        self.endpoints.health
    }

    /// Where `/ready` is answered.
    pub fn ready_address(&self) -> SocketAddr {
        self.endpoints.ready
    }

    /// Where `/metrics` is served.
    pub fn metrics_address(&self) -> SocketAddr {
        self.endpoints.metrics
    }

    /// Serves until the cluster source closes its watch, or forever without a cluster.
    /// `source` is read only when the server serves a cluster (not with `--no-cluster`).
    pub async fn serve(self, source: Option<&dyn ClusterSource>) -> Result<(), DnsError> {
        if self.zone.is_some() && source.is_none() {
            return Err(DnsError::NoSource);
        }
        let (stop, stopped) = watch::channel(());
        let tcp_counters = self.counters[self.udp.len()].clone();
        for (index, (socket, counters)) in self.udp.into_iter().zip(&self.counters).enumerate() {
            let (resolver, counters, stopped) = (self.resolver.clone(), counters.clone(), stopped.clone());
            spawn_thread(format!("dns-udp-{index}"), move || {
                udp::serve(socket, resolver, counters, stopped)
            })?;
        }
        let (resolver, listener) = (self.resolver.clone(), self.tcp);
        spawn_thread("dns-tcp".to_owned(), move || {
            tcp::serve(listener, resolver, tcp_counters, stopped)
        })?;
        tracing::info!("answering DNS on {} (UDP and TCP)", self.address);
        let result = match (self.zone, source) {
            (Some(zone), Some(source)) => {
                cluster::follow(source, zone, &self.ready).await;
                Err(DnsError::SourceClosed)
            }
            _ => match std::future::pending::<Infallible>().await {},
        };
        drop((stop, self.http));
        result
    }
}

/// Runs a thread with a single-threaded tokio runtime of its own, until the future `work`
/// makes there ends (it stays on that thread, so it need not be `Send`).
fn spawn_thread<F: Future<Output = ()>>(
    name: String,
    work: impl FnOnce() -> F + Send + 'static,
) -> Result<(), DnsError> {
    let failed = |source| DnsError::Thread {
        what: name.clone(),
        source,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || runtime.block_on(work()))
        .map_err(failed)?;
    Ok(())
}

/// UDP sockets for `workers` workers and a TCP listener, on the same address and port.
fn bind_dns(
    listen: SocketAddr,
    workers: usize,
) -> Result<(Vec<std::net::UdpSocket>, std::net::TcpListener), DnsError> {
    let failed = |protocol, source| DnsError::Bind {
        protocol,
        address: listen,
        source,
    };
    let mut tries = 0;
    loop {
        let udp = udp::bind(listen, workers).map_err(|source| failed("UDP", source))?;
        let address = udp[0].local_addr().map_err(|source| failed("UDP", source))?;
        match tcp::bind(address) {
            Ok(tcp) => return Ok((udp, tcp)),
            // The system chose a UDP port that is taken for TCP: choose again.
            Err(source) if listen.port() == 0 && tries < FREE_PORT_TRIES => {
                tracing::debug!("port {} is free for UDP but not TCP: {source}", address.port());
                tries += 1;
            }
            Err(source) => return Err(failed("TCP", source)),
        }
    }
}

/// The upstreams: given, or else resolv.conf's nameservers; never the server itself, which
/// would forward to itself forever.
fn upstreams(args: &DnsArgs, resolv_conf: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let failed = |reason: String| DnsError::Upstreams {
        path: resolv_conf.to_owned(),
        reason,
    };
    let given = if args.upstreams.is_empty() {
        let text = std::fs::read_to_string(resolv_conf).map_err(|error| failed(error.to_string()))?;
        nameservers(&text)
    } else {
        args.upstreams.clone()
    };
    let itself = |upstream: &SocketAddr| {
        upstream.port() == args.listen.port()
            && (upstream.ip() == args.listen.ip()
                || (args.listen.ip().is_unspecified() && is_local(upstream.ip())))
    };
    let (looping, upstreams): (Vec<SocketAddr>, Vec<SocketAddr>) = given.into_iter().partition(itself);
    for upstream in &looping {
        tracing::warn!("not forwarding to {upstream}: it is this server itself");
    }
    if upstreams.is_empty() {
        return Err(failed(match looping.is_empty() {
            true => "no nameserver line".into(),
            false => "every nameserver is this server itself".into(),
        }));
    }
    Ok(upstreams)
}

fn is_local(address: IpAddr) -> bool {
    address.is_loopback() || address.is_unspecified()
}

/// Serves the health, readiness and metrics endpoints, one HTTP server per distinct address.
fn serve_http(
    args: &DnsArgs,
    metrics: &Arc<Metrics>,
) -> Result<(Vec<podnet_http::Server>, Endpoints), DnsError> {
    type Serve = fn(&Metrics, &str) -> podnet_http::Answer;
    let wanted: [(&str, &str, SocketAddr, Serve); 3] = [
        ("/health", "health-address", args.health_address, Metrics::health),
        ("/ready", "ready-address", args.ready_address, Metrics::ready),
        (
            "/metrics",
            "metrics-address",
            args.metrics_address,
            Metrics::metrics,
        ),
    ];
    let mut by_address: BTreeMap<SocketAddr, Vec<(&str, &'static str, Serve)>> = BTreeMap::new();
    for (path, flag, address, serve) in wanted {
        by_address.entry(address).or_default().push((path, flag, serve));
    }
    let mut servers = Vec::new();
    let mut bound: BTreeMap<&str, SocketAddr> = BTreeMap::new();
    for (address, paths) in by_address {
        let routes: Vec<(String, Serve)> = paths
            .iter()
            .map(|(path, _, serve)| ((*path).to_owned(), *serve))
            .collect();
        let metrics = metrics.clone();
        let handler: Handler =
            Arc::new(
                move |path: &str| match routes.iter().find(|(route, _)| route == path) {
                    Some((_, serve)) => serve(&metrics, path),
                    None => not_found(),
                },
            );
        let server = podnet_http::Server::start(address, handler).map_err(|source| DnsError::Http {
            endpoint: paths
                .iter()
                .map(|(path, _, _)| *path)
                .collect::<Vec<_>>()
                .join(", "),
            address,
            flag: paths[0].1,
            source,
        })?;
        for (path, _, _) in &paths {
            bound.insert(path, server.address());
        }
        servers.push(server);
    }
    let at = |path: &str| bound.get(path).copied().unwrap_or(args.health_address);
    let endpoints = Endpoints {
        health: at("/health"),
        ready: at("/ready"),
        metrics: at("/metrics"),
    };
    Ok((servers, endpoints))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
