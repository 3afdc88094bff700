//! The cluster zone: the records the Kubernetes DNS specification (schema 1.1.0) asks of a
//! cluster's DNS, made from Services, EndpointSlices and Namespaces.
//!
//! [`model`] keeps what DNS needs of each object, [`records`] lays a service's records out,
//! [`zone`] answers questions from them, and [`updater`] follows the cluster through the source
//! seam and publishes changes into the zone while queries go on reading it.

pub mod model;
pub mod records;
pub mod updater;
pub mod zone;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use podnet_model::ClusterSource;

pub use updater::{KINDS, ZoneUpdater};
pub use zone::ClusterZone;

/// The most events taken into one published batch: a long list (100,000 services) becomes
/// visible in steps, and a burst of changes costs one publish.
const MAX_BATCH: usize = 4096;

/// Follows the cluster through `source` into `zone`, publishing after every burst of events
/// (as soon as the source has no more waiting), and raises `ready` once every kind has been
/// listed. Returns when the source closes its watch.
pub async fn follow(source: &dyn ClusterSource, zone: Arc<ClusterZone>, ready: &AtomicBool) {
    let mut events = source.watch(&KINDS);
    let mut updater = ZoneUpdater::new(zone);
    while let Some(event) = events.recv().await {
        updater.apply(&event);
        for _ in 1..MAX_BATCH {
            match events.try_recv() {
                Ok(event) => updater.apply(&event),
                Err(_) => break,
            }
        }
        updater.publish();
        if updater.synced() {
            ready.store(true, Ordering::Relaxed);
        }
    }
}
