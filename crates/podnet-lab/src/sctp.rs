//! Just enough SCTP to show that an association can start, on a kernel without SCTP sockets.
//!
//! This machine's kernel has no SCTP stack (`CONFIG_IP_SCTP` unset), but its conntrack and NAT
//! track and translate SCTP (`CONFIG_NF_CT_PROTO_SCTP`), so Services and NetworkPolicy meet
//! real SCTP packets all the same. The lab's agnhost speaks the first half of RFC 9260's
//! four-way handshake over raw IP sockets: the client sends INIT, the server answers INIT ACK,
//! and the client ends the attempt with ABORT. An INIT ACK coming back means what "connected"
//! means to the upstream e2e tests: the server's answer crossed every hop and every policy.
//!
//! ```text
//! common header:  source port (2) | destination port (2) | verification tag (4) | CRC32c (4)
//! INIT, INIT ACK: type (1) | flags (1) | length (2) | initiate tag (4) | a_rwnd (4)
//!                 | outbound streams (2) | inbound streams (2) | initial TSN (4) | parameters
//! ```
//!
//! The verification tag of an INIT is 0; every later packet carries the tag its receiver chose
//! (conntrack checks this: a packet with the wrong tag is invalid, and no NAT undoes it).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// IANA's protocol number of SCTP.
const IPPROTO_SCTP: i32 = 132;
const INIT: u8 = 1;
const INIT_ACK: u8 = 2;
const ABORT: u8 = 6;
/// The State Cookie parameter an INIT ACK must carry.
const STATE_COOKIE: u16 = 7;
const COMMON_HEADER: usize = 12;

/// A received SCTP packet's addresses and first chunk.
#[derive(Debug, PartialEq, Eq)]
struct Packet {
    source: SocketAddrV4,
    destination: SocketAddrV4,
    tag: u32,
    chunk: u8,
    /// The initiate tag, for INIT and INIT ACK.
    initiate_tag: Option<u32>,
}

impl Packet {
    /// Parses an IPv4 datagram as a raw socket receives it (IP header included); `None` for
    /// anything that is not a well-formed SCTP packet.
    fn parse(datagram: &[u8]) -> Option<Self> {
        let header_length = usize::from(datagram.first()? & 0x0f) * 4;
        let source = Ipv4Addr::from(<[u8; 4]>::try_from(datagram.get(12..16)?).ok()?);
        let destination = Ipv4Addr::from(<[u8; 4]>::try_from(datagram.get(16..20)?).ok()?);
        let sctp = datagram.get(header_length..)?;
        let word = |at: usize| {
            sctp.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let half = |at: usize| sctp.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let mut unchecked = sctp.to_vec();
        unchecked.get_mut(8..12)?.fill(0);
        if crc32c(&unchecked).to_le_bytes() != sctp[8..12] {
            return None;
        }
        let chunk = *sctp.get(COMMON_HEADER)?;
        Some(Packet {
            source: SocketAddrV4::new(source, half(0)?),
            destination: SocketAddrV4::new(destination, half(2)?),
            tag: word(4)?,
            chunk,
            initiate_tag: matches!(chunk, INIT | INIT_ACK)
                .then(|| word(COMMON_HEADER + 4))
                .flatten(),
        })
    }
}

/// An SCTP packet from `source_port` to `destination_port` with tag `tag` and one chunk,
/// checksummed.
fn packet(source_port: u16, destination_port: u16, tag: u32, chunk: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(COMMON_HEADER + chunk.len());
    packet.extend(source_port.to_be_bytes());
    packet.extend(destination_port.to_be_bytes());
    packet.extend(tag.to_be_bytes());
    packet.extend([0; 4]);
    packet.extend(chunk);
    let checksum = crc32c(&packet);
    packet[8..12].copy_from_slice(&checksum.to_le_bytes());
    packet
}

/// An INIT (or INIT ACK, with a state cookie) chunk choosing `initiate_tag`.
fn init_chunk(kind: u8, initiate_tag: u32) -> Vec<u8> {
    let mut chunk = vec![kind, 0, 0, 0];
    chunk.extend(initiate_tag.to_be_bytes());
    chunk.extend(65535u32.to_be_bytes()); // a_rwnd
    chunk.extend(1u16.to_be_bytes()); // outbound streams
    chunk.extend(1u16.to_be_bytes()); // inbound streams
    chunk.extend(initiate_tag.to_be_bytes()); // initial TSN
    if kind == INIT_ACK {
        chunk.extend(STATE_COOKIE.to_be_bytes());
        chunk.extend(8u16.to_be_bytes());
        chunk.extend(initiate_tag.to_be_bytes());
    }
    let length = chunk.len() as u16;
    chunk[2..4].copy_from_slice(&length.to_be_bytes());
    chunk
}

/// CRC-32C (Castagnoli), as SCTP checksums its packets.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A random non-zero 32-bit value (tags and ports must not be guessable, nor zero).
fn random() -> u32 {
    // Every RandomState is keyed afresh, so an empty hash of one is a random number.
    (RandomState::new().build_hasher().finish() as u32).max(1)
}

fn raw_socket() -> std::io::Result<Socket> {
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_SCTP)))
}

