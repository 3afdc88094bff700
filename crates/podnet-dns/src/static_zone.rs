//! Static records (`--static-record www.example.com=192.0.2.10`): names given on the command
//! line, answered authoritatively.
//!
//! Each name makes the server authoritative for its parent zone (`example.com`): the name
//! answers A or AAAA with its addresses (NODATA for other types), the zone's apex exists (its
//! SOA), and every other name under the zone does not (NXDOMAIN with the SOA). A name of one
//! label is its own zone. A lab uses this as the outside world's DNS, so that forwarding and
//! caching are tested without anything leaving the host.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::rr::RecordType;

use crate::answer::{Answer, Authority, Lookup, Question, address_record};
use crate::cli::StaticRecord;
use crate::names::fqdn;

/// The SOA serial of static zones, which never change.
const SERIAL: u32 = 1;

/// The static records and the zones they make.
#[derive(Debug, Default)]
pub struct StaticZones {
    /// Addresses by name (lower-cased, without the final dot).
    records: HashMap<String, Vec<IpAddr>>,
    /// The zones by apex (lower-cased, without the final dot).
    zones: HashMap<String, Authority>,
}

impl StaticZones {
    /// The zones of `records`, whose answers have TTL `ttl`.
    pub fn new(records: &[StaticRecord], ttl: u32) -> Self {
        let mut zones = StaticZones::default();
        for record in records {
            let addresses = zones.records.entry(record.name.clone()).or_default();
            if !addresses.contains(&record.address) {
                addresses.push(record.address);
            }
            let apex = match record.name.split_once('.') {
                Some((_, parent)) => parent,
                None => record.name.as_str(),
            };
            if let Some(name) = fqdn(apex) {
                zones
                    .zones
                    .entry(apex.to_owned())
                    .or_insert_with(|| Authority::new(name.clone(), &name, ttl));
            }
        }
        zones
    }

    /// The answer to `question` when it is in a static zone.
    pub fn answer(&self, question: &Question) -> Option<Answer> {
        let (apex, authority) = self.zone_of(question.lower.as_str())?;
        let lookup = match self.records.get(question.lower.as_str()) {
            Some(addresses) => Lookup::found(
                addresses
                    .iter()
                    .filter_map(|address| {
                        address_record(&question.name, question.qtype, *address, authority.ttl())
                    })
                    .collect(),
            ),
            None if question.lower.as_str() == apex && question.qtype == RecordType::SOA => {
                Lookup::found(vec![authority.soa(SERIAL)])
            }
            None if question.lower.as_str() == apex => Lookup::NoData,
            None => Lookup::NoDomain,
        };
        Some(authority.answer(question, lookup, SERIAL))
    }

    /// The innermost zone holding `name`.
    fn zone_of<'a>(&'a self, name: &'a str) -> Option<(&'a str, &'a Authority)> {
        let mut candidate = name;
        loop {
            if let Some(authority) = self.zones.get(candidate) {
                return Some((candidate, authority));
            }
            candidate = candidate.split_once('.')?.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{Name, RData};

    use super::*;

    fn question(name: &str, qtype: RecordType) -> Question {
        Question::new(Name::from_ascii(name).unwrap(), qtype)
    }

    #[test]
    fn a_static_name_makes_its_parent_zone_authoritative() {
        let records: Vec<StaticRecord> = ["www.example.com=192.0.2.10", "WWW.example.com.=2001:db8::10"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        let zones = StaticZones::new(&records, 30);

        let answer = zones
            .answer(&question("Www.Example.com.", RecordType::A))
            .unwrap();
        assert_eq!(answer.rcode, ResponseCode::NoError);
        assert!(answer.authoritative);
        assert_eq!(answer.answers.len(), 1);
        assert_eq!(
            answer.answers[0].name.to_string(),
            "Www.Example.com.",
            "the name as asked"
        );
        assert_eq!(
            answer.answers[0].data,
            RData::A("192.0.2.10".parse::<std::net::Ipv4Addr>().unwrap().into())
        );
        assert_eq!(answer.answers[0].ttl, 30);

        let aaaa = zones
            .answer(&question("www.example.com.", RecordType::AAAA))
            .unwrap();
        assert_eq!(aaaa.answers.len(), 1);

        let mx = zones
            .answer(&question("www.example.com.", RecordType::MX))
            .unwrap();
        assert_eq!((mx.rcode, mx.answers.len()), (ResponseCode::NoError, 0), "NODATA");
        assert_eq!(mx.authorities[0].record_type(), RecordType::SOA);

        let other = zones
            .answer(&question("mail.example.com.", RecordType::A))
            .unwrap();
        assert_eq!(other.rcode, ResponseCode::NXDomain);
        assert_eq!(other.authorities[0].name.to_string(), "example.com.");

        let apex = zones.answer(&question("example.com.", RecordType::SOA)).unwrap();
        assert_eq!(apex.answers[0].record_type(), RecordType::SOA);

        assert!(zones.answer(&question("example.org.", RecordType::A)).is_none());
        assert!(zones.answer(&question("com.", RecordType::A)).is_none());
    }
}
