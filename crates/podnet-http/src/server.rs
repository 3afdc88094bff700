//! A very small HTTP/1.1 server: one thread per listening port, one short request per
//! connection, as probes and Prometheus scrapes are. Requests are bounded in size, time and
//! number at once, so a slow or hostile client cannot hold it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// An answer: status code, content type, body.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The content type.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// Answers a request for a path.
pub type Handler = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// The longest request read (request line and headers); more is ignored.
const MAX_REQUEST: u64 = 8192;
/// How long a client has to send its whole request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How many requests are answered at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;

/// A listening server; it stops when dropped.
pub struct Server {
    address: SocketAddr,
    stopped: Arc<AtomicBool>,
}

impl Server {
    /// Listens on `address` and answers every request with `handler`.
    pub fn start(address: SocketAddr, handler: Handler) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::Builder::new()
            .name(format!("http-{}", address.port()))
            .spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else {
                        // Out of descriptors, say: do not spin.
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    while busy.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    busy.fetch_add(1, Ordering::Relaxed);
                    let (handler, busy) = (handler.clone(), busy.clone());
                    std::thread::spawn(move || {
                        answer(stream, &handler);
                        busy.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            })?;
        Ok(Server { address, stopped })
    }

    /// The address it listens on (with the port the system chose, when asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        // Wake the accepting thread so that it sees the flag.
        let wake = match self.address {
            SocketAddr::V4(v4) if v4.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], v4.port())),
            other => other,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(100));
    }
}

fn answer(stream: TcpStream, handler: &Handler) {
    // A slow client gets the deadline for its whole request, not for each read.
    let _ = stream.set_read_timeout(Some(REQUEST_DEADLINE));
    let deadline = std::time::Instant::now() + REQUEST_DEADLINE;
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream.take(MAX_REQUEST));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Headers are read and ignored.
    while std::time::Instant::now() < deadline {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let answer = handler(path);
    let reason = match answer.status {
        200 => "OK",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "",
    };
    let _ = write!(
        writer,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        answer.status,
        answer.content_type,
        answer.body.len(),
        answer.body
    );
}

/// A 404 for paths nobody serves.
pub fn not_found() -> Answer {
    Answer {
        status: 404,
        content_type: "text/plain; charset=utf-8",
        body: "404 page not found\n".into(),
    }
}
