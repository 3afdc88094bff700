//! The TCP server (RFC 1035 §4.2.2, RFC 7766): each message is preceded by its length in two
//! bytes, and a client may send several queries on one connection, answered in turn. Clients
//! come here when a UDP answer was truncated. Connections are limited in number (beyond, a new
//! one is closed at once) and closed when idle, so that no client can hold the server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::query::{Handled, handle};
use crate::message::Transport;
use crate::metrics::Counters;
use crate::resolver::Resolver;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// How long a connection may wait for its next query, and for that query to arrive whole.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to take an answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The listen backlog.
const BACKLOG: i32 = 1024;
/// The pause after a failed accept (out of descriptors, say), so that it cannot spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// A TCP listener on `address`.
pub fn bind(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Answers the connections arriving on `listener` until `stop` fires.
pub async fn serve(
    listener: std::net::TcpListener,
    resolver: Arc<Resolver>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!("cannot serve DNS over TCP: {error}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!("TCP accept failed: {error}");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        // Over the limit, the connection is closed at once rather than left waiting.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (resolver, counters) = (resolver.clone(), counters.clone());
        tokio::spawn(async move {
            connection(stream, &resolver, &counters).await;
            drop(slot);
        });
    }
}

/// Answers the queries of one connection until the client closes it, idles, or sends what is
/// no query.
async fn connection(mut stream: TcpStream, resolver: &Resolver, counters: &Counters) {
    let _ = stream.set_nodelay(true);
    let (mut packet, mut out, mut framed) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let read = async {
            let length = stream.read_u16().await?;
            packet.resize(usize::from(length), 0);
            stream.read_exact(&mut packet).await
        };
        if !matches!(tokio::time::timeout(IDLE_TIMEOUT, read).await, Ok(Ok(_))) || packet.is_empty() {
            return;
        }
        match handle(resolver, counters, &packet, Transport::Tcp, &mut out) {
            Handled::Answered => {}
            Handled::Silence => return,
            Handled::Pending(query) => query.finish(resolver, counters, &mut out).await,
        }
        let Ok(length) = u16::try_from(out.len()) else {
            return;
        };
        if length == 0 {
            return;
        }
        framed.clear();
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&out);
        if !matches!(
            tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}
