//! Prometheus' text exposition format (version 0.0.4): each metric family is a `# HELP` and a
//! `# TYPE` line followed by its samples, `name{label="value"} number`, one a line. A
//! histogram is a family of cumulative `_bucket{le="bound"}` counters plus `_sum` and `_count`.
//!
//! [`DurationHistogram`] records durations without a lock (a few atomic additions), so hot
//! paths can observe every request; [`Exposition`] writes a scrape.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Answer;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a metric family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A count that only grows (it restarts at zero with the process).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations sorted into buckets.
    Histogram,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// The text of one scrape, written family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty scrape.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Its samples follow.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
        self
    }

    /// One sample of the current family; label values are escaped as the format wants.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"");
                for character in value.chars() {
                    match character {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        other => self.text.push(other),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: MetricType, value: impl Display) -> &mut Self {
        self.family(name, help, kind).sample(name, &[], value)
    }

    /// A histogram family: cumulative buckets, `+Inf`, sum and count.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &HistogramSnapshot) -> &mut Self {
        self.family(name, help, MetricType::Histogram);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative += count;
            self.sample(&bucket, &[("le", &bound.to_string())], cumulative);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count);
        self.sample(&format!("{name}_sum"), &[], histogram.sum_seconds);
        self.sample(&format!("{name}_count"), &[], histogram.count)
    }

    /// The text written so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The scrape as an HTTP answer.
    pub fn into_answer(self) -> Answer {
        Answer {
            status: 200,
            content_type: CONTENT_TYPE,
            body: self.text,
        }
    }
}

/// A histogram of durations that many threads observe at once, without a lock.
#[derive(Debug)]
pub struct DurationHistogram {
    /// Upper bounds of the buckets, in seconds, ascending.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); beyond the last bound only `count` holds them.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// An empty histogram with buckets up to `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        DurationHistogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The observations so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .buckets
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64(),
        }
    }
}

/// A histogram's figures at one moment, ready to write or to add to another's.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum_seconds: f64,
}

impl HistogramSnapshot {
    /// An empty snapshot with buckets up to `bounds`.
    pub fn empty(bounds: &'static [f64]) -> Self {
        HistogramSnapshot {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum_seconds: 0.0,
        }
    }

    /// Adds `other`'s observations (a histogram kept per thread, say) to these; their buckets
    /// must be the same.
    pub fn add(&mut self, other: &HistogramSnapshot) {
        debug_assert_eq!(self.bounds, other.bounds, "histograms with different buckets");
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];

    #[test]
    fn a_histogram_is_written_with_cumulative_buckets() {
        let histogram = DurationHistogram::new(&BOUNDS);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_secs(2));
        let mut text = Exposition::new();
        text.histogram("latency_seconds", "How long.", &histogram.snapshot());
        let expected = "# HELP latency_seconds How long.\n\
                        # TYPE latency_seconds histogram\n\
                        latency_seconds_bucket{le=\"0.001\"} 1\n\
                        latency_seconds_bucket{le=\"0.01\"} 2\n\
                        latency_seconds_bucket{le=\"0.1\"} 2\n\
                        latency_seconds_bucket{le=\"+Inf\"} 3\n\
                        latency_seconds_sum 2.0055\n\
                        latency_seconds_count 3\n";
        assert_eq!(text.text(), expected);
    }

    #[test]
    fn snapshots_add_up_and_label_values_are_escaped() {
        let (one, two) = (DurationHistogram::new(&BOUNDS), DurationHistogram::new(&BOUNDS));
        one.observe(Duration::from_millis(2));
        two.observe(Duration::from_millis(3));
        let mut total = HistogramSnapshot::empty(&BOUNDS);
        total.add(&one.snapshot());
        total.add(&two.snapshot());
        assert_eq!(total.count(), 2);
        assert_eq!(total.counts, [0, 2, 0]);
        let mut text = Exposition::new();
        text.family("requests_total", "Requests.", MetricType::Counter)
            .sample("requests_total", &[("path", "a\"b\\c\nd"), ("code", "200")], 7);
        assert!(
            text.text()
                .ends_with("requests_total{path=\"a\\\"b\\\\c\\nd\",code=\"200\"} 7\n"),
            "{}",
            text.text()
        );
    }
}
