//! Random and mutated packets: the server must answer what it can, drop the rest, never panic
//! or stall, and still answer correctly afterwards. A deterministic generator makes every run
//! the same, so a failure can be replayed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;

use super::query::{Handled, handle};
use super::tests::start;
use crate::cache::Cache;
use crate::cluster::{ClusterZone, ZoneUpdater};
use crate::message::Transport;
use crate::metrics::Counters;
use crate::resolver::Resolver;
use crate::static_zone::StaticZones;
use crate::testing::{ask_tcp, ask_udp, data, headless, listing, namespace, query, service, slice};

/// xorshift64*: small, fast, and the same sequence everywhere.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

const NAMES: [&str; 6] = [
    "web.default.svc.cluster.local.",
    "_http._tcp.web.default.svc.cluster.local.",
    "db-0.db.default.svc.cluster.local.",
    "10.0.96.10.in-addr.arpa.",
    "10-244-1-5.default.pod.cluster.local.",
    "www.example.com.",
];
const TYPES: [RecordType; 7] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::TXT,
    RecordType::ANY,
    RecordType::AXFR,
];

/// A packet: random bytes, or a valid query mutated one of several ways.
fn packet(generator: &mut Generator) -> Vec<u8> {
    if generator.below(4) == 0 {
        let length = generator.below(600);
        return (0..length).map(|_| generator.byte()).collect();
    }
    let name = NAMES[generator.below(NAMES.len())];
    let qtype = TYPES[generator.below(TYPES.len())];
    let edns = (generator.below(2) == 0).then(|| generator.below(5000) as u16);
    let mut packet = query(name, qtype, edns);
    match generator.below(7) {
        // Flip a few bytes anywhere.
        0 => {
            for _ in 0..=generator.below(8) {
                let at = generator.below(packet.len());
                packet[at] ^= generator.byte() | 1;
            }
        }
        // Cut it short.
        1 => packet.truncate(generator.below(packet.len())),
        // Append garbage.
        2 => packet.extend((0..generator.below(300)).map(|_| generator.byte())),
        // Claim other section counts.
        3 => {
            let at = 4 + 2 * generator.below(4);
            packet[at] = generator.byte();
            packet[at + 1] = generator.byte();
        }
        // A name that points at itself (compression loop).
        4 => {
            packet.truncate(12);
            packet.extend([0xc0, 12, 0, 1, 0, 1]);
        }
        // Other flags and opcodes.
        5 => packet[2] = generator.byte(),
        // Left valid.
        _ => {}
    }
    packet
}

fn objects() -> Vec<podnet_model::Object> {
    vec![
        namespace("default"),
        service("default", "web", "10.96.0.10", &[("http", "TCP", 80)]),
        headless("default", "db"),
        slice(
            "default",
            "db",
            "db",
            &[("10.244.1.5", true, Some("db-0"))],
            &[("http", "TCP", 80)],
        ),
    ]
}

fn resolver() -> Resolver {
    let zone = Arc::new(ClusterZone::new("cluster.local", 5).unwrap());
    let mut updater = ZoneUpdater::new(zone.clone());
    for event in listing(objects()) {
        updater.apply(&event);
    }
    updater.publish();
    let statics = StaticZones::new(&["www.example.com=192.0.2.10".parse().unwrap()], 5);
    Resolver::new(Some(zone), statics, Cache::new(100), None)
}

#[test]
fn every_packet_gets_a_well_formed_answer_or_none() {
    let (resolver, counters) = (resolver(), Counters::default());
    let mut generator = Generator(0x0005_eed0_fd45);
    let mut out = Vec::new();
    let (mut answered, mut silent) = (0, 0);
    for round in 0..20_000 {
        let packet = packet(&mut generator);
        let transport = if round % 5 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        match handle(&resolver, &counters, &packet, transport, &mut out) {
            Handled::Answered => {
                answered += 1;
                let answer =
                    Message::from_vec(&out).unwrap_or_else(|error| panic!("round {round}: {error}: {out:?}"));
                if transport == Transport::Udp {
                    assert!(
                        out.len() <= usize::from(crate::message::MAX_UDP_PAYLOAD),
                        "round {round}"
                    );
                }
                assert_eq!(
                    answer.metadata.id,
                    u16::from_be_bytes([packet[0], packet[1]]),
                    "round {round}"
                );
            }
            Handled::Silence => silent += 1,
            Handled::Pending(pending) => panic!("round {round}: nothing to forward to, yet {pending:?}"),
        }
    }
    assert!(
        answered > 10_000 && silent > 1_000,
        "{answered} answered, {silent} silent"
    );
}

#[tokio::test]
async fn the_server_still_answers_after_a_fuzz_run() {
    let running = start(objects(), &[]).await;
    let mut generator = Generator(0x00de_c0de);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    for _ in 0..3_000 {
        let _ = socket.send_to(&packet(&mut generator), running.dns).await;
    }
    for _ in 0..50 {
        tcp_garbage(running.dns, &mut generator).await;
    }
    let answer = ask_udp(
        running.dns,
        &query("web.default.svc.cluster.local.", RecordType::A, None),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(data(&answer.answers), ["10.96.0.10"]);
    let over_tcp = ask_tcp(
        running.dns,
        &[query("web.default.svc.cluster.local.", RecordType::A, None)],
    )
    .await;
    assert_eq!(data(&over_tcp[0].answers), ["10.96.0.10"]);
    assert!(
        started.elapsed() < crate::testing::PATIENCE,
        "the run stalled: {:?}",
        started.elapsed()
    );
}

/// A connection that sends a random length and random bytes, and may leave early.
async fn tcp_garbage(server: SocketAddr, generator: &mut Generator) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(server).await else {
        return;
    };
    let length = generator.below(70_000).min(usize::from(u16::MAX)) as u16;
    let body: Vec<u8> = (0..generator.below(2_000)).map(|_| generator.byte()).collect();
    let _ = stream.write_all(&length.to_be_bytes()).await;
    let _ = stream.write_all(&body).await;
}
