//! The lab's Unix socket: commands one at a time for the daemon, and watches served on their
//! own from the [`WatchHub`], the lab's watch endpoint of the source seam.
//!
//! A watch starts with the current list of each kind it asks for (`Relisting`, every object as
//! `Applied`, `Listed`), then `Synced`, then every change as it is published. A watcher that
//! falls too far behind is disconnected; it reconnects and lists again, as a Kubernetes client
//! does when its watch expires.

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
    objects: BTreeMap<(Kind, ObjectKey), Arc<Event>>,
    changes: broadcast::Sender<Arc<Event>>,
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
            let event = Arc::new(event);
            match &*event {
                Event::Applied(object) => {
                    hub.objects.insert((object.kind(), object.key()), event.clone());
                }
                Event::Deleted(kind, key) => {
                    hub.objects.remove(&(*kind, key.clone()));
                }
                _ => {}
            }
            let _ = hub.changes.send(event);
        }
    }

    /// The initial list of `kinds` and the changes after it, consistently.
    fn subscribe(&self, kinds: &[Kind]) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let hub = self.inner.lock().expect("hub lock");
        let mut initial = Vec::new();
        for kind in kinds {
            initial.push(Arc::new(Event::Relisting(*kind)));
            initial.extend(
                hub.objects
                    .range((*kind, ObjectKey::cluster(""))..)
                    .take_while(|((found, _), _)| found == kind)
                    .map(|(_, event)| event.clone()),
            );
            initial.push(Arc::new(Event::Listed(*kind)));
        }
        initial.push(Arc::new(Event::Synced));
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
    for event in initial {
        if write_event(&mut writer, &event).await.is_err() {
            return;
        }
    }
    loop {
        if writer.flush().await.is_err() {
            return;
        }
        let event = match changes.recv().await {
            Ok(event) => event,
            // Too far behind (or the lab is going away): the watcher lists again.
            Err(_) => return,
        };
        if concerns(&event, kinds) && write_event(&mut writer, &event).await.is_err() {
            return;
        }
        // Send what else is already there in the same write.
        while let Ok(event) = changes.try_recv() {
            if concerns(&event, kinds) && write_event(&mut writer, &event).await.is_err() {
                return;
            }
        }
    }
}

/// Whether a watcher of `kinds` wants `event`.
fn concerns(event: &Event, kinds: &[Kind]) -> bool {
    match event {
        Event::Applied(object) => kinds.contains(&object.kind()),
        Event::Deleted(kind, _) => kinds.contains(kind),
        _ => false,
    }
}

async fn write_event(
    writer: &mut tokio::io::BufWriter<OwnedWriteHalf>,
    event: &Event,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).expect("events serialize");
    line.push(b'\n');
    writer.write_all(&line).await
}
