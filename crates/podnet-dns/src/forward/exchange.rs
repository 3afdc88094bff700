//! One question to one upstream: over UDP from a fresh socket (a new random source port and a
//! random ID per question, RFC 5452, so that forged answers are hard to slip in), and over TCP
//! when the UDP answer comes back truncated (RFC 1035 §4.2.2 framing: a two-byte length, then
//! the message).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::answer::{Answer, Question};
use crate::message::MAX_UDP_PAYLOAD;

/// Why an exchange brought no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The socket failed (the upstream unreachable, say: ICMP port unreachable).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The TCP answer could not be read as a message.
    #[error("a malformed answer")]
    Malformed,
}

/// Asks `upstream` `question` with recursion desired, and returns its answer as it gave it
/// (its response code included: judging it is the caller's job).
pub async fn exchange(
    upstream: SocketAddr,
    question: &Question,
    timeout: Duration,
) -> Result<Answer, ExchangeError> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(question.name.clone(), question.qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD);
    query.set_edns(edns);
    let id = query.metadata.id;
    let packet = query.to_vec().map_err(|_| ExchangeError::Malformed)?;
    let asked = async {
        let response = over_udp(upstream, &packet, id, question).await?;
        if response.metadata.truncation {
            return over_tcp(upstream, &packet, id, question).await;
        }
        Ok(response)
    };
    let response = tokio::time::timeout(timeout, asked)
        .await
        .map_err(|_| ExchangeError::Timeout(timeout))??;
    Ok(Answer {
        rcode: response.metadata.response_code,
        authoritative: false,
        answers: response.answers,
        authorities: response.authorities,
        additionals: response.additionals,
        alias: None,
    })
}

/// The answer `packet` gets over UDP. Datagrams that are not its answer (another ID, another
/// question, garbage) are ignored: only the deadline ends the wait.
async fn over_udp(
    upstream: SocketAddr,
    packet: &[u8],
    id: u16,
    question: &Question,
) -> Result<Message, ExchangeError> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    let mut buffer = vec![0; usize::from(u16::MAX)];
    loop {
        let length = socket.recv(&mut buffer).await?;
        if let Some(response) = answer_to(&buffer[..length], id, question) {
            return Ok(response);
        }
    }
}

/// The answer `packet` gets over TCP.
async fn over_tcp(
    upstream: SocketAddr,
    packet: &[u8],
    id: u16,
    question: &Question,
) -> Result<Message, ExchangeError> {
    let mut stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let length = u16::try_from(packet.len()).map_err(|_| ExchangeError::Malformed)?;
    let mut framed = Vec::with_capacity(2 + packet.len());
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let length = stream.read_u16().await?;
    let mut buffer = vec![0; usize::from(length)];
    stream.read_exact(&mut buffer).await?;
    answer_to(&buffer, id, question).ok_or(ExchangeError::Malformed)
}

/// `packet` read as the answer to query `id` asking `question`, if it is one.
fn answer_to(packet: &[u8], id: u16, question: &Question) -> Option<Message> {
    let message = Message::from_vec(packet).ok()?;
    let query = message.queries.first()?;
    let matches = message.metadata.id == id
        && message.metadata.message_type == MessageType::Response
        && message.queries.len() == 1
        && query.query_type() == question.qtype
        && query.name().eq_ignore_root(&question.name);
    matches.then_some(message)
}
