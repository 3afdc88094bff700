//! What a teardown could not do. Teardown never stops at the first failure: it goes on with
//! the rest and reports every failure at the end, so running it again finishes the job.

use std::fmt;

/// The failures of one teardown, in the order they happened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Failures(Vec<String>);

impl Failures {
    /// No failure yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One failure.
    pub fn one(failure: impl fmt::Display) -> Self {
        Failures(vec![failure.to_string()])
    }

    /// Records a failure.
    pub fn push(&mut self, failure: impl fmt::Display) {
        self.0.push(failure.to_string());
    }

    /// Records the failure of `result`, if it failed, saying what was being done.
    pub fn check<T, E: fmt::Display>(&mut self, what: impl fmt::Display, result: Result<T, E>) {
        if let Err(err) = result {
            self.0.push(format!("{what}: {err}"));
        }
    }

    /// Records the failures of another teardown.
    pub fn extend(&mut self, other: Failures) {
        self.0.extend(other.0);
    }

    /// Whether everything went well.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}
