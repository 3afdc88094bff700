//! The programs behind well-known images: `traefik/whoami`, `nginx` and `pause`.
//!
//! They are small blocking HTTP/1.1 servers (a thread per connection, keep-alive supported),
//! enough for curl, browsers and load generators. whoami answers like the real one (its output
//! is what seed 004 shows: hostname, IPs, the client's address as the server saw it, and the
//! request), which makes NAT visible: after DNAT a pod reports its own IP, and after SNAT the
//! RemoteAddr is a node's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// The nginx welcome page, as the nginx image serves it.
const NGINX_WELCOME: &str = "<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href=\"http://nginx.org/\">nginx.org</a>.<br/>
Commercial support is available at
<a href=\"http://nginx.com/\">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
";

const NGINX_NOT_FOUND: &str = "<html>
<head><title>404 Not Found</title></head>
<body>
<center><h1>404 Not Found</h1></center>
<hr><center>nginx</center>
</body>
</html>
";

/// The port whoami listens on: `--port N` (or `-port N`, `--port=N`), else the
/// `WHOAMI_PORT_NUMBER` variable `env` gives, else 80.
pub fn whoami_port(args: &[String], env: impl Fn(&str) -> Option<String>) -> u16 {
    flag_value(args, "port")
        .or_else(|| env("WHOAMI_PORT_NUMBER"))
        .and_then(|port| port.parse().ok())
        .unwrap_or(80)
}

/// The value of a Go-style flag (`-name V`, `--name V`, `--name=V`) in `args`.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let flag = arg.trim_start_matches('-');
        if let Some(value) = flag.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
            return Some(value.to_owned());
        }
        if flag == name {
            return args.next().cloned();
        }
    }
    None
}

/// Runs `podnet workload NAME ARGS...`; returns only on failure.
pub fn run(name: &str, args: &[String]) -> Result<(), String> {
    match name {
        "whoami" => {
            let port = whoami_port(args, |key| std::env::var(key).ok());
            let label = flag_value(args, "name").or_else(|| std::env::var("WHOAMI_NAME").ok());
            serve(port, "whoami", move |request, peer| {
                whoami(request, peer, label.as_deref())
            })
        }
        "nginx" => serve(80, "nginx", |request, _| nginx(request)),
        "agnhost" => crate::agnhost::run(args),
        "pause" => loop {
            std::thread::park();
        },
        other => Err(format!(
            "no built-in workload {other:?} (whoami, nginx, agnhost, pause)"
        )),
    }
}

/// A parsed request: method, target, version and headers in arrival order.
struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

fn serve(
    port: u16,
    program: &'static str,
    handler: impl Fn(&Request, std::net::SocketAddr) -> Response + Send + Sync + 'static,
) -> Result<(), String> {
    let listener = match TcpListener::bind(("::", port)).or_else(|_| TcpListener::bind(("0.0.0.0", port))) {
        Ok(listener) => listener,
        Err(err) => {
            let message = if program == "nginx" {
                let code = err.raw_os_error().unwrap_or_default();
                format!(
                    "nginx: [emerg] bind() to 0.0.0.0:{port} failed ({code}: {})",
                    nix::errno::Errno::from_raw(code).desc()
                )
            } else {
                format!("{program}: cannot listen on port {port}: {err}")
            };
            return Err(message);
        }
    };
    println!("{program}: listening on port {port}");
    let handler = std::sync::Arc::new(handler);
    for stream in listener.incoming().flatten() {
        let handler = handler.clone();
        std::thread::spawn(move || {
            let _ = connection(stream, |request, peer| handler(request, peer));
        });
    }
    Ok(())
}

