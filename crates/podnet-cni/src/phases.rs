//! Where an invocation's time goes, for `bench/cni.sh`: with `PODNET_CNI_PHASES` set in the
//! plugin's environment, it writes how long each phase took to stderr when it is done, as one
//! JSON object of microseconds (`{"decode":41,"netns":93,...}`). Unset, marking a phase costs a
//! load of a flag.
//!
//! A phase ends where the next one is marked; the first starts when the plugin's `main` does,
//! so the process start before it is what a caller measures minus the sum.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The variable that turns the report on.
pub const VARIABLE: &str = "PODNET_CNI_PHASES";

struct Record {
    started: Instant,
    ends: Vec<(&'static str, Instant)>,
}

fn record() -> Option<&'static Mutex<Record>> {
    static RECORD: OnceLock<Option<Mutex<Record>>> = OnceLock::new();
    RECORD
        .get_or_init(|| {
            std::env::var_os(VARIABLE).map(|_| {
                Mutex::new(Record {
                    started: Instant::now(),
                    ends: Vec::new(),
                })
            })
        })
        .as_ref()
}

/// Starts the clock (the plugin's `main` calls it first).
pub fn start() {
    record();
}

/// Ends phase `name` now.
pub fn end(name: &'static str) {
    if let Some(record) = record() {
        let mut record = record.lock().expect("phases lock");
        record.ends.push((name, Instant::now()));
    }
}

/// Writes the phases to stderr, when asked to.
pub fn report() {
    let Some(record) = record() else { return };
    let record = record.lock().expect("phases lock");
    let mut previous = record.started;
    let mut durations = serde_json::Map::new();
    for (name, end) in &record.ends {
        let micros = end.duration_since(previous).as_micros() as u64;
        let total = durations
            .get(*name)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        durations.insert((*name).to_owned(), (total + micros).into());
        previous = *end;
    }
    eprintln!("{}", serde_json::Value::Object(durations));
}
