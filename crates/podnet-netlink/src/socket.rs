//! A synchronous rtnetlink socket: one request, then its replies up to the ACK or DONE.
//!
//! Every request carries `NLM_F_ACK`, so the kernel always answers, and the answer is read before
//! the next request is sent: operations are strictly ordered and an error belongs to the request
//! that caused it.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// A netlink connection to the routing subsystem of one network namespace.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

/// How a request that creates an object treats an existing one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Create {
    /// Fail with EEXIST when the object exists.
    Exclusive,
    /// Replace the existing object.
    Replace,
}

impl Netlink {
    /// Connects to the namespace of the calling thread.
    pub fn connect() -> Result<Self> {
        let transport = |err: io::Error| Error::Transport(format!("open socket: {err}"));
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(transport)?;
        socket.bind_auto().map_err(transport)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(transport)?;
        // Ask for extended acks so the kernel says which attribute it rejected; older kernels
        // without the option still work.
        let _ = socket.set_ext_ack(true);
        // Let dumps be filtered by the kernel (an address dump of one link, say) instead of
        // sending every entry; without it the kernel ignores the filter and callers filter.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink { socket, sequence: 0 })
    }

    /// Connects to the namespace `netns`, without changing the calling thread's namespace.
    pub fn connect_in(netns: &Netns) -> Result<Self> {
        netns.socket_in(Self::connect)?
    }

    /// Sends a request that changes state and waits for its acknowledgement.
    pub(crate) fn execute(
        &mut self,
        message: RouteNetlinkMessage,
        create: Option<Create>,
        operation: impl FnOnce() -> String,
    ) -> Result<()> {
        let flags = match create {
            None => 0,
            Some(Create::Exclusive) => NLM_F_CREATE | NLM_F_EXCL,
            Some(Create::Replace) => NLM_F_CREATE | NLM_F_REPLACE,
        };
        self.exchange(message, flags)
            .map(drop)
            .map_err(|source| Error::Kernel {
                operation: operation(),
                source,
            })
    }

    /// Sends a query and collects the messages of the answer (a dump when `dump` is set).
    pub(crate) fn query(
        &mut self,
        message: RouteNetlinkMessage,
        dump: bool,
        operation: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let flags = if dump { NLM_F_DUMP } else { 0 };
        // A dump that the kernel marks interrupted (the table changed while it was being sent)
        // may miss or repeat entries: ask again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.exchange(message.clone(), flags) {
                Ok(Exchange {
                    interrupted: true, ..
                }) if attempts < DUMP_ATTEMPTS => continue,
                Ok(Exchange {
                    interrupted: true, ..
                }) => {
                    break Err(Error::Kernel {
                        operation: operation(),
                        source: io::Error::new(
                            io::ErrorKind::Interrupted,
                            format!("the dump changed under us {DUMP_ATTEMPTS} times in a row"),
                        ),
                    });
                }
                Ok(exchange) => break Ok(exchange.replies),
                Err(source) => {
                    break Err(Error::Kernel {
                        operation: operation(),
                        source,
                    });
                }
            }
        }
    }

    fn exchange(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<Exchange> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        request.finalize();
        let mut buffer = vec![0; request.buffer_len()];
        request.serialize(&mut buffer);
        self.socket.send(&buffer, 0)?;

        let mut replies = Vec::new();
        let mut interrupted = false;
        let done = |replies, interrupted| Ok(Exchange { replies, interrupted });
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < datagram.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                    .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "zero-length netlink message",
                    ));
                }
                offset += length;
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Done(end) if end.code != 0 => {
                        return Err(io::Error::from_raw_os_error(-end.code));
                    }
                    NetlinkPayload::Done(_) => return done(replies, interrupted),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => done(replies, interrupted),
                            Some(_) => Err(error.to_io()),
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

/// How often a dump is asked for again when the kernel reports it interrupted.
const DUMP_ATTEMPTS: u32 = 3;

/// The answer to one request.
struct Exchange {
    replies: Vec<RouteNetlinkMessage>,
    /// The kernel flagged the dump as inconsistent (`NLM_F_DUMP_INTR`).
    interrupted: bool,
}
