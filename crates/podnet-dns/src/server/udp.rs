//! The UDP server. Each worker thread owns one socket, bound to the listen address with
//! SO_REUSEPORT so that the kernel spreads clients over the sockets by address and port, and a
//! single-threaded tokio runtime: a query is received, answered and sent on one core, with no
//! queue, lock or socket shared with another worker. Queries for the upstreams run as tasks on
//! the same runtime while the worker goes on receiving.
//!
//! A socket bound to the wildcard address receives for every address of the host, and an
//! answer must leave from the address its query was sent to: a client (and the conntrack entry
//! of any NAT on the way) takes an answer from another address for a stranger's. The kernel
//! would pick the source by route, so the sockets ask for each datagram's destination
//! (IP_PKTINFO, IPV6_RECVPKTINFO) and name it as the source of the answer.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg,
    sendmmsg, sendmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};

use super::query::{Handled, handle};
use crate::message::{MAX_UDP_PAYLOAD, Transport};
use crate::metrics::Counters;
use crate::resolver::Resolver;

/// Queries for the upstreams one worker keeps in flight at most; beyond, they get SERVFAIL at
/// once rather than piling up.
const MAX_PENDING: usize = 1024;
/// The receive buffer asked of the kernel for each socket, to ride out bursts (the kernel
/// caps it at net.core.rmem_max).
const RECEIVE_BUFFER: usize = 4 << 20;
/// The pause after a failed receive, so that a broken socket cannot spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// `count` UDP sockets sharing `address` (with its port chosen by the system when 0).
pub fn bind(address: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let first = socket(address)?;
    let address = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(socket(address)?);
    }
    Ok(sockets)
}

fn socket(address: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    // Best effort: a smaller buffer only drops more of a burst.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    if address.ip().is_unspecified() {
        match address {
            SocketAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?,
            SocketAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?,
        }
    }
    socket.bind(&address.into())?;
    Ok(socket.into())
}

/// Answers the queries arriving on `socket` until `stop` fires.
pub async fn serve(
    socket: std::net::UdpSocket,
    resolver: Arc<Resolver>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<()>,
) {
    let socket = match UdpSocket::from_std(socket) {
        Ok(socket) => Arc::new(socket),
        Err(error) => {
            tracing::error!("cannot serve DNS over UDP: {error}");
            return;
        }
    };
    let wildcard = socket
        .local_addr()
        .is_ok_and(|address| address.ip().is_unspecified());
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    let mut batch = Batch::new(wildcard);
    loop {
        tokio::select! {
            ready = socket.readable() => if let Err(error) = ready {
                tracing::error!("cannot serve DNS over UDP: {error}");
                return;
            },
            _ = stop.changed() => return,
        }
        // Everything waiting, a batch at a time, until the socket runs dry.
        loop {
            let count = match socket.try_io(Interest::READABLE, || batch.receive(socket.as_raw_fd())) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::debug!("UDP receive failed: {error}");
                    tokio::time::sleep(ERROR_PAUSE).await;
                    break;
                }
            };
            batch.answered.clear();
            for index in 0..count {
                let (length, client, arrival) = batch.received[index];
                let out = &mut batch.answers[index];
                match handle(
                    &resolver,
                    &counters,
                    &batch.packets[index][..length],
                    Transport::Udp,
                    out,
                ) {
                    Handled::Answered => batch.answered.push(index),
                    Handled::Silence => {}
                    Handled::Pending(query) => match pending.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (socket, resolver, counters) =
                                (socket.clone(), resolver.clone(), counters.clone());
                            tokio::spawn(async move {
                                let mut out = Vec::new();
                                query.finish(&resolver, &counters, &mut out).await;
                                send(&socket, &out, client, arrival).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            query.overloaded(&counters, out);
                            batch.answered.push(index);
                        }
                    },
                }
            }
            batch.send(&socket).await;
        }
    }
}

/// Datagrams taken from the socket in one system call at most (recvmmsg), and answers sent in
/// one (sendmmsg): under load, two system calls serve a batch instead of two per query.
const BATCH: usize = 32;
/// The longest query a batch takes whole. A query is a few dozen bytes; a longer datagram is
/// cut, and answered as the malformed message it then is.
const MAX_QUERY: usize = 4096;

/// The buffers of one worker's batches.
struct Batch {
    packets: Vec<Vec<u8>>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Whether datagrams carry their destination (a wildcard socket), so answers name their
    /// source one by one.
    wildcard: bool,
    /// Length, sender and destination of each datagram received.
    received: Vec<(usize, SocketAddr, Option<Arrival>)>,
    answers: Vec<Vec<u8>>,
    /// The indexes of the answers to send.
    answered: Vec<usize>,
}

