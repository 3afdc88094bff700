//! What the server reports over HTTP, on CoreDNS's ports: liveness (`/health`), readiness
//! (`/ready`: once the cluster has been listed, so a new replica gets no traffic while it
//! would still answer NXDOMAIN for services it has not heard of) and Prometheus metrics
//! (`/metrics`): requests by transport and type, responses by code, cache hits and misses,
//! latency, and how each upstream fares.
//!
//! Each UDP worker counts into [`Counters`] of its own, so the hot path never writes a cache
//! line another core writes; a scrape adds them up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use podnet_http::prometheus::{DurationHistogram, Exposition, HistogramSnapshot, MetricType};
use podnet_http::{Answer, not_found};

use crate::forward::Upstream;
use crate::message::Transport;
use crate::resolver::Resolver;

/// A metric family with one sample per upstream: name, help, type and how to read it.
type UpstreamFamily = (&'static str, &'static str, MetricType, fn(&Upstream) -> u64);

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The query types counted apart; the rest count as `other`.
const TYPES: [(RecordType, &str); 11] = [
    (RecordType::A, "A"),
    (RecordType::AAAA, "AAAA"),
    (RecordType::SRV, "SRV"),
    (RecordType::PTR, "PTR"),
    (RecordType::TXT, "TXT"),
    (RecordType::CNAME, "CNAME"),
    (RecordType::SOA, "SOA"),
    (RecordType::NS, "NS"),
    (RecordType::MX, "MX"),
    (RecordType::HTTPS, "HTTPS"),
    (RecordType::ANY, "ANY"),
];

/// The response codes counted apart; the rest count as `other`.
const RCODES: [(ResponseCode, &str); 7] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
    (ResponseCode::BADVERS, "BADVERS"),
];

const TRANSPORTS: [(Transport, &str); 2] = [(Transport::Udp, "udp"), (Transport::Tcp, "tcp")];

/// One thread's counts.
#[derive(Debug)]
pub struct Counters {
    /// Requests by transport, then by type (the last slot: other types).
    requests: [[AtomicU64; TYPES.len() + 1]; TRANSPORTS.len()],
    /// Responses by code (the last slot: other codes).
    responses: [AtomicU64; RCODES.len() + 1],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    latency: DurationHistogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: Default::default(),
            responses: Default::default(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            latency: DurationHistogram::new(&LATENCY_BUCKETS),
        }
    }
}

