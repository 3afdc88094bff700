//! A lab as a cluster source: the watch stream of the lab daemon's socket, which components
//! running in the lab (the node agents) read as they would read the Kubernetes API server.

use std::time::Duration;

use podnet_model::{ClusterSource, Event, Kind, WATCH_BUFFER};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::paths::LabPaths;
use crate::protocol::Request;

/// How long to wait before reconnecting to a daemon that is not (yet) there.
const RECONNECT: Duration = Duration::from_millis(200);

/// The objects of a running lab, from its daemon's socket.
pub struct LabSource {
    name: String,
}

impl LabSource {
    /// The source of lab `name`.
    pub fn new(name: &str) -> Self {
        LabSource {
            name: name.to_owned(),
        }
    }
}

impl ClusterSource for LabSource {
    /// Watches `kinds`, reconnecting (and so listing again) whenever the connection breaks.
    /// Must be called inside a tokio runtime.
    fn watch(&self, kinds: &[Kind]) -> mpsc::Receiver<Event> {
        let socket = LabPaths::new(&self.name).socket();
        let kinds = kinds.to_vec();
        let (sender, events) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            while !sender.is_closed() {
                if let Ok(stream) = UnixStream::connect(&socket).await {
                    let (reader, mut writer) = stream.into_split();
                    let mut request = serde_json::to_vec(&Request::Watch { kinds: kinds.clone() })
                        .expect("requests serialize");
                    request.push(b'\n');
                    if writer.write_all(&request).await.is_ok() {
                        let mut lines = BufReader::new(reader).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            match serde_json::from_str::<Event>(&line) {
                                Ok(event) => {
                                    if sender.send(event).await.is_err() {
                                        return;
                                    }
                                }
                                Err(err) => tracing::warn!("bad event from the lab daemon: {err}"),
                            }
                        }
                    }
                }
                tokio::time::sleep(RECONNECT).await;
            }
        });
        events
    }
}
