//! The cluster zone as queries read it: one lookup per question, never waiting for an update.
//!
//! Every name the zone holds maps, lower-cased, to what answers it ([`Owner`]): a namespace, a
//! service, one of its named ports or one of its endpoints. Every address with a reverse name
//! maps to its PTR targets. The rest of the zone follows fixed rules: the apex (SOA, NS),
//! `dns-version` (the schema's TXT record), and pod names `a-b-c-d.<ns>.pod.<zone>`, answered
//! as CoreDNS's `pods insecure` does (any address, in a namespace that exists). A name that
//! is none of these does not exist (NXDOMAIN); a reverse name of an address the cluster does
//! not hold is not the zone's to answer (CoreDNS's `fallthrough in-addr.arpa ip6.arpa`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use hickory_proto::rr::rdata::{NS, PTR, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::records::{NameRole, ServiceRecords};
use crate::answer::{Answer, Authority, Lookup, Question, address_record};
use crate::names::{fqdn, reverse_address, undashed};
use crate::sharded::ShardedMap;

/// The version of the Kubernetes DNS schema served, as `dns-version.<zone>` states it.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The TTL of the `dns-version` record (CoreDNS's).
const SCHEMA_VERSION_TTL: u32 = 28800;

/// How many shards the name and address maps have: enough that a change copies a few hundred
/// names at 100,000 services, few enough to cost nothing in a small cluster.
const SHARDS: usize = 1024;

/// What a name of the zone stands for.
#[derive(Debug, Clone)]
pub enum Owner {
    /// `<ns>.svc` and `<ns>.pod`: a namespace, which exists with no records of its own.
    Namespace,
    /// A name of a service.
    Service(Arc<ServiceRecords>, NameRole),
}

/// The cluster zone, shared by the queries that read it and the updater that changes it.
pub struct ClusterZone {
    /// The cluster domain, lower-cased, without the final dot (`cluster.local`).
    domain: Box<str>,
    authority: Authority,
    reverse_v4: Authority,
    reverse_v6: Authority,
    ttl: u32,
    names: ShardedMap<Arc<str>, Owner>,
    addresses: ShardedMap<IpAddr, Arc<[Name]>>,
    /// The SOA serial: when the zone last changed (Unix seconds).
    serial: AtomicU32,
}

impl ClusterZone {
    /// An empty zone for `domain` (lower-cased, without the final dot) whose records have TTL
    /// `ttl`. `None` when `domain` is no domain name.
    pub fn new(domain: &str, ttl: u32) -> Option<Self> {
        let apex = fqdn(domain)?;
        let reverse = |zone: &str| fqdn(zone).map(|zone| Authority::new(zone, &apex, ttl));
        Some(ClusterZone {
            domain: domain.into(),
            reverse_v4: reverse("in-addr.arpa")?,
            reverse_v6: reverse("ip6.arpa")?,
            authority: Authority::new(apex.clone(), &apex, ttl),
            ttl,
            names: ShardedMap::new(SHARDS),
            addresses: ShardedMap::new(SHARDS),
            serial: AtomicU32::new(0),
        })
    }

    /// The cluster domain (`cluster.local`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The answer to `question`, when the zone is the one to answer it: a name in the cluster
    /// domain, or the reverse name of an address the cluster holds.
    pub fn answer(&self, question: &Question) -> Option<Answer> {
        let serial = self.serial.load(Ordering::Relaxed);
        if let Some(relative) = question.lower.relative_to(&self.domain) {
            let lookup = self.lookup(relative, question);
            return Some(self.authority.answer(question, lookup, serial));
        }
        let address = reverse_address(question.lower.as_str())?;
        let ptrs = self.addresses.with(&address, |targets| {
            targets
                .iter()
                .map(|target| {
                    Record::from_rdata(question.name.clone(), self.ttl, RData::PTR(PTR(target.clone())))
                })
                .collect::<Vec<_>>()
        })?;
        let authority = if address.is_ipv4() {
            &self.reverse_v4
        } else {
            &self.reverse_v6
        };
        let lookup = if question.qtype == RecordType::PTR {
            Lookup::found(ptrs)
        } else {
            Lookup::NoData
        };
        Some(authority.answer(question, lookup, serial))
    }

    fn lookup(&self, relative: &str, question: &Question) -> Lookup {
        match relative {
            "" => match question.qtype {
                RecordType::SOA => {
                    Lookup::found(vec![self.authority.soa(self.serial.load(Ordering::Relaxed))])
                }
                RecordType::NS => {
                    let ns = NS(self.authority.server().clone());
                    Lookup::found(vec![Record::from_rdata(
                        question.name.clone(),
                        self.ttl,
                        RData::NS(ns),
                    )])
                }
                _ => Lookup::NoData,
            },
            "dns-version" if question.qtype == RecordType::TXT => {
                let txt = TXT::new(vec![SCHEMA_VERSION.to_owned()]);
                Lookup::found(vec![Record::from_rdata(
                    question.name.clone(),
                    SCHEMA_VERSION_TTL,
                    RData::TXT(txt),
                )])
            }
            // Names that exist without records: the schema's version, the two subtrees, and
            // the zone's name server (whose address a cluster knows as the DNS service's).
            "dns-version" | "svc" | "pod" | "dns" | "ns.dns" => Lookup::NoData,
            _ => {
                let found = self.names.with(relative, |owner| match owner {
                    Owner::Namespace => Lookup::NoData,
                    Owner::Service(records, role) => records.lookup(*role, question, self.ttl),
                });
                match found {
                    Some(lookup) => lookup,
                    None if relative.ends_with(".pod") => self.lookup_pod(relative, question),
                    None => Lookup::NoDomain,
                }
            }
        }
    }

    /// `<a-b-c-d>.<ns>.pod`: the address the first label spells, if the namespace exists.
    fn lookup_pod(&self, relative: &str, question: &Question) -> Lookup {
        let Some((label, namespace)) = relative.split_once('.') else {
            return Lookup::NoDomain;
        };
        // `namespace` is `<ns>.pod`, the namespace's own name in the zone.
        let namespace_exists = self
            .names
            .with(namespace, |owner| matches!(owner, Owner::Namespace));
        let Some(address) = undashed(label).filter(|_| namespace_exists == Some(true)) else {
            return Lookup::NoDomain;
        };
        Lookup::found(
            address_record(&question.name, question.qtype, address, self.ttl)
                .into_iter()
                .collect(),
        )
    }

    /// Applies changes to the names and the addresses, and moves the serial to `serial`.
    pub(super) fn apply(
        &self,
        names: Vec<(Arc<str>, Option<Owner>)>,
        addresses: Vec<(IpAddr, Option<Arc<[Name]>>)>,
        serial: u32,
    ) {
        self.names.apply(names);
        self.addresses.apply(addresses);
        self.serial.store(serial, Ordering::Relaxed);
    }

    /// How many names the zone holds (services, their ports and endpoints, namespaces).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }
}