/// Answers every INIT to `port` (on any local address) with an INIT ACK, forever.
pub fn serve(port: u16) -> std::io::Result<()> {
    let mut socket = raw_socket()?;
    let mut buffer = [0u8; 2048];
    loop {
        let length = socket.read(&mut buffer)?;
        let Some(init) = Packet::parse(&buffer[..length]) else {
            continue;
        };
        let (INIT, Some(peer_tag), 0) = (init.chunk, init.initiate_tag, init.tag) else {
            continue;
        };
        if init.destination.port() != port {
            continue;
        }
        let reply = packet(
            port,
            init.source.port(),
            peer_tag,
            &init_chunk(INIT_ACK, random()),
        );
        socket.send_to(&reply, &SockAddr::from(SocketAddrV4::new(*init.source.ip(), 0)))?;
    }
}

/// Starts an association with `server` and aborts it once the server answers: `Ok` when an
/// INIT ACK came back within `timeout`.
pub fn probe(server: SocketAddrV4, timeout: Duration) -> Result<(), String> {
    let mut socket = raw_socket().map_err(|err| format!("raw SCTP socket: {err}"))?;
    let (port, tag) = (49152 + (random() % 16384) as u16, random());
    let to = SockAddr::from(SocketAddrV4::new(*server.ip(), 0));
    socket
        .send_to(&packet(port, server.port(), 0, &init_chunk(INIT, tag)), &to)
        .map_err(|err| format!("send INIT to {server}: {err}"))?;
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no INIT ACK from {server} within {timeout:?}"));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|err| err.to_string())?;
        let Ok(length) = socket.read(&mut buffer) else {
            continue;
        };
        let Some(answer) = Packet::parse(&buffer[..length]) else {
            continue;
        };
        if answer.source != server || answer.destination.port() != port || answer.tag != tag {
            continue;
        }
        match (answer.chunk, answer.initiate_tag) {
            (INIT_ACK, Some(server_tag)) => {
                let abort = packet(port, server.port(), server_tag, &[ABORT, 0, 0, 4]);
                let _ = socket.send_to(&abort, &to);
                return Ok(());
            }
            (ABORT, _) => return Err(format!("{server} aborted the association")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_crc32c() {
        // RFC 3720's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn an_init_ack_parses_back_with_its_tags() {
        let sctp = packet(80, 50000, 0x1234_5678, &init_chunk(INIT_ACK, 0x0abc_def0));
        let mut datagram = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 132, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1];
        datagram.extend(&sctp);
        assert_eq!(
            Packet::parse(&datagram),
            Some(Packet {
                source: "10.0.0.2:80".parse().unwrap(),
                destination: "10.0.0.1:50000".parse().unwrap(),
                tag: 0x1234_5678,
                chunk: INIT_ACK,
                initiate_tag: Some(0x0abc_def0),
            })
        );
        // A damaged packet is not one.
        let last = datagram.len() - 1;
        datagram[last] ^= 1;
        assert_eq!(Packet::parse(&datagram), None);
    }
}
