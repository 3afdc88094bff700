//! The server over real sockets on 127.0.0.1: cluster answers over UDP and TCP, truncation,
//! forwarding, caching, failing upstreams, changes, and the HTTP endpoints.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use podnet_model::{Event, Kind, Object, ObjectKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;
use crate::testing::{
    EndpointSpec, FakeSource, PATIENCE, StubUpstream, ask_tcp, ask_udp, data, headless, listing, namespace,
    query, reply_to, service, slice,
};

/// A server started on 127.0.0.1 with a fake cluster source.
pub(super) struct Running {
    pub(super) dns: SocketAddr,
    http: SocketAddr,
    events: mpsc::Sender<Event>,
    _serving: JoinHandle<Result<(), DnsError>>,
}

fn local_args(upstreams: &[SocketAddr]) -> DnsArgs {
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut args = DnsArgs::new(None);
    args.listen = any_port;
    args.health_address = any_port;
    args.ready_address = any_port;
    args.metrics_address = any_port;
    args.workers = Some(2);
    args.upstreams = upstreams.to_vec();
    args.no_forward = upstreams.is_empty();
    args
}

/// Starts a server with `args`, sends it `events`, and waits until it is ready when they end
/// with `Synced`.
async fn start_with(args: &DnsArgs, events: Vec<Event>) -> Running {
    let server = DnsServer::bind(args).unwrap();
    let (dns, http) = (server.dns_address(), server.ready_address());
    let synced = events.last() == Some(&Event::Synced);
    let (source, sender) = FakeSource::new();
    for event in events {
        sender.send(event).await.unwrap();
    }
    let serving = tokio::spawn(async move { server.serve(Some(&source)).await });
    if synced {
        let deadline = Instant::now() + PATIENCE;
        while http_get(http, "/ready").await.0 != 200 {
            assert!(Instant::now() < deadline, "the server never got ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Running {
        dns,
        http,
        events: sender,
        _serving: serving,
    }
}

/// Starts a server serving `objects`, forwarding to `upstreams` (none: no forwarding).
pub(super) async fn start(objects: Vec<Object>, upstreams: &[SocketAddr]) -> Running {
    start_with(&local_args(upstreams), listing(objects)).await
}

/// The status and body of `GET path`.
async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut text))
        .await
        .expect("an HTTP answer")
        .unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn cluster() -> Vec<Object> {
    let big: Vec<String> = (0..100).map(|index| format!("10.244.9.{index}")).collect();
    let endpoints: Vec<EndpointSpec<'_>> = big.iter().map(|address| (address.as_str(), true, None)).collect();
    vec![
        namespace("default"),
        namespace("data"),
        service("default", "web", "10.96.0.10", &[("http", "TCP", 80)]),
        headless("data", "db"),
        slice(
            "data",
            "db-v4",
            "db",
            &[("10.244.1.5", true, Some("db-0"))],
            &[("pg", "TCP", 5432)],
        ),
        headless("data", "big"),
        slice("data", "big-v4", "big", &endpoints, &[("http", "TCP", 80)]),
    ]
}

fn assert_answers(answer: &Message, rcode: ResponseCode, expected: &[&str]) {
    assert_eq!(answer.metadata.response_code, rcode, "{answer}");
    assert_eq!(data(&answer.answers), expected, "{answer}");
}

#[tokio::test]
async fn cluster_names_are_answered_over_udp_and_tcp() {
    let running = start(cluster(), &[]).await;
    let packet = query("Web.Default.svc.cluster.local.", RecordType::A, None);
    let answer = ask_udp(running.dns, &packet).await;
    assert_answers(&answer, ResponseCode::NoError, &["10.96.0.10"]);
    assert_eq!(answer.metadata.id, u16::from_be_bytes([packet[0], packet[1]]));
    assert!(answer.metadata.authoritative && answer.metadata.recursion_desired);
    assert_eq!(
        answer.queries[0].name().to_string(),
        "Web.Default.svc.cluster.local.",
        "echoed as asked"
    );

    let missing = ask_udp(
        running.dns,
        &query("nope.default.svc.cluster.local.", RecordType::A, None),
    )
    .await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(missing.authorities[0].record_type(), RecordType::SOA);

    let answers = ask_tcp(
        running.dns,
        &[
            query("web.default.svc.cluster.local.", RecordType::A, None),
            query("_pg._tcp.db.data.svc.cluster.local.", RecordType::SRV, None),
            query("web.default.svc.cluster.local.", RecordType::AAAA, None),
            query("dns-version.cluster.local.", RecordType::TXT, None),
        ],
    )
    .await;
    assert_answers(&answers[0], ResponseCode::NoError, &["10.96.0.10"]);
    assert_answers(
        &answers[1],
        ResponseCode::NoError,
        &["0 100 5432 db-0.db.data.svc.cluster.local."],
    );
    assert_eq!(data(&answers[1].additionals), ["10.244.1.5"]);
    assert_answers(&answers[2], ResponseCode::NoError, &[]);
    assert_answers(&answers[3], ResponseCode::NoError, &["1.1.0"]);
}

