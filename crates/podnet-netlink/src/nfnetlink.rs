//! nfnetlink: the netlink family of the netfilter subsystems (nf_tables, conntrack).
//!
//! Every nfnetlink message is a netlink header, a 4-byte `nfgenmsg` (address family, version,
//! resource id) and attributes. nf_tables changes travel in *batches*: a `BATCH_BEGIN` message,
//! the changes, a `BATCH_END`, all in one datagram; the kernel applies the batch as one
//! transaction or not at all. This module owns the socket and the wire format; what the
//! messages mean is up to its callers (`podnet-nft` for nf_tables, [`crate::conntrack`]).

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};

use crate::error::{Error, Result};

/// `nlmsghdr` length.
const HEADER_LEN: usize = 16;
/// `nfgenmsg` length.
const NFGEN_LEN: usize = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
/// Set on attributes that hold attributes.
const NLA_F_NESTED: u16 = 0x8000;
/// The largest attribute payload: its length is 16 bits.
pub const MAX_ATTRIBUTE: usize = u16::MAX as usize - 4;
/// How long the kernel may take to answer before the request counts as lost (seconds).
const ANSWER_TIMEOUT: i64 = 30;
/// What one acknowledgement takes in the receive buffer (header, error code, the echoed
/// header), with room to spare.
const ACK_SIZE: usize = 64;

/// The nfnetlink subsystems podnet speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsystem {
    /// Connection tracking (`NFNL_SUBSYS_CTNETLINK`).
    Conntrack = 1,
    /// nf_tables (`NFNL_SUBSYS_NFTABLES`).
    Nftables = 10,
}

/// Attributes being written: type-length-value records, 4-byte aligned, nestable.
#[derive(Debug, Default, Clone)]
pub struct Attributes {
    bytes: Vec<u8>,
}

impl Attributes {
    /// No attributes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded size so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The encoded attributes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends an attribute holding `value`.
    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let length = 4 + value.len();
        self.bytes.extend_from_slice(&(length as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.bytes.resize(self.bytes.len().next_multiple_of(4), 0);
        self
    }

    /// Appends a NUL-terminated string attribute.
    pub fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut text = value.as_bytes().to_vec();
        text.push(0);
        self.bytes(kind, &text)
    }

    /// Appends a big-endian 32-bit attribute (netfilter's integers are in network order).
    pub fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// Appends a big-endian 16-bit attribute.
    pub fn be16(&mut self, kind: u16, value: u16) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// Appends a one-byte attribute.
    pub fn u8(&mut self, kind: u16, value: u8) -> &mut Self {
        self.bytes(kind, &[value])
    }

    /// Appends a nested attribute whose content `fill` writes.
    pub fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Attributes)) -> &mut Self {
        let mut inner = Attributes::new();
        fill(&mut inner);
        self.bytes(kind | NLA_F_NESTED, &inner.bytes)
    }

    /// Appends attributes encoded elsewhere, one after the other.
    pub fn append(&mut self, other: &Attributes) -> &mut Self {
        self.bytes.extend_from_slice(&other.bytes);
        self
    }

    /// Appends already encoded attributes as a nested attribute.
    pub fn nested(&mut self, kind: u16, inner: &Attributes) -> &mut Self {
        self.bytes(kind | NLA_F_NESTED, &inner.bytes)
    }
}

/// One nfnetlink request: which subsystem and message, with what flags, about what.
#[derive(Debug, Clone)]
pub struct Message {
    /// The subsystem.
    pub subsystem: Subsystem,
    /// The subsystem's message type (`NFT_MSG_NEWSETELEM`, `IPCTNL_MSG_CT_DELETE`, ...).
    pub kind: u8,
    /// Extra netlink flags (`NLM_F_CREATE`, ...); request and ack are always set.
    pub flags: u16,
    /// The address family (`NFPROTO_*`).
    pub family: u8,
    /// The attributes.
    pub attributes: Attributes,
}

impl Message {
    fn encode(&self, sequence: u32, extra_flags: u16, out: &mut Vec<u8>) {
        let length = HEADER_LEN + NFGEN_LEN + self.attributes.len();
        let kind = ((self.subsystem as u16) << 8) | u16::from(self.kind);
        push_header(
            out,
            length,
            kind,
            NLM_F_REQUEST | self.flags | extra_flags,
            sequence,
        );
        out.extend_from_slice(&[self.family, 0, 0, 0]);
        out.extend_from_slice(&self.attributes.bytes);
    }
}

fn push_header(out: &mut Vec<u8>, length: usize, kind: u16, flags: u16, sequence: u32) {
    out.extend_from_slice(&(length as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&sequence.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
}

/// A batch boundary message: `nfgenmsg` with the subsystem as resource id.
fn push_batch_marker(out: &mut Vec<u8>, kind: u16, subsystem: Subsystem, sequence: u32) {
    push_header(out, HEADER_LEN + NFGEN_LEN, kind, NLM_F_REQUEST, sequence);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(subsystem as u16).to_be_bytes());
}

/// A reply of a dump: its message type within the subsystem and its attributes.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The subsystem's message type.
    pub kind: u8,
    /// The encoded attributes, read with [`attributes`].
    pub payload: Vec<u8>,
}