impl Batch {
    fn new(wildcard: bool) -> Self {
        Batch {
            packets: vec![vec![0; MAX_QUERY]; BATCH],
            headers: Self::headers(wildcard),
            wildcard,
            received: Vec::with_capacity(BATCH),
            answers: (0..BATCH)
                .map(|_| Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD)))
                .collect(),
            answered: Vec::with_capacity(BATCH),
        }
    }

    fn headers(wildcard: bool) -> MultiHeaders<SockaddrStorage> {
        MultiHeaders::preallocate(BATCH, wildcard.then(|| nix::cmsg_space!(libc::in6_pktinfo)))
    }

    /// Takes what datagrams are waiting, up to a batch; WouldBlock when none is.
    fn receive(&mut self, fd: std::os::fd::RawFd) -> io::Result<usize> {
        if self.wildcard {
            // The kernel shrinks each header's control length to what it wrote: fresh headers
            // give every datagram room for its destination again.
            self.headers = Self::headers(true);
        }
        self.received.clear();
        let mut slices: Vec<[IoSliceMut; 1]> = self
            .packets
            .iter_mut()
            .map(|packet| [IoSliceMut::new(packet)])
            .collect();
        let messages = recvmmsg(
            fd,
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for message in messages {
            let Some(client) = message.address.as_ref().and_then(socket_address) else {
                continue;
            };
            let arrival = message
                .cmsgs()
                .ok()
                .and_then(|mut controls| controls.find_map(arrival));
            self.received.push((message.bytes, client, arrival));
        }
        Ok(self.received.len())
    }

    /// Sends the answers of [`Batch::answered`] in one system call when it can, one by one
    /// what it could not.
    async fn send(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        if !self.wildcard && self.answered.len() > 1 {
            let slices: Vec<[IoSlice; 1]> = self
                .answered
                .iter()
                .map(|index| [IoSlice::new(&self.answers[*index])])
                .collect();
            let destinations: Vec<Option<SockaddrStorage>> = self
                .answered
                .iter()
                .map(|index| Some(SockaddrStorage::from(self.received[*index].1)))
                .collect();
            let mut headers = MultiHeaders::preallocate(slices.len(), None);
            let result = sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &slices,
                &destinations,
                [],
                MsgFlags::MSG_DONTWAIT,
            );
            if let Ok(results) = result {
                sent = results.count();
            }
        }
        for index in &self.answered[sent..] {
            let (_, client, arrival) = self.received[*index];
            send(socket, &self.answers[*index], client, arrival).await;
        }
    }
}

fn arrival(control: ControlMessageOwned) -> Option<Arrival> {
    match control {
        ControlMessageOwned::Ipv4PacketInfo(info) => Some(Arrival::V4(info)),
        ControlMessageOwned::Ipv6PacketInfo(info) => Some(Arrival::V6(info)),
        _ => None,
    }
}

/// The address a datagram was sent to, as the kernel reports it on a wildcard socket.
#[derive(Clone, Copy)]
enum Arrival {
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}

fn socket_address(address: &SockaddrStorage) -> Option<SocketAddr> {
    match address.family()? {
        nix::sys::socket::AddressFamily::Inet => address.as_sockaddr_in().map(|v4| SocketAddr::from(*v4)),
        nix::sys::socket::AddressFamily::Inet6 => address.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)),
        _ => None,
    }
}

/// Sends `answer` to `client`, from the address its query arrived at when known.
async fn send(socket: &UdpSocket, answer: &[u8], client: SocketAddr, arrival: Option<Arrival>) {
    if answer.is_empty() {
        return;
    }
    let destination = SockaddrStorage::from(client);
    let sent = socket
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(answer)];
            let (v4, v6);
            let control: &[ControlMessage] = match arrival {
                Some(Arrival::V4(received)) => {
                    v4 = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: received.ipi_addr,
                        ipi_addr: received.ipi_addr,
                    };
                    &[ControlMessage::Ipv4PacketInfo(&v4)]
                }
                Some(Arrival::V6(received)) => {
                    v6 = received;
                    &[ControlMessage::Ipv6PacketInfo(&v6)]
                }
                None => &[],
            };
            Ok(sendmsg(
                socket.as_raw_fd(),
                &iov,
                control,
                MsgFlags::MSG_DONTWAIT,
                Some(&destination),
            )?)
        })
        .await;
    if let Err(error) = sent {
        tracing::debug!("UDP answer to {client} failed: {error}");
    }
}
