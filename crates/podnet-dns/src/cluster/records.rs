//! A service's records, as the Kubernetes DNS specification (schema 1.1.0) lays them out.
//!
//! Under `<service>.<ns>.svc.<zone>`:
//! - a ClusterIP service has A/AAAA records of its virtual addresses, and an SRV record
//!   `_<port>._<proto>.<service>...` per named port pointing at the service's name;
//! - a headless service has A/AAAA records of its ready endpoints' addresses (none ready: the
//!   name does not exist), a name per endpoint (`<hostname>.<service>...`: the endpoint's
//!   `hostname`, else its address with dashes, as CoreDNS names it) and an SRV record per ready
//!   endpoint and named port pointing at the endpoint's name;
//! - an ExternalName service is a CNAME to its external name.
//!
//! The records are built whole whenever the service or one of its EndpointSlices changes and
//! shared, immutable, by every name the service owns.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::rdata::SRV;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::model::{Port, Protocol, ServiceInfo, SliceInfo};
use crate::answer::{Lookup, Question, address_record, address_records};
use crate::names::{dashed, fqdn, is_label};

/// Everything a service's names answer.
#[derive(Debug, PartialEq)]
pub struct ServiceRecords {
    /// `<service>.<ns>.svc.<zone>.`, the target of its SRV records and PTRs.
    pub name: Name,
    /// What its name resolves to.
    pub kind: RecordsKind,
    /// The named ports, each with an SRV name of its own, in the order [`NameRole::Port`]
    /// indexes them.
    pub named_ports: Box<[(Box<str>, Protocol)]>,
}

/// What a service's name resolves to.
#[derive(Debug, PartialEq)]
pub enum RecordsKind {
    /// Its virtual addresses.
    ClusterIp {
        /// The addresses.
        addresses: Box<[IpAddr]>,
        /// The service's ports.
        ports: Box<[Port]>,
    },
    /// Its ready endpoints.
    Headless {
        /// The endpoints, by name.
        hosts: Box<[Host]>,
        /// Every ready endpoint's address, once.
        addresses: Box<[IpAddr]>,
    },
    /// An alias.
    ExternalName {
        /// The external name.
        target: Name,
    },
}

/// A ready endpoint of a headless service, under its own name.
#[derive(Debug, PartialEq)]
pub struct Host {
    /// `<hostname>.<service>.<ns>.svc.<zone>.`
    pub name: Name,
    /// Its first label.
    pub label: Box<str>,
    /// Its addresses (more than one when several endpoints share a hostname, or dual-stack).
    pub addresses: Box<[IpAddr]>,
    /// The ports it serves (its EndpointSlices' ports).
    pub ports: Box<[Port]>,
}

/// Which part of a service a name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRole {
    /// The service's own name.
    Service,
    /// `_<port>._<proto>.<service>...`: the named port at this index of
    /// [`ServiceRecords::named_ports`].
    Port(u16),
    /// `<hostname>.<service>...`: the host at this index of the headless service's hosts.
    Host(u32),
}

