//! The agent's Prometheus metrics and the service proxy's health, as `/metrics` and
//! `/healthz` serve them (kube-proxy's endpoints, with podnet's names).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podnet_http::prometheus::{DurationHistogram, Exposition, MetricType};
use podnet_http::{Answer, not_found};
use serde_json::json;

/// Upper bounds (seconds) of the sync latency histogram's buckets.
const SYNC_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The proxy's figures.
#[derive(Debug, Default)]
struct Proxy {
    sync_errors: u64,
    last_sync: Option<SystemTime>,
    last_error: Option<String>,
    services: usize,
    endpoints: usize,
    elements: usize,
}

/// Everything `/metrics` and `/healthz` report, updated by the controllers.
#[derive(Debug)]
pub struct Metrics {
    proxy: Mutex<Proxy>,
    sync_durations: DurationHistogram,
    /// The node's pods by address (`NAMESPACE/NAME`), once the policy controller has run: the
    /// names of its drop counters.
    policy_pods: Mutex<Option<BTreeMap<Ipv4Addr, String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            proxy: Mutex::default(),
            sync_durations: DurationHistogram::new(&SYNC_BUCKETS),
            policy_pods: Mutex::default(),
        }
    }
}

/// What one proxy sync did.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncReport {
    /// How long it took.
    pub duration: Duration,
    /// Service ports programmed.
    pub services: usize,
    /// Endpoints programmed.
    pub endpoints: usize,
    /// Elements in the table.
    pub elements: usize,
}

impl Metrics {
    /// Records a successful proxy sync.
    pub fn proxy_synced(&self, report: SyncReport) {
        self.sync_durations.observe(report.duration);
        let mut proxy = self.proxy.lock().expect("metrics lock");
        proxy.last_sync = Some(SystemTime::now());
        proxy.last_error = None;
        proxy.services = report.services;
        proxy.endpoints = report.endpoints;
        proxy.elements = report.elements;
    }

    /// Records a failed proxy sync.
    pub fn proxy_failed(&self, error: &str) {
        let mut proxy = self.proxy.lock().expect("metrics lock");
        proxy.sync_errors += 1;
        proxy.last_error = Some(error.to_owned());
    }

    /// Records the node's pods by address, as the policy controller last saw them.
    pub fn policy_pods(&self, pods: BTreeMap<Ipv4Addr, String>) {
        *self.policy_pods.lock().expect("metrics lock") = Some(pods);
    }

    /// `/healthz`: 200 once the proxy has synced and its last sync worked, 503 otherwise.
    pub fn healthz(&self, path: &str) -> Answer {
        if path != "/healthz" && path != "/livez" {
            return not_found();
        }
        let proxy = self.proxy.lock().expect("metrics lock");
        let healthy = proxy.last_sync.is_some() && proxy.last_error.is_none();
        let body = json!({
            "lastUpdated": proxy.last_sync.map(rfc3339).unwrap_or_default(),
            "currentTime": rfc3339(SystemTime::now()),
            "nodeEligible": true,
            "lastError": proxy.last_error,
        });
        Answer {
            status: if healthy { 200 } else { 503 },
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    /// `/metrics`, in Prometheus' text format.
    pub fn metrics(&self, path: &str) -> Answer {
        if path != "/metrics" {
            return not_found();
        }
        let mut text = Exposition::new();
        text.histogram(
            "podnet_proxy_sync_duration_seconds",
            "How long a sync of the service proxy's table took.",
            &self.sync_durations.snapshot(),
        );
        let proxy = self.proxy.lock().expect("metrics lock");
        let last = proxy
            .last_sync
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |elapsed| elapsed.as_secs_f64());
        text.single(
            "podnet_proxy_last_sync_timestamp_seconds",
            "When the service proxy last synced its table (Unix time).",
            MetricType::Gauge,
            last,
        )
        .single(
            "podnet_proxy_sync_errors_total",
            "Syncs of the service proxy's table that failed.",
            MetricType::Counter,
            proxy.sync_errors,
        )
        .single(
            "podnet_proxy_services",
            "Service ports programmed.",
            MetricType::Gauge,
            proxy.services,
        )
        .single(
            "podnet_proxy_endpoints",
            "Endpoints programmed.",
            MetricType::Gauge,
            proxy.endpoints,
        )
        .single(
            "podnet_proxy_table_elements",
            "Elements in the proxy's nftables sets and maps.",
            MetricType::Gauge,
            proxy.elements,
        );
        drop(proxy);
        if let Some(pods) = self.policy_pods.lock().expect("metrics lock").as_ref() {
            let name = "podnet_policy_dropped_packets_total";
            text.family(
                name,
                "Packets NetworkPolicy refused, per pod and direction (new connections only: a refused TCP client's retried SYNs count each).",
                MetricType::Counter,
            );
            for (direction, address, packets) in crate::policy::dropped() {
                let pod = pods
                    .get(&address)
                    .map_or_else(|| address.to_string(), Clone::clone);
                text.sample(name, &[("pod", &pod), ("direction", direction)], packets);
            }
        }
        text.into_answer()
    }
}

/// `2026-12-07T15:04:05Z`.
fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    k8s_openapi::jiff::Timestamp::from_second(seconds as i64)
        .map(|timestamp| timestamp.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_follows_the_last_sync_and_metrics_count_them() {
        let metrics = Metrics::default();
        assert_eq!(metrics.healthz("/healthz").status, 503, "not synced yet");
        metrics.proxy_synced(SyncReport {
            duration: Duration::from_millis(3),
            services: 2,
            endpoints: 4,
            elements: 12,
        });
        assert_eq!(metrics.healthz("/healthz").status, 200);
        let text = metrics.metrics("/metrics").body;
        assert!(
            text.contains("podnet_proxy_sync_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("podnet_proxy_sync_duration_seconds_bucket{le=\"0.002\"} 0"),
            "{text}"
        );
        assert!(text.contains("podnet_proxy_endpoints 4"), "{text}");
        metrics.proxy_failed("boom");
        assert_eq!(metrics.healthz("/healthz").status, 503);
        assert_eq!(metrics.metrics("/nope").status, 404);
    }
}
