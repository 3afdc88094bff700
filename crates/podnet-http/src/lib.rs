//! What podnet's long-running components expose over HTTP: health and readiness probes and
//! Prometheus metrics.
//!
//! Kubelet probes a container by requesting a path and reading the status code; Prometheus
//! scrapes `/metrics` as plain text, one sample per line. Both send one short request per
//! connection, so a tiny blocking server ([`Server`]) serves them, away from the component's
//! own work; [`prometheus`] writes the text format.

pub mod prometheus;
mod server;

pub use server::{Answer, Handler, Server, not_found};
