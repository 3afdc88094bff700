//! DNS messages on the wire (RFC 1035 §4; EDNS0, RFC 6891): which packets are queries the
//! server answers, and answers fitted to what the client can receive.
//!
//! hickory-proto decodes and encodes (names compressed). This module decides the rest: a packet
//! too short for a header, or a response, gets nothing (answering responses would let two
//! servers bounce packets forever); one whose header can be read but not the rest gets FORMERR.
//! Over UDP an answer must fit the client's buffer: 512 bytes, or the size its OPT record
//! announces (capped at 1232, DNS Flag Day 2020's size that avoids IP fragmentation). An answer
//! that does not fit carries as many answer records as fit and the TC bit, so the client asks
//! again over TCP (where 65,535 bytes fit); additional records that do not fit are just left
//! out.

use hickory_proto::ProtoError;
use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::answer::{Answer, Question};

/// The largest UDP answer sent, whatever the client announces (DNS Flag Day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// A UDP answer's limit when the query has no OPT record (RFC 1035).
const PLAIN_UDP_PAYLOAD: u16 = 512;
/// The size of a header.
const HEADER_LEN: usize = 12;
/// The size of the server's OPT record (no options).
const OPT_LEN: usize = 11;

/// How a query arrived, which decides how large its answer may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram: the answer must fit the client's buffer.
    Udp,
    /// A TCP stream: anything up to 65,535 bytes.
    Tcp,
}

/// A query the server answers.
#[derive(Debug, Clone)]
pub struct Request {
    /// The question as it arrived, echoed in the answer.
    pub query: Query,
    /// The question, ready to look up.
    pub question: Question,
    id: u16,
    recursion_desired: bool,
    checking_disabled: bool,
    /// The buffer size the client's OPT record announces, if it sent one.
    edns_payload: Option<u16>,
    transport: Transport,
}

impl Request {
    /// How large the answer may be.
    pub fn max_size(&self) -> u16 {
        match self.transport {
            Transport::Tcp => u16::MAX,
            Transport::Udp => self.edns_payload.map_or(PLAIN_UDP_PAYLOAD, |payload| {
                payload.clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
            }),
        }
    }
}

/// A packet the server does not answer as a query.
#[derive(Debug)]
pub enum Rejection {
    /// Nothing is sent back: the packet is too short for a header, or is a response.
    Silence,
    /// A bare error answer is sent back.
    Error(ErrorAnswer),
}

/// An error answer to a packet that is no query the server serves.
#[derive(Debug)]
pub struct ErrorAnswer {
    id: u16,
    op_code: OpCode,
    recursion_desired: bool,
    rcode: ResponseCode,
    /// The question, when it could be read.
    query: Option<Query>,
    /// Whether the packet had an OPT record (so the answer has one too).
    edns: bool,
}

impl ErrorAnswer {
    /// The response code.
    pub fn rcode(&self) -> ResponseCode {
        self.rcode
    }
}

/// The fields of a header, read without decoding anything else.
struct RawHeader {
    id: u16,
    is_response: bool,
    op_code: OpCode,
    recursion_desired: bool,
    question_count: u16,
}

impl RawHeader {
    fn read(packet: &[u8]) -> Option<Self> {
        let header = packet.get(..HEADER_LEN)?;
        let flags = header[2];
        Some(RawHeader {
            id: u16::from_be_bytes([header[0], header[1]]),
            is_response: flags & 0x80 != 0,
            op_code: OpCode::from_u8((flags >> 3) & 0x0f),
            recursion_desired: flags & 0x01 != 0,
            question_count: u16::from_be_bytes([header[4], header[5]]),
        })
    }
}