#[tokio::test]
async fn an_answer_too_large_for_udp_is_truncated_and_whole_over_tcp() {
    let running = start(cluster(), &[]).await;
    let name = "big.data.svc.cluster.local.";

    let plain = ask_udp(running.dns, &query(name, RecordType::A, None)).await;
    assert!(plain.metadata.truncation, "100 addresses do not fit 512 bytes");
    assert!(plain.to_vec().unwrap().len() <= 512);
    assert!(plain.edns.is_none(), "no OPT without one in the query");

    let edns = ask_udp(running.dns, &query(name, RecordType::A, Some(4096))).await;
    assert!(edns.metadata.truncation);
    let payload = edns.edns.as_ref().map(|opt| opt.max_payload());
    assert_eq!(
        payload,
        Some(crate::message::MAX_UDP_PAYLOAD),
        "answered with an OPT"
    );
    assert!(edns.answers.len() > plain.answers.len());

    let whole = ask_tcp(running.dns, &[query(name, RecordType::A, None)]).await;
    assert!(!whole[0].metadata.truncation);
    assert_eq!(whole[0].answers.len(), 100);
}

fn address_record(query: &Message, address: Ipv4Addr, ttl: u32) -> Record {
    Record::from_rdata(query.queries[0].name().clone(), ttl, RData::A(A(address)))
}

fn example_soa() -> Record {
    let apex = Name::from_ascii("example.org.").unwrap();
    let soa = SOA::new(apex.clone(), apex.clone(), 1, 7200, 1800, 86400, 30);
    Record::from_rdata(apex, 300, RData::SOA(soa))
}

/// An upstream that knows `www.example.org` (TTL 60) and nothing else.
fn example_org() -> crate::testing::Respond {
    Arc::new(|query: &Message| {
        let mut reply = reply_to(query);
        if query.queries[0].name().to_lowercase().to_string() == "www.example.org." {
            reply.add_answer(address_record(query, Ipv4Addr::new(192, 0, 2, 10), 60));
        } else {
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.add_authority(example_soa());
        }
        reply
    })
}

