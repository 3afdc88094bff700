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
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, recvmsg, sendmsg,
    setsockopt, sockopt,
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
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    let mut packet = vec![0; usize::from(u16::MAX)];
    let mut out = Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD));
    loop {
        let received = tokio::select! {
            received = receive(&socket, &mut packet) => received,
            _ = stop.changed() => return,
        };
        let (length, client, arrival) = match received {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!("UDP receive failed: {error}");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        match handle(&resolver, &counters, &packet[..length], Transport::Udp, &mut out) {
            Handled::Answered => send(&socket, &out, client, arrival).await,
            Handled::Silence => {}
            Handled::Pending(query) => match pending.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (socket, resolver, counters) = (socket.clone(), resolver.clone(), counters.clone());
                    tokio::spawn(async move {
                        let mut out = Vec::new();
                        query.finish(&resolver, &counters, &mut out).await;
                        send(&socket, &out, client, arrival).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    query.overloaded(&counters, &mut out);
                    send(&socket, &out, client, arrival).await;
                }
            },
        }
    }
}

/// The address a datagram was sent to, as the kernel reports it on a wildcard socket.
#[derive(Clone, Copy)]
enum Arrival {
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}

/// Receives a datagram: its length, its sender and, on a wildcard socket, where it arrived.
async fn receive(socket: &UdpSocket, packet: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Arrival>)> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(packet)];
            let mut control = nix::cmsg_space!(libc::in6_pktinfo);
            let message = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_DONTWAIT,
            )?;
            let client = message
                .address
                .and_then(|address| socket_address(&address))
                .ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
            let arrival = message.cmsgs()?.find_map(|control| match control {
                ControlMessageOwned::Ipv4PacketInfo(info) => Some(Arrival::V4(info)),
                ControlMessageOwned::Ipv6PacketInfo(info) => Some(Arrival::V6(info)),
                _ => None,
            });
            Ok((message.bytes, client, arrival))
        })
        .await
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