impl Counters {
    /// Counts a request.
    pub fn request(&self, transport: Transport, qtype: RecordType) {
        let by_transport = &self.requests[usize::from(transport == Transport::Tcp)];
        let index = TYPES
            .iter()
            .position(|(known, _)| *known == qtype)
            .unwrap_or(TYPES.len());
        by_transport[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response sent for a request received at `started`.
    pub fn response(&self, rcode: ResponseCode, started: Instant) {
        let index = RCODES
            .iter()
            .position(|(known, _)| *known == rcode)
            .unwrap_or(RCODES.len());
        self.responses[index].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(started.elapsed());
    }

    /// Counts a cache lookup.
    pub fn cache_lookup(&self, hit: bool) {
        let counter = if hit { &self.cache_hits } else { &self.cache_misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the HTTP endpoints report.
pub struct Metrics {
    counters: Vec<Arc<Counters>>,
    resolver: Arc<Resolver>,
    ready: Arc<AtomicBool>,
}

impl Metrics {
    /// The report of `resolver`, counted in `counters`, ready once `ready` is.
    pub fn new(counters: Vec<Arc<Counters>>, resolver: Arc<Resolver>, ready: Arc<AtomicBool>) -> Self {
        Metrics {
            counters,
            resolver,
            ready,
        }
    }

    /// `/health`: 200 while the process runs.
    pub fn health(&self, path: &str) -> Answer {
        if path != "/health" {
            return not_found();
        }
        text(200, "OK")
    }

    /// `/ready`: 200 once the cluster has been listed (at once without a cluster), 503 before.
    pub fn ready(&self, path: &str) -> Answer {
        if path != "/ready" {
            return not_found();
        }
        if self.ready.load(Ordering::Relaxed) {
            text(200, "OK")
        } else {
            text(
                503,
                "waiting for the cluster's Services, EndpointSlices and Namespaces to be listed",
            )
        }
    }

    /// `/metrics`, in Prometheus' text format.
    pub fn metrics(&self, path: &str) -> Answer {
        if path != "/metrics" {
            return not_found();
        }
        let sum = |read: &dyn Fn(&Counters) -> &AtomicU64| -> u64 {
            self.counters
                .iter()
                .map(|counters| read(counters).load(Ordering::Relaxed))
                .sum()
        };
        let mut text = Exposition::new();
        let name = "podnet_dns_requests_total";
        text.family(
            name,
            "DNS requests, by transport and query type.",
            MetricType::Counter,
        );
        for (transport_index, (_, transport)) in TRANSPORTS.iter().enumerate() {
            let labels = TYPES.iter().map(|(_, name)| *name).chain(["other"]);
            for (type_index, qtype) in labels.enumerate() {
                let count = sum(&|counters| &counters.requests[transport_index][type_index]);
                if count > 0 {
                    text.sample(name, &[("proto", transport), ("type", qtype)], count);
                }
            }
        }
        let name = "podnet_dns_responses_total";
        text.family(name, "DNS responses, by response code.", MetricType::Counter);
        let labels = RCODES.iter().map(|(_, name)| *name).chain(["other"]);
        for (index, rcode) in labels.enumerate() {
            let count = sum(&|counters| &counters.responses[index]);
            if count > 0 {
                text.sample(name, &[("rcode", rcode)], count);
            }
        }
        let mut latency = HistogramSnapshot::empty(&LATENCY_BUCKETS);
        for counters in &self.counters {
            latency.add(&counters.latency.snapshot());
        }
        text.histogram(
            "podnet_dns_request_duration_seconds",
            "Time from a request's arrival to its response.",
            &latency,
        );
        text.single(
            "podnet_dns_cache_hits_total",
            "Questions answered from the cache of forwarded answers.",
            MetricType::Counter,
            sum(&|counters| &counters.cache_hits),
        )
        .single(
            "podnet_dns_cache_misses_total",
            "Questions the cache had no answer to.",
            MetricType::Counter,
            sum(&|counters| &counters.cache_misses),
        )
        .single(
            "podnet_dns_cache_entries",
            "Answers in the cache.",
            MetricType::Gauge,
            self.resolver.cache().len(),
        );
        if let Some(zone) = self.resolver.cluster() {
            text.single(
                "podnet_dns_cluster_names",
                "Names in the cluster zone (services, their ports and endpoints, namespaces).",
                MetricType::Gauge,
                zone.name_count(),
            );
        }
        if let Some(forwarder) = self.resolver.forwarder() {
            let families: [UpstreamFamily; 3] = [
                (
                    "podnet_dns_forward_requests_total",
                    "Questions asked of each upstream.",
                    MetricType::Counter,
                    Upstream::questions,
                ),
                (
                    "podnet_dns_forward_failures_total",
                    "Questions an upstream failed.",
                    MetricType::Counter,
                    Upstream::failures,
                ),
                (
                    "podnet_dns_upstream_healthy",
                    "Whether an upstream answers (1) or is skipped (0).",
                    MetricType::Gauge,
                    |upstream| u64::from(upstream.healthy()),
                ),
            ];
            for (name, help, kind, value) in families {
                text.family(name, help, kind);
                for upstream in forwarder.upstreams() {
                    text.sample(
                        name,
                        &[("upstream", &upstream.address().to_string())],
                        value(upstream),
                    );
                }
            }
        }
        text.into_answer()
    }
}

fn text(status: u16, body: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: format!("{body}\n"),
    }
}
