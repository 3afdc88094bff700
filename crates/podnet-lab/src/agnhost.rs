//! The parts of Kubernetes' e2e test image `agnhost` the upstream network tests use:
//! `netexec`, a server answering who it is over HTTP and UDP, and `connect`, a client that
//! succeeds when a server answers.
//!
//! - `netexec --http-port=N --udp-port=M --sctp-port=S`: HTTP `GET /hostname`, `/clientip`
//!   (the client's address as the server sees it), `/echo?msg=X`, `/healthz`; UDP datagrams
//!   `hostname`, `clientip`, `echo X` get the same answers; SCTP associations are answered
//!   ([`crate::sctp`]: this kernel has no SCTP sockets).
//! - `connect HOST:PORT --protocol=tcp|udp|sctp --timeout=1s`: exit 0 when the server answers,
//!   1 when it refuses or times out (UDP: a `hostname` datagram must be answered; SCTP: an
//!   INIT must be).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// Runs `agnhost SUBCOMMAND ARGS...`; returns only on failure (netexec) or with the outcome
/// (connect).
pub fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("netexec") => netexec(&args[1..]),
        Some("connect") => connect(&args[1..]),
        other => Err(format!("agnhost: no subcommand {other:?} (netexec, connect)")),
    }
}

/// The HTTP port `netexec` listens on, as the lab's readiness check needs it.
pub fn http_port(args: &[String]) -> Option<u16> {
    (args.first().map(String::as_str) == Some("netexec")).then(|| {
        flag(&args[1..], "http-port")
            .and_then(|port| port.parse().ok())
            .unwrap_or(8080)
    })
}

/// `--name=V` or `--name V`.
fn flag(args: &[String], name: &str) -> Option<String> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let arg = arg.trim_start_matches('-');
        if let Some(value) = arg.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
            return Some(value.to_owned());
        }
        if arg == name {
            return args.next().cloned();
        }
    }
    None
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The answer to a request, whichever transport carried it.
fn answer(request: &str, client: SocketAddr) -> Option<String> {
    let (command, argument) = request.split_once(' ').unwrap_or((request, ""));
    match command {
        "hostname" => Some(hostname()),
        "clientip" => Some(client.to_string()),
        "echo" => Some(argument.to_owned()),
        "healthz" => Some("ok".into()),
        _ => None,
    }
}

fn netexec(args: &[String]) -> Result<(), String> {
    let http_port: u16 = flag(args, "http-port")
        .and_then(|port| port.parse().ok())
        .unwrap_or(8080);
    let udp_port: Option<u16> = flag(args, "udp-port").and_then(|port| port.parse().ok());
    if let Some(port) = udp_port {
        let socket =
            UdpSocket::bind(("0.0.0.0", port)).map_err(|err| format!("agnhost: udp port {port}: {err}"))?;
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while let Ok((length, client)) = socket.recv_from(&mut buffer) {
                let request = String::from_utf8_lossy(&buffer[..length]).trim().to_owned();
                if let Some(reply) = answer(&request, client) {
                    let _ = socket.send_to(reply.as_bytes(), client);
                }
            }
        });
    }
    let sctp_port: Option<u16> = flag(args, "sctp-port").and_then(|port| port.parse().ok());
    if let Some(port) = sctp_port {
        std::thread::spawn(move || {
            if let Err(err) = crate::sctp::serve(port) {
                eprintln!("agnhost: sctp port {port}: {err}");
            }
        });
    }
    let listener = TcpListener::bind(("0.0.0.0", http_port))
        .map_err(|err| format!("agnhost: http port {http_port}: {err}"))?;
    println!("agnhost netexec: HTTP on {http_port}, UDP on {udp_port:?}, SCTP on {sctp_port:?}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || http(stream));
    }
    Ok(())
}

fn http(stream: TcpStream) {
    let Ok(client) = stream.peer_addr() else { return };
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = match path.trim_start_matches('/') {
        "echo" => format!(
            "echo {}",
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("msg="))
                .unwrap_or_default()
        ),
        other => other.to_owned(),
    };
    let (status, body) = match answer(&request, client) {
        Some(body) => ("200 OK", body),
        None => ("404 Not Found", "404 page not found".to_owned()),
    };
    let _ = write!(
        writer,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn connect(args: &[String]) -> Result<(), String> {
    let destination = args
        .iter()
        .find(|arg| !arg.starts_with('-'))
        .ok_or("agnhost connect: give HOST:PORT")?;
    let protocol = flag(args, "protocol").unwrap_or_else(|| "tcp".into());
    let timeout = flag(args, "timeout")
        .and_then(|text| text.trim_end_matches('s').parse::<f64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs_f64);
    let address = destination
        .to_socket_addrs()
        .map_err(|err| format!("{destination}: {err}"))?
        .next()
        .ok_or_else(|| format!("{destination}: no address"))?;
    match protocol.as_str() {
        "tcp" => TcpStream::connect_timeout(&address, timeout)
            .map(drop)
            .map_err(|err| format!("TIMEOUT or refused: {err}")),
        "udp" => {
            let socket = UdpSocket::bind(("0.0.0.0", 0)).map_err(|err| err.to_string())?;
            socket
                .set_read_timeout(Some(timeout))
                .map_err(|err| err.to_string())?;
            socket.connect(address).map_err(|err| err.to_string())?;
            socket.send(b"hostname").map_err(|err| err.to_string())?;
            let mut buffer = [0u8; 512];
            let length = socket
                .recv(&mut buffer)
                .map_err(|err| format!("no answer: {err}"))?;
            println!("{}", String::from_utf8_lossy(&buffer[..length]));
            Ok(())
        }
        "sctp" => match address {
            SocketAddr::V4(address) => crate::sctp::probe(address, timeout),
            SocketAddr::V6(_) => Err(format!("{destination}: SCTP is IPv4 only here")),
        },
        other => Err(format!(
            "agnhost connect: protocol {other:?} is not supported here (tcp, udp, sctp)"
        )),
    }
}