#[tokio::test]
async fn names_outside_the_cluster_are_forwarded_and_cached() {
    let upstream = StubUpstream::start(example_org()).await;
    let running = start(Vec::new(), &[upstream.address]).await;

    let first = ask_udp(running.dns, &query("www.example.org.", RecordType::A, None)).await;
    assert_answers(&first, ResponseCode::NoError, &["192.0.2.10"]);
    assert_eq!(first.answers[0].ttl, 60);
    assert!(!first.metadata.authoritative && first.metadata.recursion_available);
    assert_eq!(upstream.queries(), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = ask_udp(running.dns, &query("WWW.example.org.", RecordType::A, None)).await;
    assert_answers(&second, ResponseCode::NoError, &["192.0.2.10"]);
    assert!(
        second.answers[0].ttl < 60,
        "from the cache, a second older: {}",
        second.answers[0].ttl
    );
    assert_eq!(second.answers[0].name.to_string(), "WWW.example.org.");
    assert_eq!(upstream.queries(), 1, "answered from the cache");

    for _ in 0..2 {
        let missing = ask_udp(running.dns, &query("nope.example.org.", RecordType::A, None)).await;
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(missing.authorities[0].record_type(), RecordType::SOA);
    }
    assert_eq!(upstream.queries(), 2, "the negative answer is cached too");

    let (_, metrics) = http_get(running.http, "/metrics").await;
    assert!(metrics.contains("podnet_dns_cache_hits_total 2"), "{metrics}");
    assert!(metrics.contains("podnet_dns_cache_misses_total 2"), "{metrics}");
}

#[tokio::test]
async fn failing_upstreams_are_skipped_for_the_next() {
    // A port nobody listens on: the kernel answers "port unreachable".
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let failing = StubUpstream::start(Arc::new(|query: &Message| {
        let mut reply = reply_to(query);
        reply.metadata.response_code = ResponseCode::ServFail;
        reply
    }))
    .await;
    let working = StubUpstream::start(example_org()).await;
    let running = start(Vec::new(), &[closed, failing.address, working.address]).await;

    let answer = ask_udp(running.dns, &query("www.example.org.", RecordType::A, None)).await;
    assert_answers(&answer, ResponseCode::NoError, &["192.0.2.10"]);
    assert!(failing.queries() >= 1);
    assert_eq!(working.queries(), 1);

    // The unreachable upstream stays down (its probes fail): later questions skip it.
    let missing = ask_udp(running.dns, &query("nope.example.org.", RecordType::A, None)).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let (_, metrics) = http_get(running.http, "/metrics").await;
    assert!(
        metrics.contains(&format!("podnet_dns_upstream_healthy{{upstream=\"{closed}\"}} 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "podnet_dns_forward_requests_total{{upstream=\"{closed}\"}} 1"
        )),
        "asked once, then skipped: {metrics}"
    );
}

#[tokio::test]
async fn a_truncated_upstream_answer_is_asked_again_over_tcp() {
    let upstream = StubUpstream::start(Arc::new(|query: &Message| {
        let mut reply = reply_to(query);
        // Over UDP the stub sends this as it is; over TCP it clears the TC bit.
        reply.metadata.truncation = true;
        for last in 1..=3 {
            reply.add_answer(address_record(query, Ipv4Addr::new(192, 0, 2, last), 60));
        }
        reply
    }))
    .await;
    let running = start(Vec::new(), &[upstream.address]).await;
    let answer = ask_udp(running.dns, &query("many.example.org.", RecordType::A, None)).await;
    assert_answers(
        &answer,
        ResponseCode::NoError,
        &["192.0.2.1", "192.0.2.2", "192.0.2.3"],
    );
    assert!(!answer.metadata.truncation);
    assert_eq!(upstream.queries(), 2, "once over UDP, once over TCP");
}

#[tokio::test]
async fn changes_are_answered_within_100_ms() {
    let running = start(vec![namespace("default")], &[]).await;
    let mut delays = Vec::new();
    for index in 0..5u8 {
        let name = format!("new-{index}");
        let fqdn = format!("{name}.default.svc.cluster.local.");
        let started = Instant::now();
        let added = service(
            "default",
            &name,
            &format!("10.96.1.{index}"),
            &[("http", "TCP", 80)],
        );
        running.events.send(Event::Applied(added)).await.unwrap();
        loop {
            let answer = ask_udp(running.dns, &query(&fqdn, RecordType::A, None)).await;
            if !answer.answers.is_empty() {
                break;
            }
            assert!(started.elapsed() < PATIENCE, "{fqdn} never appeared");
        }
        delays.push(started.elapsed());
    }
    delays.sort();
    assert!(
        delays[delays.len() / 2] < Duration::from_millis(100),
        "{delays:?}"
    );

    let key = ObjectKey {
        namespace: "default".into(),
        name: "new-0".into(),
    };
    running
        .events
        .send(Event::Deleted(Kind::Service, key))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let answer = ask_udp(
            running.dns,
            &query("new-0.default.svc.cluster.local.", RecordType::A, None),
        )
        .await;
        if answer.metadata.response_code == ResponseCode::NXDomain {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the deleted service stayed");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let mut events = listing(cluster());
    let synced = events.pop();
    let running = start_with(&local_args(&[]), events).await;
    assert_eq!(http_get(running.http, "/health").await.0, 200);
    let (status, body) = http_get(running.http, "/ready").await;
    assert_eq!(status, 503, "not synced yet: {body}");
    assert_eq!(http_get(running.http, "/nope").await.0, 404);

    running.events.send(synced.unwrap()).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while http_get(running.http, "/ready").await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ask_udp(
        running.dns,
        &query("web.default.svc.cluster.local.", RecordType::A, None),
    )
    .await;
    ask_tcp(
        running.dns,
        &[query("nope.default.svc.cluster.local.", RecordType::SRV, None)],
    )
    .await;
    let (status, metrics) = http_get(running.http, "/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        "podnet_dns_requests_total{proto=\"udp\",type=\"A\"} 1",
        "podnet_dns_requests_total{proto=\"tcp\",type=\"SRV\"} 1",
        "podnet_dns_responses_total{rcode=\"NXDOMAIN\"} 1",
        "podnet_dns_request_duration_seconds_count 2",
        "# TYPE podnet_dns_request_duration_seconds histogram",
    ] {
        assert!(metrics.contains(expected), "{expected} in {metrics}");
    }
}

#[tokio::test]
async fn a_port_in_use_is_reported_with_what_to_do() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut args = local_args(&[]);
    args.listen = taken.local_addr().unwrap();
    let error = DnsServer::bind(&args)
        .err()
        .expect("the port is taken")
        .to_string();
    assert!(
        error.contains(&args.listen.to_string()) && error.contains("--listen"),
        "{error}"
    );
}

#[test]
fn the_server_never_forwards_to_itself() {
    let dir = std::env::temp_dir().join(format!("podnet-dns-resolv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv_conf = dir.join("resolv.conf");
    std::fs::write(&resolv_conf, "nameserver 127.0.0.1\nnameserver 192.0.2.53\n").unwrap();
    let args = DnsArgs::new(None);
    let found = upstreams(&args, &resolv_conf).unwrap();
    assert_eq!(found, ["192.0.2.53:53".parse::<SocketAddr>().unwrap()]);

    std::fs::write(&resolv_conf, "nameserver 127.0.0.1\n").unwrap();
    let error = upstreams(&args, &resolv_conf).unwrap_err().to_string();
    assert!(
        error.contains("this server itself") && error.contains("--upstream"),
        "{error}"
    );
    let mut elsewhere = args.clone();
    elsewhere.listen = "127.0.0.1:5353".parse().unwrap();
    assert_eq!(upstreams(&elsewhere, &resolv_conf).unwrap().len(), 1);
    let missing = upstreams(&args, &dir.join("missing")).unwrap_err().to_string();
    assert!(missing.contains("--no-forward"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}
