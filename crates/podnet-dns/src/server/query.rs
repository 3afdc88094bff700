//! One query, from packet to answer, as the UDP and TCP servers both handle it.
//!
//! Most queries are answered on the spot, into the caller's buffer: names of the cluster, the
//! static zones and the cache. A query for the upstreams becomes a [`PendingQuery`] that the
//! caller finishes asynchronously, without holding up the queries behind it.

use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};

use crate::answer::Answer;
use crate::message::{Rejection, Request, Transport, read_request, write_answer, write_error};
use crate::metrics::Counters;
use crate::resolver::{Forwarding, Resolution, Resolver};

/// What became of a packet.
#[derive(Debug)]
pub enum Handled {
    /// The answer is in the buffer.
    Answered,
    /// Nothing is to be sent.
    Silence,
    /// The upstreams must be asked first.
    Pending(Box<PendingQuery>),
}

/// A query waiting for the upstreams.
#[derive(Debug)]
pub struct PendingQuery {
    request: Request,
    forwarding: Forwarding,
    started: Instant,
}

/// Handles `packet`, which arrived over `transport`, writing any answer into `out`.
pub fn handle(
    resolver: &Resolver,
    counters: &Counters,
    packet: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
) -> Handled {
    let started = Instant::now();
    let request = match read_request(packet, transport) {
        Ok(request) => request,
        Err(Rejection::Silence) => return Handled::Silence,
        Err(Rejection::Error(error)) => {
            write_error(&error, out);
            counters.response(error.rcode(), started);
            return Handled::Answered;
        }
    };
    counters.request(transport, request.question.qtype);
    let answer = if let Some(refusal) = refusal(&request) {
        Answer::error(refusal)
    } else {
        match resolver.resolve(&request.question, started, counters) {
            Resolution::Answered(answer) => answer,
            Resolution::Forward(forwarding) => {
                return Handled::Pending(Box::new(PendingQuery {
                    request,
                    forwarding: *forwarding,
                    started,
                }));
            }
        }
    };
    write_answer(&request, &answer, out);
    counters.response(answer.rcode, started);
    Handled::Answered
}

/// Questions the server does not serve: classes other than IN (CHAOS `version.bind`...),
/// zone transfers, and types only messages carry.
fn refusal(request: &Request) -> Option<ResponseCode> {
    if request.query.query_class() != DNSClass::IN {
        return Some(ResponseCode::Refused);
    }
    match request.question.qtype {
        RecordType::AXFR | RecordType::IXFR => Some(ResponseCode::Refused),
        RecordType::OPT => Some(ResponseCode::FormErr),
        _ => None,
    }
}

impl PendingQuery {
    /// Asks the upstreams and writes the answer into `out`.
    pub async fn finish(self, resolver: &Resolver, counters: &Counters, out: &mut Vec<u8>) {
        let answer = resolver.forward(self.forwarding).await;
        write_answer(&self.request, &answer, out);
        counters.response(answer.rcode, self.started);
    }

    /// Answers at once that the server is too busy (SERVFAIL: the client tries another server).
    pub fn overloaded(self, counters: &Counters, out: &mut Vec<u8>) {
        write_answer(&self.request, &Answer::error(ResponseCode::ServFail), out);
        counters.response(ResponseCode::ServFail, self.started);
    }
}