/// A netlink socket to the netfilter subsystems of one network namespace (the one of the thread
/// that connected it, for its whole life).
pub struct NfNetlink {
    socket: Socket,
    sequence: u32,
    send_buffer: usize,
    receive_buffer: usize,
}

impl NfNetlink {
    /// Connects to the namespace of the calling thread.
    pub fn connect() -> Result<Self> {
        let transport = |err: io::Error| Error::Transport(format!("open netfilter socket: {err}"));
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(transport)?;
        socket.bind_auto().map_err(transport)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(transport)?;
        let _ = socket.set_ext_ack(true);
        // Errors need not echo the whole failing message (a batch's can be 64 KiB).
        let _ = socket.set_cap_ack(true);
        // An answer that never comes is an error, not a hung thread.
        let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT, 0);
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout).map_err(|err| transport(err.into()))?;
        Ok(NfNetlink {
            socket,
            sequence: 0,
            send_buffer: 0,
            receive_buffer: 0,
        })
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    /// Sends `messages` as one transaction of `subsystem` and waits for the kernel's verdict:
    /// every message applied, or none. On failure the error names `operation` and the
    /// message the kernel refused (by its position).
    pub fn transaction(
        &mut self,
        subsystem: Subsystem,
        messages: &[Message],
        operation: impl Fn() -> String,
    ) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let kernel = |source: io::Error| Error::Kernel {
            operation: operation(),
            source,
        };
        let begin = self.next_sequence();
        let mut datagram = Vec::new();
        push_batch_marker(&mut datagram, BATCH_BEGIN, subsystem, begin);
        let first = begin.wrapping_add(1);
        for message in messages {
            let sequence = self.next_sequence();
            message.encode(sequence, NLM_F_ACK, &mut datagram);
        }
        let end = self.next_sequence();
        push_batch_marker(&mut datagram, BATCH_END, subsystem, end);
        // The whole batch is one datagram: the socket's send buffer must hold it, and the
        // receive buffer every acknowledgement (nft sizes its buffers the same way).
        if datagram.len() + 4096 > self.send_buffer {
            let size = (datagram.len() + 4096).next_power_of_two();
            setsockopt(&self.socket, sockopt::SndBufForce, &size)
                .or_else(|_| setsockopt(&self.socket, sockopt::SndBuf, &size))
                .map_err(|err| kernel(err.into()))?;
            self.send_buffer = size;
        }
        let acks = (messages.len() * ACK_SIZE + 65536).next_power_of_two();
        if acks > self.receive_buffer {
            setsockopt(&self.socket, sockopt::RcvBufForce, &acks)
                .or_else(|_| setsockopt(&self.socket, sockopt::RcvBuf, &acks))
                .map_err(|err| kernel(err.into()))?;
            self.receive_buffer = acks;
        }
        self.socket.send(&datagram, 0).map_err(kernel)?;
        // One answer per message (an ack, or the error that failed it); a commit that fails as a
        // whole answers once, on the batch's first message.
        let mut answered = 0;
        let mut failure: Option<(u32, io::Error)> = None;
        while answered < messages.len() {
            let (reply, _) = self.socket.recv_from_full().map_err(kernel)?;
            for (header, body) in split(&reply).map_err(kernel)? {
                // Sequence numbers wrap: compare distances from the batch's first.
                let in_batch = header.sequence.wrapping_sub(begin) <= end.wrapping_sub(begin);
                if header.kind != NLMSG_ERROR || !in_batch {
                    continue;
                }
                let code = error_code(body).map_err(kernel)?;
                if header.sequence == begin {
                    return Err(kernel(io::Error::from_raw_os_error(-code)));
                }
                answered += 1;
                if code != 0 && failure.is_none() {
                    failure = Some((header.sequence, io::Error::from_raw_os_error(-code)));
                }
            }
        }
        match failure {
            None => Ok(()),
            Some((sequence, source)) => Err(Error::Kernel {
                operation: format!(
                    "{} (message {} of {})",
                    operation(),
                    sequence.wrapping_sub(first) + 1,
                    messages.len()
                ),
                source,
            }),
        }
    }

    /// Sends one request outside any batch and waits for its acknowledgement.
    pub fn request(&mut self, message: &Message, operation: impl FnOnce() -> String) -> Result<()> {
        self.exchange(message, 0, operation).map(drop)
    }

    /// Asks for a dump and returns every reply.
    pub fn dump(&mut self, message: &Message, operation: impl FnOnce() -> String) -> Result<Vec<Reply>> {
        self.exchange(message, NLM_F_DUMP, operation)
    }

    fn exchange(
        &mut self,
        message: &Message,
        flags: u16,
        operation: impl FnOnce() -> String,
    ) -> Result<Vec<Reply>> {
        let sequence = self.next_sequence();
        let mut datagram = Vec::new();
        message.encode(sequence, NLM_F_ACK | flags, &mut datagram);
        let outcome = (|| -> io::Result<Vec<Reply>> {
            self.socket.send(&datagram, 0)?;
            let mut replies = Vec::new();
            loop {
                let (datagram, _) = self.socket.recv_from_full()?;
                for (header, body) in split(&datagram)? {
                    if header.sequence != sequence {
                        continue;
                    }
                    match header.kind {
                        NLMSG_ERROR => {
                            let code = error_code(body)?;
                            return if code == 0 {
                                Ok(replies)
                            } else {
                                Err(io::Error::from_raw_os_error(-code))
                            };
                        }
                        NLMSG_DONE => return Ok(replies),
                        kind if body.len() >= NFGEN_LEN => {
                            replies.push(Reply {
                                kind: (kind & 0xff) as u8,
                                payload: body[NFGEN_LEN..].to_vec(),
                            });
                        }
                        _ => {}
                    }
                }
            }
        })();
        outcome.map_err(|source| Error::Kernel {
            operation: operation(),
            source,
        })
    }
}

