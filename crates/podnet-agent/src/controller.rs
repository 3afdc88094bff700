//! Controllers: each concern of the agent (routing, egress, services) watches the kinds it
//! needs and brings its part of the kernel to what they ask for, on its own thread. A
//! controller that fails logs why and tries again later; the others go on (Calico's felix cuts
//! its dataplane the same way).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use podnet_model::{Event, Kind};

/// How often a controller re-applies without any change, repairing drift.
const RESYNC: Duration = Duration::from_secs(60);
/// How long a controller waits before trying again after a failure, at first and at most
/// (doubling in between).
const RETRY: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// How many events may wait for a controller: beyond, the source waits (a busy controller
/// slows the watch down instead of piling up whole API objects in memory).
const BACKLOG: usize = 256;

/// One concern of the agent.
pub trait Controller: Send + 'static {
    /// Its name, for logs.
    fn name(&self) -> &'static str;
    /// The kinds it watches.
    fn kinds(&self) -> &'static [Kind];
    /// Takes in one event of those kinds.
    fn observe(&mut self, event: &Event);
    /// Brings the kernel to what the objects ask for. Returns one line per change made, and
    /// what it could not do (said once, until it changes).
    fn reconcile(&mut self) -> Result<Reconciled, String>;
}

/// What one reconcile did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// One line per change.
    pub changes: Vec<String>,
    /// What the objects ask for but cannot be done, one line each.
    pub warnings: Vec<String>,
}

/// What reaches a controller's thread.
enum Input {
    /// A watch event.
    Event(Arc<Event>),
    /// Something other than the watch changed what it must do: reconcile (once synced).
    Wake,
}

/// A running controller: where its events go.
pub struct Handle {
    kinds: &'static [Kind],
    events: SyncSender<Input>,
}

/// Asks a running controller for a reconcile, from any thread.
#[derive(Clone)]
pub struct Waker(Arc<dyn Fn() + Send + Sync>);

impl Waker {
    /// A waker that calls `wake`.
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Self {
        Waker(Arc::new(wake))
    }

    /// Wakes the controller.
    pub fn wake(&self) {
        (self.0)();
    }
}

impl Handle {
    /// Passes `event` on if the controller watches its kind (`Synced` goes to all), waiting
    /// (without blocking the runtime) while the controller's backlog is full.
    pub async fn offer(&self, event: &Arc<Event>) {
        let wanted = match &**event {
            Event::Relisting(kind) | Event::Listed(kind) | Event::Deleted(kind, _) => {
                self.kinds.contains(kind)
            }
            Event::Applied(object) => self.kinds.contains(&object.kind()),
            Event::Synced => true,
        };
        if !wanted {
            return;
        }
        let mut input = Input::Event(event.clone());
        loop {
            match self.events.try_send(input) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    input = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// A waker for the controller. With its backlog full a reconcile is coming anyway, so the
    /// wake is not queued then.
    pub fn waker(&self) -> Waker {
        let events = self.events.clone();
        Waker::new(move || {
            let _ = events.try_send(Input::Wake);
        })
    }
}

/// Starts `controller` on a thread of its own.
pub fn spawn(mut controller: impl Controller) -> Handle {
    let (events, receiver) = std::sync::mpsc::sync_channel(BACKLOG);
    let kinds = controller.kinds();
    std::thread::Builder::new()
        .name(controller.name().into())
        .spawn(move || run(&mut controller, &receiver))
        .expect("spawn a controller thread");
    Handle { kinds, events }
}

fn run(controller: &mut impl Controller, inputs: &Receiver<Input>) {
    let name = controller.name();
    let mut synced = false;
    let mut last_error: Option<String> = None;
    let mut retry = RETRY;
    let mut last_warnings = Vec::new();
    let mut next_resync = Instant::now() + RESYNC;
    loop {
        // Nothing is done before the picture is complete; then every batch of events, and the
        // periodic resync, leads to one reconcile.
        let wait = if last_error.is_some() {
            retry
        } else {
            next_resync.saturating_duration_since(Instant::now())
        };
        let mut take = |input: Input| {
            if let Input::Event(event) = input {
                synced |= *event == Event::Synced;
                controller.observe(&event);
            }
        };
        match inputs.recv_timeout(wait) {
            Ok(input) => {
                take(input);
                while let Ok(input) = inputs.try_recv() {
                    take(input);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if !synced {
            continue;
        }
        next_resync = Instant::now() + RESYNC;
        match controller.reconcile() {
            Ok(Reconciled { changes, warnings }) => {
                for line in changes {
                    tracing::info!("{name}: {line}");
                }
                if warnings != last_warnings {
                    for line in &warnings {
                        tracing::warn!("{name}: {line}");
                    }
                    last_warnings = warnings;
                }
                last_error = None;
                retry = RETRY;
            }
            Err(err) => {
                if last_error.as_ref() != Some(&err) {
                    tracing::warn!("{name}: {err}");
                }
                last_error = Some(err);
                retry = (retry * 2).min(RETRY_CAP);
            }
        }
    }
}
