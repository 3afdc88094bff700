//! The lab's Unix socket: commands one at a time for the daemon, and watches served on their
//! own from the [`WatchHub`], the lab's watch endpoint of the source seam.
//!
//! A watch starts with the current list of each kind it asks for (`Relisting`, every object as
//! `Applied`, `Listed`), then `Synced`, then every change as it is published. A watcher that
//! falls too far behind is disconnected; it reconnects and lists again, as a Kubernetes client
//! does when its watch expires. Every event is serialized once, when it is published, however
//! many watchers there are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use podnet_model::{Event, Kind, ObjectKey};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{broadcast, mpsc};

use crate::paths::LabPaths;
use crate::protocol::{Request, Response};

/// The current objects, as their last `Applied` event, and the stream of changes.
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<Mutex<Hub>>,
}

struct Hub {
    objects: BTreeMap<(Kind, ObjectKey), Arc<Line>>,
    changes: broadcast::Sender<Arc<Line>>,
}

/// An event as it goes over the socket: one JSON line.
struct Line {
    /// The kind of object it is about (none for the list markers).
    kind: Option<Kind>,
    bytes: Vec<u8>,
}

impl Line {
    fn of(event: &Event) -> Arc<Line> {
        let kind = match event {
            Event::Applied(object) => Some(object.kind()),
            Event::Deleted(kind, _) => Some(*kind),
            _ => None,
        };
        let mut bytes = serde_json::to_vec(event).expect("events serialize");
        bytes.push(b'\n');
        Arc::new(Line { kind, bytes })
    }

    /// Whether a watcher of `kinds` wants it.
    fn concerns(&self, kinds: &[Kind]) -> bool {
        self.kind.is_some_and(|kind| kinds.contains(&kind))
    }
}

impl WatchHub {
    /// An empty hub; watchers that fall `backlog` events behind are disconnected.
    pub fn new(backlog: usize) -> Self {
        WatchHub {
            inner: Arc::new(Mutex::new(Hub {
                objects: BTreeMap::new(),
                changes: broadcast::channel(backlog).0,
            })),
        }
    }

    /// Records `events` and sends them to every watcher.
    pub fn publish(&self, events: Vec<Event>) {
        let mut hub = self.inner.lock().expect("hub lock");
        for event in events {
            let line = Line::of(&event);
            match event {
                Event::Applied(object) => {
                    hub.objects.insert((object.kind(), object.key()), line.clone());
                }
                Event::Deleted(kind, key) => {
                    hub.objects.remove(&(kind, key));
                }
                _ => {}
            }
            let _ = hub.changes.send(line);
        }
    }

    /// The initial list of `kinds` and the changes after it, consistently.
    fn subscribe(&self, kinds: &[Kind]) -> (Vec<Arc<Line>>, broadcast::Receiver<Arc<Line>>) {
        let hub = self.inner.lock().expect("hub lock");
        let mut initial = Vec::new();
        for kind in kinds {
            initial.push(Line::of(&Event::Relisting(*kind)));
            initial.extend(
                hub.objects
                    .range((*kind, ObjectKey::cluster(""))..)
                    .take_while(|((found, _), _)| found == kind)
                    .map(|(_, line)| line.clone()),
            );
            initial.push(Line::of(&Event::Listed(*kind)));
        }
        initial.push(Line::of(&Event::Synced));
        (initial, hub.changes.subscribe())
    }
}

/// A command and where to answer it.
pub type Incoming = (Request, OwnedWriteHalf);

/// Listens on the lab's socket: watches are served from `hub`; every other request is handed
/// over, with the connection to answer on, through the returned channel.
pub fn listen(paths: &LabPaths, hub: WatchHub) -> Result<mpsc::Receiver<Incoming>, String> {
    let listener = UnixListener::bind(paths.socket())
        .map_err(|err| format!("cannot listen on {}: {err}", paths.socket().display()))?;
    let (requests, incoming) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (hub, requests) = (hub.clone(), requests.clone());
            tokio::spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(reader).read_line(&mut line).await.is_err() {
                    return;
                }
                match serde_json::from_str::<Request>(&line) {
                    Ok(Request::Watch { kinds }) => watch(&hub, &kinds, writer).await,
                    Ok(request) => {
                        let _ = requests.send((request, writer)).await;
                    }
                    Err(err) => respond(&mut writer, &Response::Error(format!("bad request: {err}"))).await,
                }
            });
        }
    });
    Ok(incoming)
}

/// Writes one answer.
pub async fn respond(writer: &mut OwnedWriteHalf, response: &Response) {
    let mut answer = serde_json::to_vec(response).expect("responses serialize");
    answer.push(b'\n');
    let _ = writer.write_all(&answer).await;
}

/// Streams `kinds` to a watcher until it goes away or falls behind.
async fn watch(hub: &WatchHub, kinds: &[Kind], writer: OwnedWriteHalf) {
    let mut writer = tokio::io::BufWriter::new(writer);
    let (initial, mut changes) = hub.subscribe(kinds);
    for line in initial {
        if writer.write_all(&line.bytes).await.is_err() {
            return;
        }
    }
    loop {
        if writer.flush().await.is_err() {
            return;
        }
        let line = match changes.recv().await {
            Ok(line) => line,
            // Too far behind (or the lab is going away): the watcher lists again.
            Err(_) => return,
        };
        if line.concerns(kinds) && writer.write_all(&line.bytes).await.is_err() {
            return;
        }
        // Send what else is already there in the same write.
        while let Ok(line) = changes.try_recv() {
            if line.concerns(kinds) && writer.write_all(&line.bytes).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use podnet_model::Object;

    use super::*;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        }
    }

    fn events(lines: &[Arc<Line>]) -> Vec<Event> {
        lines
            .iter()
            .map(|line| serde_json::from_slice(&line.bytes).unwrap())
            .collect()
    }

    #[test]
    fn a_watch_lists_and_follows_only_the_kinds_it_asks_for() {
        let hub = WatchHub::new(16);
        let policy = Object::NetworkPolicy(Box::new(NetworkPolicy {
            metadata: meta("deny"),
            ..NetworkPolicy::default()
        }));
        let service = Object::Service(Box::new(Service {
            metadata: meta("web"),
            ..Service::default()
        }));
        hub.publish(vec![
            Event::Applied(policy.clone()),
            Event::Applied(service.clone()),
        ]);
        let (initial, mut changes) = hub.subscribe(&[Kind::NetworkPolicy]);
        assert_eq!(
            events(&initial),
            [
                Event::Relisting(Kind::NetworkPolicy),
                Event::Applied(policy.clone()),
                Event::Listed(Kind::NetworkPolicy),
                Event::Synced,
            ]
        );
        let gone = Event::Deleted(Kind::NetworkPolicy, policy.key());
        hub.publish(vec![Event::Applied(service), gone.clone()]);
        let followed: Vec<Arc<Line>> = std::iter::from_fn(|| changes.try_recv().ok())
            .filter(|line| line.concerns(&[Kind::NetworkPolicy]))
            .collect();
        assert_eq!(events(&followed), [gone]);
    }
}