/// Reads the query in `packet`, or says why it is none the server answers.
pub fn read_request(packet: &[u8], transport: Transport) -> Result<Request, Rejection> {
    let raw = RawHeader::read(packet).ok_or(Rejection::Silence)?;
    if raw.is_response {
        return Err(Rejection::Silence);
    }
    let reject = |rcode, query, edns| {
        Rejection::Error(ErrorAnswer {
            id: raw.id,
            op_code: raw.op_code,
            recursion_desired: raw.recursion_desired,
            rcode,
            query,
            edns,
        })
    };
    if raw.op_code != OpCode::Query {
        return Err(reject(ResponseCode::NotImp, None, false));
    }
    // Exactly one question (RFC 9619): a query without one, or with several, is malformed.
    if raw.question_count != 1 {
        return Err(reject(ResponseCode::FormErr, None, false));
    }
    let message = Message::from_vec(packet).map_err(|_| reject(ResponseCode::FormErr, None, false))?;
    let Some(query) = message.queries.into_iter().next() else {
        return Err(reject(ResponseCode::FormErr, None, false));
    };
    if let Some(edns) = &message.edns
        && edns.version() > 0
    {
        return Err(reject(ResponseCode::BADVERS, Some(query), true));
    }
    Ok(Request {
        question: Question::new(query.name().clone(), query.query_type()),
        query,
        id: raw.id,
        recursion_desired: raw.recursion_desired,
        checking_disabled: message.metadata.checking_disabled,
        edns_payload: message.edns.map(|edns| edns.max_payload()),
        transport,
    })
}

/// Writes the answer to `request` into `out`, fitted to the request's transport.
pub fn write_answer(request: &Request, answer: &Answer, out: &mut Vec<u8>) {
    let mut metadata = Metadata::new(request.id, MessageType::Response, OpCode::Query);
    metadata.authoritative = answer.authoritative;
    metadata.recursion_desired = request.recursion_desired;
    metadata.recursion_available = true;
    metadata.checking_disabled = request.checking_disabled;
    metadata.response_code = answer.rcode;
    let sections = Sections {
        query: Some(&request.query),
        answers: &answer.answers,
        authorities: &answer.authorities,
        additionals: &answer.additionals,
        edns: request.edns_payload.is_some(),
    };
    if write(metadata, &sections, request.max_size(), out).is_err() {
        // Records that cannot be encoded (none of ours; a peculiar upstream answer): better
        // a failure the client understands than nothing.
        metadata.response_code = ResponseCode::ServFail;
        metadata.authoritative = false;
        let bare = Sections {
            answers: &[],
            authorities: &[],
            additionals: &[],
            ..sections
        };
        if write(metadata, &bare, request.max_size(), out).is_err() {
            out.clear();
        }
    }
}

/// Writes an error answer into `out`.
pub fn write_error(error: &ErrorAnswer, out: &mut Vec<u8>) {
    let mut metadata = Metadata::new(error.id, MessageType::Response, error.op_code);
    metadata.recursion_desired = error.recursion_desired;
    metadata.recursion_available = true;
    metadata.response_code = error.rcode;
    let sections = Sections {
        query: error.query.as_ref(),
        answers: &[],
        authorities: &[],
        additionals: &[],
        edns: error.edns,
    };
    if write(metadata, &sections, PLAIN_UDP_PAYLOAD, out).is_err() {
        out.clear();
    }
}

/// What a message holds after its header.
struct Sections<'a> {
    query: Option<&'a Query>,
    answers: &'a [Record],
    authorities: &'a [Record],
    additionals: &'a [Record],
    edns: bool,
}

/// Encodes a message of at most `limit` bytes: answer and authority records that do not fit
/// are cut and the TC bit set; additional records that do not fit are only left out. The OPT
/// record always fits (room is kept for it).
fn write(
    mut metadata: Metadata,
    sections: &Sections<'_>,
    limit: u16,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    let room_for_opt = if sections.edns { OPT_LEN as u16 } else { 0 };
    encoder.set_max_size(limit - room_for_opt);
    let header = encoder.place::<Header>()?;
    let mut counts = HeaderCounts::default();
    if let Some(query) = sections.query {
        query.emit(&mut encoder)?;
        counts.queries = 1;
    }
    let (answers, mut truncated) = emit_fitting(&mut encoder, sections.answers)?;
    counts.answers = answers;
    if !truncated {
        (counts.authorities, truncated) = emit_fitting(&mut encoder, sections.authorities)?;
    }
    if !truncated {
        counts.additionals = emit_fitting(&mut encoder, sections.additionals)?.0;
    }
    encoder.set_max_size(limit);
    if sections.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        edns.set_rcode_high(metadata.response_code.high());
        edns.emit(&mut encoder)?;
        counts.additionals += 1;
    }
    metadata.truncation = truncated;
    header.replace(&mut encoder, Header { metadata, counts })?;
    encoder.trim();
    Ok(())
}