/// Answers requests on one connection until the client closes it or asks to.
fn connection(
    stream: TcpStream,
    handler: impl Fn(&Request, std::net::SocketAddr) -> Response,
) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
            return writer
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        };
        let mut request = Request {
            method: method.to_owned(),
            target: target.to_owned(),
            version: version.to_owned(),
            headers: Vec::new(),
        };
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                request
                    .headers
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        // Discard a request body.
        let length: u64 = header("content-length")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
        let close = header("connection").is_some_and(|value| value.eq_ignore_ascii_case("close"))
            || request.version == "HTTP/1.0";
        let response = handler(&request, peer);
        let body = if request.method == "HEAD" {
            ""
        } else {
            response.body.as_str()
        };
        let head = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
            response.status,
            response.content_type,
            response.body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        writer.write_all(head.as_bytes())?;
        writer.write_all(body.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

fn whoami(request: &Request, peer: std::net::SocketAddr, name: Option<&str>) -> Response {
    if request.target == "/health" {
        return Response {
            status: "200 OK",
            content_type: "text/plain; charset=utf-8",
            body: String::new(),
        };
    }
    let mut body = String::new();
    if let Some(name) = name {
        body.push_str(&format!("Name: {name}\n"));
    }
    let hostname = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    body.push_str(&format!("Hostname: {hostname}\n"));
    for ip in interface_addresses() {
        body.push_str(&format!("IP: {ip}\n"));
    }
    body.push_str(&format!("RemoteAddr: {}\n", unmap(peer)));
    body.push_str(&format!(
        "{} {} {}\n",
        request.method, request.target, request.version
    ));
    // Like Go's Request.Write: Host first, then the other headers.
    for (key, value) in request
        .headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case("host"))
    {
        body.push_str(&format!("{}: {value}\n", canonical(key)));
    }
    let mut others: Vec<&(String, String)> = request
        .headers
        .iter()
        .filter(|(key, _)| !key.eq_ignore_ascii_case("host"))
        .collect();
    others.sort_by_key(|(key, _)| canonical(key));
    for (key, value) in others {
        body.push_str(&format!("{}: {value}\n", canonical(key)));
    }
    body.push('\n');
    Response {
        status: "200 OK",
        content_type: "text/plain; charset=utf-8",
        body,
    }
}

fn nginx(request: &Request) -> Response {
    let path = request.target.split('?').next().unwrap_or("/");
    if matches!(path, "/" | "/index.html") {
        Response {
            status: "200 OK",
            content_type: "text/html",
            body: NGINX_WELCOME.to_owned(),
        }
    } else {
        Response {
            status: "404 Not Found",
            content_type: "text/html",
            body: NGINX_NOT_FOUND.to_owned(),
        }
    }
}

/// Every address of every interface of the namespace, loopback first, as whoami lists them.
fn interface_addresses() -> Vec<std::net::IpAddr> {
    let Ok(mut netlink) = podnet_netlink::Netlink::connect() else {
        return Vec::new();
    };
    let mut addresses = netlink.addresses(None).unwrap_or_default();
    addresses.sort_by_key(|address| (address.index, address.address.addr().is_ipv6()));
    addresses
        .into_iter()
        .map(|address| address.address.addr())
        .collect()
}

/// An IPv4 client seen on a dual-stack socket, written as IPv4.
fn unmap(address: std::net::SocketAddr) -> std::net::SocketAddr {
    match address {
        std::net::SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => std::net::SocketAddr::from((v4, v6.port())),
            None => address,
        },
        v4 => v4,
    }
}

/// `user-agent` -> `User-Agent`.
fn canonical(key: &str) -> String {
    key.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoami_flags_are_read_like_the_real_ones() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let no_env = |_: &str| None;
        let env = |key: &str| (key == "WHOAMI_PORT_NUMBER").then(|| "8081".to_owned());
        assert_eq!(whoami_port(&args(&["--port", "8080"]), env), 8080);
        assert_eq!(whoami_port(&args(&["-port=9000"]), no_env), 9000);
        assert_eq!(whoami_port(&args(&["--verbose"]), env), 8081);
        assert_eq!(whoami_port(&args(&["--verbose"]), no_env), 80);
        assert_eq!(flag_value(&args(&["-name", "blue"]), "name"), Some("blue".into()));
        assert_eq!(flag_value(&args(&["--names=x"]), "name"), None);
    }

    #[test]
    fn headers_are_written_in_canonical_form() {
        assert_eq!(canonical("user-agent"), "User-Agent");
        assert_eq!(canonical("ACCEPT"), "Accept");
    }

    #[test]
    fn nginx_serves_the_welcome_page_and_404s_the_rest() {
        let request = |target: &str| Request {
            method: "GET".into(),
            target: target.into(),
            version: "HTTP/1.1".into(),
            headers: Vec::new(),
        };
        assert!(nginx(&request("/")).body.contains("Welcome to nginx!"));
        assert_eq!(nginx(&request("/nope")).status, "404 Not Found");
    }
}