struct Header {
    kind: u16,
    sequence: u32,
}

/// The messages of a datagram: header and body each.
fn split(datagram: &[u8]) -> io::Result<Vec<(Header, &[u8])>> {
    let mut messages = Vec::new();
    let mut offset = 0;
    while offset + HEADER_LEN <= datagram.len() {
        let read32 = |at: usize| u32::from_ne_bytes(datagram[at..at + 4].try_into().expect("4 bytes"));
        let read16 = |at: usize| u16::from_ne_bytes(datagram[at..at + 2].try_into().expect("2 bytes"));
        let length = read32(offset) as usize;
        if length < HEADER_LEN || offset + length > datagram.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated netlink message",
            ));
        }
        messages.push((
            Header {
                kind: read16(offset + 4),
                sequence: read32(offset + 8),
            },
            &datagram[offset + HEADER_LEN..offset + length],
        ));
        offset += length.next_multiple_of(4);
    }
    Ok(messages)
}

/// The (negative) errno of an `NLMSG_ERROR` body; 0 for an acknowledgement.
fn error_code(body: &[u8]) -> io::Result<i32> {
    body.get(..4)
        .map(|bytes| i32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short netlink error"))
}

/// The attributes of an encoded attribute list: `(type without flags, value)` each.
pub fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset + 4 > bytes.len() {
            return None;
        }
        let length = u16::from_ne_bytes([bytes[offset], bytes[offset + 1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[offset + 2], bytes[offset + 3]]) & !NLA_F_NESTED & 0x3fff;
        if length < 4 || offset + length > bytes.len() {
            return None;
        }
        let value = &bytes[offset + 4..offset + length];
        offset += length.next_multiple_of(4);
        Some((kind, value))
    })
}

/// The value of the first attribute of type `kind`.
pub fn attribute(bytes: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(bytes)
        .find(|(found, _)| *found == kind)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_aligned_and_read_back() {
        let mut list = Attributes::new();
        list.string(1, "podnet").be32(2, 7).nest(3, |inner| {
            inner.u8(1, 6);
        });
        assert_eq!(list.len() % 4, 0);
        let read: Vec<(u16, Vec<u8>)> = attributes(&list.bytes)
            .map(|(kind, value)| (kind, value.to_vec()))
            .collect();
        assert_eq!(read[0], (1, b"podnet\0".to_vec()));
        assert_eq!(read[1], (2, vec![0, 0, 0, 7]));
        assert_eq!(read[2].0, 3, "the nested flag is not part of the type");
        assert_eq!(attribute(&read[2].1, 1), Some(&[6u8][..]));
    }

    #[test]
    fn a_batch_is_framed_by_markers_naming_the_subsystem() {
        let mut datagram = Vec::new();
        push_batch_marker(&mut datagram, BATCH_BEGIN, Subsystem::Nftables, 9);
        let message = Message {
            subsystem: Subsystem::Nftables,
            kind: 12,
            flags: 0,
            family: 2,
            attributes: Attributes::new(),
        };
        message.encode(10, NLM_F_ACK, &mut datagram);
        let parts = split(&datagram).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0.kind, BATCH_BEGIN);
        assert_eq!(
            &parts[0].1[2..4],
            &10u16.to_be_bytes(),
            "resource id: the subsystem"
        );
        assert_eq!(parts[1].0.kind, (10 << 8) | 12);
        assert_eq!(
            u16::from_ne_bytes([datagram[20 + 6], datagram[20 + 7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(parts[1].0.sequence, 10);
    }
}