/// Emits as many of `records` as fit: how many, and whether some did not.
fn emit_fitting(encoder: &mut BinEncoder<'_>, records: &[Record]) -> Result<(u16, bool), ProtoError> {
    let (count, cut) = match encoder.emit_all(records.iter()) {
        Ok(count) => (count, false),
        Err(ProtoError::NotAllRecordsWritten { count, .. }) => (count, true),
        Err(error) => return Err(error),
    };
    // A limit of at most 65,535 bytes holds fewer records than that.
    Ok((u16::try_from(count).unwrap_or(u16::MAX), cut))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, RecordType};

    use super::*;

    fn query_packet(name: &str, edns: Option<u16>) -> Vec<u8> {
        let mut message = Message::query();
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message.metadata.recursion_desired = true;
        if let Some(payload) = edns {
            let mut opt = Edns::new();
            opt.set_max_payload(payload);
            message.set_edns(opt);
        }
        message.to_vec().unwrap()
    }

    fn many_addresses(name: &Name, count: u8) -> Vec<Record> {
        (0..count)
            .map(|index| Record::from_rdata(name.clone(), 5, RData::A(A(Ipv4Addr::new(10, 0, 0, index)))))
            .collect()
    }

    #[test]
    fn answers_are_cut_to_the_clients_buffer_with_tc() {
        let packet = query_packet("Big.Example.", None);
        let request = read_request(&packet, Transport::Udp).unwrap();
        assert_eq!(request.max_size(), 512);
        let answer = Answer::records(many_addresses(&request.question.name, 100));
        let mut out = Vec::new();
        write_answer(&request, &answer, &mut out);
        assert!(out.len() <= 512, "{}", out.len());
        let decoded = Message::from_vec(&out).unwrap();
        assert!(decoded.metadata.truncation);
        assert!(!decoded.answers.is_empty() && decoded.answers.len() < 100);
        assert_eq!(
            decoded.queries[0].name().to_string(),
            "Big.Example.",
            "the question as asked"
        );

        let tcp = read_request(&packet, Transport::Tcp).unwrap();
        write_answer(&tcp, &answer, &mut out);
        let decoded = Message::from_vec(&out).unwrap();
        assert!(!decoded.metadata.truncation);
        assert_eq!(decoded.answers.len(), 100);
    }

    #[test]
    fn an_opt_record_is_answered_with_one_and_its_size_respected() {
        let packet = query_packet("big.example.", Some(4096));
        let request = read_request(&packet, Transport::Udp).unwrap();
        assert_eq!(request.max_size(), MAX_UDP_PAYLOAD);
        let answer = Answer::records(many_addresses(&request.question.name, 100));
        let mut out = Vec::new();
        write_answer(&request, &answer, &mut out);
        assert!(out.len() <= usize::from(MAX_UDP_PAYLOAD));
        let decoded = Message::from_vec(&out).unwrap();
        assert!(decoded.metadata.truncation);
        assert_eq!(
            decoded.edns.as_ref().map(Edns::max_payload),
            Some(MAX_UDP_PAYLOAD)
        );
        assert!(
            decoded.answers.len() > 40,
            "more than 512 bytes' worth: {}",
            decoded.answers.len()
        );
    }

    #[test]
    fn packets_that_are_no_queries_get_formerr_or_nothing() {
        assert!(matches!(
            read_request(&[1, 2, 3], Transport::Udp),
            Err(Rejection::Silence)
        ));
        let mut response = query_packet("a.example.", None);
        response[2] |= 0x80;
        assert!(matches!(
            read_request(&response, Transport::Udp),
            Err(Rejection::Silence)
        ));

        let mut truncated = query_packet("a.example.", None);
        truncated.truncate(16);
        let Err(Rejection::Error(error)) = read_request(&truncated, Transport::Udp) else {
            panic!("a readable header gets an answer");
        };
        assert_eq!(error.rcode(), ResponseCode::FormErr);
        let mut out = Vec::new();
        write_error(&error, &mut out);
        let decoded = Message::from_vec(&out).unwrap();
        assert_eq!(decoded.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(
            decoded.metadata.id,
            u16::from_be_bytes([truncated[0], truncated[1]])
        );

        let mut notify = query_packet("a.example.", None);
        notify[2] = (notify[2] & 0x87) | (4 << 3);
        let Err(Rejection::Error(error)) = read_request(&notify, Transport::Udp) else {
            panic!("an unknown opcode gets an answer");
        };
        assert_eq!(error.rcode(), ResponseCode::NotImp);
    }
}
