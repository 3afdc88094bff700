//! Questions and answers before they meet the wire.
//!
//! A query asks one question: a name, a type (A, AAAA, SRV...) and a class (always IN here).
//! An answer has a response code and three sections of records: answers, authority (the
//! zone's SOA when the name or the type does not exist, which tells resolvers how long to
//! remember that, RFC 2308) and additional records (addresses of SRV targets). NXDOMAIN says
//! the name does not exist at all; NOERROR with no answer ("NODATA") says it exists with other
//! types only. An answer can also be an alias (CNAME) whose target the server must resolve
//! further before replying, because stub resolvers do not.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::names::LowerName;

/// The SOA's refresh, retry and expire times: CoreDNS's (they only matter to secondaries,
/// which a cluster zone has none of).
const SOA_TIMERS: (i32, i32, i32) = (7200, 1800, 86400);

/// The longest TTL of a zone's SOA record (CoreDNS's: the zone TTL, at most 300 s).
const MAX_SOA_TTL: u32 = 300;

/// One question: what name, which type.
#[derive(Debug, Clone)]
pub struct Question {
    /// The name as asked (its case is echoed back).
    pub name: Name,
    /// The name as looked up.
    pub lower: LowerName,
    /// The type asked for.
    pub qtype: RecordType,
}

impl Question {
    /// A question for `name` of type `qtype`.
    pub fn new(name: Name, qtype: RecordType) -> Self {
        let lower = LowerName::of(&name);
        Question { name, lower, qtype }
    }
}

/// An answer, before it is encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The response code.
    pub rcode: ResponseCode,
    /// Whether the server holds the data itself (the AA bit) rather than repeating another
    /// server's answer.
    pub authoritative: bool,
    /// Records that answer the question.
    pub answers: Vec<Record>,
    /// The zone's SOA, in negative answers.
    pub authorities: Vec<Record>,
    /// Records that help use the answers (addresses of SRV targets).
    pub additionals: Vec<Record>,
    /// An alias's target the server still has to resolve, for the same type: the answers end
    /// with the CNAME pointing at it.
    pub alias: Option<Name>,
}

impl Answer {
    /// An authoritative NOERROR answer with `answers`.
    pub fn records(answers: Vec<Record>) -> Self {
        Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authorities: Vec::new(),
            additionals: Vec::new(),
            alias: None,
        }
    }

    /// A bare answer with `rcode` and nothing else (errors: FORMERR, SERVFAIL, REFUSED...).
    pub fn error(rcode: ResponseCode) -> Self {
        Answer {
            rcode,
            authoritative: false,
            ..Answer::records(Vec::new())
        }
    }

    /// With these additional records.
    pub fn with_additionals(mut self, additionals: Vec<Record>) -> Self {
        self.additionals = additionals;
        self
    }
}

/// What a zone holds for a name, before it becomes an [`Answer`].
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Records of the type asked for, and additional records that help use them.
    Records {
        /// The records (owned by the question's name).
        answers: Vec<Record>,
        /// Addresses of the names they point at.
        additionals: Vec<Record>,
    },
    /// The name exists, with other types only.
    NoData,
    /// The name does not exist.
    NoDomain,
    /// The name is an alias (CNAME) of this target.
    Alias(Name),
}

impl Lookup {
    /// `answers` with no additional records, or NODATA when there are none.
    pub fn found(answers: Vec<Record>) -> Self {
        if answers.is_empty() {
            return Lookup::NoData;
        }
        Lookup::Records {
            answers,
            additionals: Vec::new(),
        }
    }
}

/// A zone's identity, as its SOA record states it, and the negative answers that carry it.
#[derive(Debug, Clone)]
pub struct Authority {
    apex: Name,
    /// The primary server's name (`ns.dns.<zone>`, as CoreDNS names it).
    server: Name,
    /// The zone administrator's mailbox as a name (`hostmaster.<zone>`).
    mailbox: Name,
    /// The zone's TTL: the SOA's minimum, which resolvers use for negative answers.
    ttl: u32,
}

impl Authority {
    /// The authority of the zone at `apex` with TTL `ttl`, named after the zone `named_after`
    /// (`ns.dns.<named_after>`, `hostmaster.<named_after>`).
    pub fn new(apex: Name, named_after: &Name, ttl: u32) -> Self {
        let under = |label: &str| {
            Name::from_ascii(label)
                .and_then(|prefix| prefix.append_domain(named_after))
                .unwrap_or_else(|_| named_after.clone())
        };
        Authority {
            server: under("ns.dns"),
            mailbox: under("hostmaster"),
            apex,
            ttl,
        }
    }

    /// The zone's primary server's name.
    pub fn server(&self) -> &Name {
        &self.server
    }

    /// The zone's TTL.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The zone's SOA record, with `serial`.
    pub fn soa(&self, serial: u32) -> Record {
        let (refresh, retry, expire) = SOA_TIMERS;
        let soa = SOA::new(
            self.server.clone(),
            self.mailbox.clone(),
            serial,
            refresh,
            retry,
            expire,
            self.ttl,
        );
        Record::from_rdata(self.apex.clone(), self.ttl.min(MAX_SOA_TTL), RData::SOA(soa))
    }

    /// The name exists, but not with the type asked for.
    pub fn no_data(&self, serial: u32) -> Answer {
        Answer {
            authorities: vec![self.soa(serial)],
            ..Answer::records(Vec::new())
        }
    }

    /// The name does not exist.
    pub fn no_domain(&self, serial: u32) -> Answer {
        Answer {
            rcode: ResponseCode::NXDomain,
            ..self.no_data(serial)
        }
    }

    /// The authoritative answer to `question` from what the zone holds for its name: an alias
    /// is answered with its CNAME (and the target left to resolve, unless the CNAME itself was
    /// asked for).
    pub fn answer(&self, question: &Question, lookup: Lookup, serial: u32) -> Answer {
        match lookup {
            Lookup::Records { answers, additionals } => {
                Answer::records(answers).with_additionals(additionals)
            }
            Lookup::NoData => self.no_data(serial),
            Lookup::NoDomain => self.no_domain(serial),
            Lookup::Alias(target) => {
                let cname = Record::from_rdata(
                    question.name.clone(),
                    self.ttl,
                    RData::CNAME(CNAME(target.clone())),
                );
                Answer {
                    alias: (question.qtype != RecordType::CNAME).then_some(target),
                    ..Answer::records(vec![cname])
                }
            }
        }
    }
}

/// The A or AAAA record of `address` owned by `name`, when `qtype` asks for its family.
pub fn address_record(name: &Name, qtype: RecordType, address: IpAddr, ttl: u32) -> Option<Record> {
    let data = match (qtype, address) {
        (RecordType::A, IpAddr::V4(v4)) => RData::A(A(v4)),
        (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(v6)),
        _ => return None,
    };
    Some(Record::from_rdata(name.clone(), ttl, data))
}

/// The A and AAAA records of `addresses` owned by `name` (for additional sections).
pub fn address_records(name: &Name, addresses: &[IpAddr], ttl: u32) -> impl Iterator<Item = Record> {
    addresses.iter().filter_map(move |address| {
        let qtype = if address.is_ipv4() {
            RecordType::A
        } else {
            RecordType::AAAA
        };
        address_record(name, qtype, *address, ttl)
    })
}