impl ServiceRecords {
    /// The records of service `service` of namespace `namespace` in the cluster zone `zone`,
    /// from its compact form and its EndpointSlices. `None` when the names cannot be written
    /// (a service or namespace name that is no DNS label).
    pub fn build<'a>(
        zone: &str,
        namespace: &str,
        service: &str,
        info: &ServiceInfo,
        slices: impl Iterator<Item = &'a SliceInfo>,
    ) -> Option<Self> {
        if !is_label(namespace) || !is_label(service) {
            return None;
        }
        let base = format!("{service}.{namespace}.svc.{zone}");
        let name = fqdn(&base)?;
        let kind = match info {
            ServiceInfo::ClusterIp { addresses, ports } => RecordsKind::ClusterIp {
                addresses: addresses.clone(),
                ports: ports.clone(),
            },
            ServiceInfo::ExternalName(target) => RecordsKind::ExternalName {
                target: fqdn(target)?,
            },
            ServiceInfo::Headless => headless(&base, slices),
        };
        let mut named_ports: Vec<(Box<str>, Protocol)> = match &kind {
            RecordsKind::ClusterIp { ports, .. } => named(ports.iter()),
            RecordsKind::Headless { hosts, .. } => named(hosts.iter().flat_map(|host| host.ports.iter())),
            RecordsKind::ExternalName { .. } => Vec::new(),
        };
        named_ports.sort();
        named_ports.dedup();
        Some(ServiceRecords {
            name,
            kind,
            named_ports: named_ports.into(),
        })
    }

    /// The names the service owns, relative to the zone (`web.default.svc`), with what each
    /// stands for.
    pub fn names(&self, base: &str) -> Vec<(String, NameRole)> {
        let mut names = vec![(base.to_owned(), NameRole::Service)];
        for (index, (port, protocol)) in self.named_ports.iter().enumerate() {
            let Ok(index) = u16::try_from(index) else { break };
            names.push((
                format!("_{port}._{}.{base}", protocol.label()),
                NameRole::Port(index),
            ));
        }
        if let RecordsKind::Headless { hosts, .. } = &self.kind {
            for (index, host) in hosts.iter().enumerate() {
                let Ok(index) = u32::try_from(index) else { break };
                names.push((format!("{}.{base}", host.label), NameRole::Host(index)));
            }
        }
        names
    }

    /// The addresses whose reverse names point at the service: its virtual addresses (to the
    /// service's name; `true`) and its ready endpoints' (to their own names; `false`).
    pub fn reverse(&self) -> Vec<(IpAddr, &Name, bool)> {
        match &self.kind {
            RecordsKind::ClusterIp { addresses, .. } => addresses
                .iter()
                .map(|address| (*address, &self.name, true))
                .collect(),
            RecordsKind::Headless { hosts, .. } => hosts
                .iter()
                .flat_map(|host| {
                    host.addresses
                        .iter()
                        .map(move |address| (*address, &host.name, false))
                })
                .collect(),
            RecordsKind::ExternalName { .. } => Vec::new(),
        }
    }

    /// What the name standing for `role` holds for `question`.
    pub fn lookup(&self, role: NameRole, question: &Question, ttl: u32) -> Lookup {
        match role {
            NameRole::Service => self.lookup_service(question, ttl),
            NameRole::Port(index) => match self.named_ports.get(usize::from(index)) {
                Some((port, protocol)) if question.qtype == RecordType::SRV => {
                    self.srv(question, ttl, |candidate| {
                        *candidate.name == **port && candidate.protocol == *protocol
                    })
                }
                Some(_) => Lookup::NoData,
                None => Lookup::NoDomain,
            },
            NameRole::Host(index) => {
                let RecordsKind::Headless { hosts, .. } = &self.kind else {
                    return Lookup::NoDomain;
                };
                let Some(host) = usize::try_from(index).ok().and_then(|index| hosts.get(index)) else {
                    return Lookup::NoDomain;
                };
                Lookup::found(addresses(question, &host.addresses, ttl))
            }
        }
    }

    fn lookup_service(&self, question: &Question, ttl: u32) -> Lookup {
        match &self.kind {
            RecordsKind::ExternalName { target } => Lookup::Alias(target.clone()),
            // The specification: a headless service without ready endpoints does not exist.
            RecordsKind::Headless { hosts, .. } if hosts.is_empty() => Lookup::NoDomain,
            // SRV of the service's own name: every port, as CoreDNS answers it.
            _ if question.qtype == RecordType::SRV => self.srv(question, ttl, |_| true),
            RecordsKind::ClusterIp { addresses, .. } | RecordsKind::Headless { addresses, .. } => {
                Lookup::found(self::addresses(question, addresses, ttl))
            }
        }
    }

    /// SRV records of the ports `wanted` picks, weighted evenly (priority 0, weight 100/n, as
    /// CoreDNS), with the targets' addresses as additional records.
    fn srv(&self, question: &Question, ttl: u32, wanted: impl Fn(&Port) -> bool) -> Lookup {
        let mut targets: Vec<(&Name, u16, &[IpAddr])> = Vec::new();
        match &self.kind {
            RecordsKind::ClusterIp { addresses, ports } => {
                for port in ports.iter().filter(|port| wanted(port)) {
                    targets.push((&self.name, port.number, addresses));
                }
            }
            RecordsKind::Headless { hosts, .. } => {
                for host in hosts.iter() {
                    for port in host.ports.iter().filter(|port| wanted(port)) {
                        targets.push((&host.name, port.number, &host.addresses));
                    }
                }
            }
            RecordsKind::ExternalName { .. } => {}
        }
        if targets.is_empty() {
            return Lookup::NoData;
        }
        let weight = u16::try_from(100 / targets.len()).unwrap_or(1).max(1);
        let answers = targets
            .iter()
            .map(|(target, port, _)| {
                let srv = SRV::new(0, weight, *port, (*target).clone());
                Record::from_rdata(question.name.clone(), ttl, RData::SRV(srv))
            })
            .collect();
        // A target's ports are consecutive: its addresses are added once.
        let mut additionals = Vec::new();
        let mut previous: Option<&Name> = None;
        for (target, _, addresses) in &targets {
            if !previous.is_some_and(|previous| std::ptr::eq(previous, *target)) {
                additionals.extend(address_records(target, addresses, ttl));
            }
            previous = Some(target);
        }
        Lookup::Records { answers, additionals }
    }
}

/// The A or AAAA records (as `question` asks) of `addresses`, owned by the question's name.
fn addresses(question: &Question, addresses: &[IpAddr], ttl: u32) -> Vec<Record> {
    addresses
        .iter()
        .filter_map(|address| address_record(&question.name, question.qtype, *address, ttl))
        .collect()
}

fn named<'a>(ports: impl Iterator<Item = &'a Port>) -> Vec<(Box<str>, Protocol)> {
    ports
        .filter(|port| !port.name.is_empty())
        .map(|port| (port.name.clone(), port.protocol))
        .collect()
}

/// A headless service's ready endpoints, grouped by name (`base` is the service's name).
fn headless<'a>(base: &str, slices: impl Iterator<Item = &'a SliceInfo>) -> RecordsKind {
    let mut hosts: BTreeMap<String, (Vec<IpAddr>, Vec<Port>)> = BTreeMap::new();
    let mut all: Vec<IpAddr> = Vec::new();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    for slice in slices {
        for endpoint in slice.endpoints.iter() {
            for address in endpoint.addresses.iter() {
                let label = match &endpoint.hostname {
                    Some(hostname) => hostname.to_string(),
                    None => dashed(*address),
                };
                let (addresses, ports) = hosts.entry(label).or_default();
                if !addresses.contains(address) {
                    addresses.push(*address);
                }
                ports.extend(slice.ports.iter().cloned());
                if seen.insert(*address) {
                    all.push(*address);
                }
            }
        }
    }
    let hosts = hosts
        .into_iter()
        .filter_map(|(label, (addresses, mut ports))| {
            ports.sort();
            ports.dedup();
            Some(Host {
                name: fqdn(&format!("{label}.{base}"))?,
                label: label.into(),
                addresses: addresses.into(),
                ports: ports.into(),
            })
        })
        .collect();
    RecordsKind::Headless {
        hosts,
        addresses: all.into(),
    }
}
