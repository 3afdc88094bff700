//! Forwarding: questions the server holds no answer to go to upstream servers, as CoreDNS's
//! `forward` plugin sends them.
//!
//! Upstreams are tried in the order given. One that fails (no answer in time, SERVFAIL,
//! REFUSED, unreachable) is skipped for the next and marked down; queries pass over a down
//! upstream (unless all are down), while a probe asks it for the root's NS records every half
//! second until it answers again, whatever it answers (CoreDNS's `health_check`: a server that
//! answers is reachable). A truncated answer is asked again over TCP ([`exchange`]).

pub mod exchange;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use crate::answer::{Answer, Question};
use exchange::exchange;

/// How long one upstream has to answer (CoreDNS's read timeout).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a question may take over every upstream tried (CoreDNS's).
const QUESTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a down upstream is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long a probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One upstream server and how it fares.
#[derive(Debug)]
pub struct Upstream {
    address: SocketAddr,
    healthy: AtomicBool,
    /// Whether a probe is running.
    probing: AtomicBool,
    questions: AtomicU64,
    failures: AtomicU64,
}

impl Upstream {
    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether it answered the last time it was asked.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// How many questions it was asked.
    pub fn questions(&self) -> u64 {
        self.questions.load(Ordering::Relaxed)
    }

    /// How many of them it failed.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// Every upstream tried failed.
#[derive(Debug, thiserror::Error)]
#[error("no upstream answered")]
pub struct NoAnswer;

/// The upstream servers.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Box<[Arc<Upstream>]>,
}

impl Forwarder {
    /// Forwarding to `addresses`, in this order.
    pub fn new(addresses: &[SocketAddr]) -> Self {
        let upstreams = addresses
            .iter()
            .map(|address| {
                Arc::new(Upstream {
                    address: *address,
                    healthy: AtomicBool::new(true),
                    probing: AtomicBool::new(false),
                    questions: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                })
            })
            .collect();
        Forwarder { upstreams }
    }

    /// The upstreams, in order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The first answer an upstream gives to `question` that is no failure. An upstream that
    /// refuses the question or fails it (REFUSED, SERVFAIL) answered, so it stays up, but the
    /// next is asked; when none does better, that answer is passed on. Upstreams that do not
    /// answer are marked down. Must run inside a tokio runtime, which also runs the probes of
    /// upstreams it finds down.
    pub async fn resolve(&self, question: &Question) -> Result<Answer, NoAnswer> {
        let deadline = Instant::now() + QUESTION_TIMEOUT;
        let any_healthy = self.upstreams.iter().any(|upstream| upstream.healthy());
        let mut refusal = None;
        for upstream in self
            .upstreams
            .iter()
            .filter(|upstream| upstream.healthy() || !any_healthy)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            upstream.questions.fetch_add(1, Ordering::Relaxed);
            match exchange(upstream.address, question, left.min(ATTEMPT_TIMEOUT)).await {
                Ok(answer) => {
                    upstream.healthy.store(true, Ordering::Relaxed);
                    if !matches!(answer.rcode, ResponseCode::ServFail | ResponseCode::Refused) {
                        return Ok(answer);
                    }
                    tracing::debug!(
                        "upstream {} answered {} for {}",
                        upstream.address,
                        answer.rcode,
                        question.name
                    );
                    refusal.get_or_insert(answer);
                }
                Err(error) => {
                    tracing::debug!("upstream {} failed {}: {error}", upstream.address, question.name);
                    mark_down(upstream);
                }
            }
        }
        refusal.ok_or(NoAnswer)
    }
}

/// Counts a failure of `upstream`, marks it down and starts its probe if none runs.
fn mark_down(upstream: &Arc<Upstream>) {
    upstream.failures.fetch_add(1, Ordering::Relaxed);
    if upstream.healthy.swap(false, Ordering::Relaxed) {
        tracing::warn!(
            "upstream {} failed: skipping it until it answers again",
            upstream.address
        );
    }
    if !upstream.probing.swap(true, Ordering::Relaxed) {
        tokio::spawn(probe(upstream.clone()));
    }
}

/// Asks `upstream` for the root's NS records until it answers, then marks it up.
async fn probe(upstream: Arc<Upstream>) {
    let question = Question::new(Name::root(), RecordType::NS);
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        if upstream.healthy() {
            break;
        }
        if exchange(upstream.address, &question, PROBE_TIMEOUT).await.is_ok() {
            tracing::info!("upstream {} answers again", upstream.address);
            upstream.healthy.store(true, Ordering::Relaxed);
            break;
        }
    }
    upstream.probing.store(false, Ordering::Relaxed);
}
