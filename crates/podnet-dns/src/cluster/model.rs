//! What the DNS server keeps of Services and EndpointSlices: only what names and records need,
//! in a compact form converted from the API objects as they arrive (a large cluster's 100,000
//! services must fit; whole objects would not).
//!
//! A Service is one of three kinds for DNS: a ClusterIP service resolves to its virtual
//! addresses; a headless one (`clusterIP: None`) to the addresses of its *ready* endpoints,
//! which the EndpointSlices labelled with its name list; an ExternalName one is an alias of
//! an outside name.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::names::{is_label, normalize};

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A port's transport protocol, as SRV names spell it (`_tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// `TCP`, `UDP`, `SCTP` (TCP when unset, as the API defaults it).
    fn parse(name: Option<&str>) -> Option<Self> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The protocol's label in SRV names, without the underscore.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of a service or of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// Its name, lower-cased; empty for an unnamed port (which has no SRV name of its own).
    pub name: Box<str>,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its number.
    pub number: u16,
}

impl Port {
    fn new(name: Option<&str>, protocol: Option<&str>, number: i32) -> Option<Self> {
        let name = name.unwrap_or_default().to_ascii_lowercase();
        Some(Port {
            // A name that cannot be a DNS label cannot name an SRV record: the port stays
            // unnamed for DNS.
            name: if is_label(&name) { name.into() } else { "".into() },
            protocol: Protocol::parse(protocol)?,
            number: u16::try_from(number).ok()?,
        })
    }
}

/// A service as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceInfo {
    /// Virtual addresses (two when dual-stack) in front of the endpoints.
    ClusterIp {
        /// The addresses (none while the API server has not allocated them).
        addresses: Box<[IpAddr]>,
        /// The service's ports.
        ports: Box<[Port]>,
    },
    /// No virtual address: the service's names resolve to its ready endpoints.
    Headless,
    /// An alias of an outside name (lower-cased, without the final dot).
    ExternalName(Box<str>),
}

/// The DNS view of `service`; `None` for a service DNS cannot name (an ExternalName that is
/// no domain name: CoreDNS ignores those too).
pub fn service_info(service: &Service) -> Option<ServiceInfo> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        let target = normalize(spec.external_name.as_deref()?)?;
        // An address is no alias target (CoreDNS answers nothing for it either).
        if target.parse::<IpAddr>().is_ok() {
            return None;
        }
        return Some(ServiceInfo::ExternalName(target.into()));
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return Some(ServiceInfo::Headless);
    }
    let texts: Vec<&String> = match &spec.cluster_ips {
        Some(list) if !list.is_empty() => list.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| Port::new(port.name.as_deref(), port.protocol.as_deref(), port.port))
        .collect();
    Some(ServiceInfo::ClusterIp {
        addresses: texts.into_iter().filter_map(|text| text.parse().ok()).collect(),
        ports,
    })
}

/// The ready endpoints of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// The service it belongs to (in the slice's namespace).
    pub service: Box<str>,
    /// The ports its endpoints serve.
    pub ports: Box<[Port]>,
    /// Its ready endpoints (the others have no records).
    pub endpoints: Box<[EndpointInfo]>,
}

/// One ready endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Its addresses.
    pub addresses: Box<[IpAddr]>,
    /// Its `hostname`, when it has a valid one.
    pub hostname: Option<Box<str>>,
}

/// The DNS view of `slice`; `None` for slices DNS cannot use (FQDN slices, slices of no
/// service).
pub fn slice_info(slice: &EndpointSlice) -> Option<SliceInfo> {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return None;
    }
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|port| Port::new(port.name.as_deref(), port.protocol.as_deref(), port.port?))
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        // Unset readiness means ready (the API's default).
        .filter(|endpoint| {
            endpoint
                .conditions
                .as_ref()
                .and_then(|conditions| conditions.ready)
                != Some(false)
        })
        .map(|endpoint| EndpointInfo {
            addresses: endpoint
                .addresses
                .iter()
                .filter_map(|address| address.parse().ok())
                .collect(),
            hostname: endpoint
                .hostname
                .as_deref()
                .filter(|hostname| is_label(hostname))
                .map(Into::into),
        })
        .filter(|endpoint| !endpoint.addresses.is_empty())
        .collect();
    Some(SliceInfo {
        service: service.as_str().into(),
        ports,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    #[test]
    fn services_are_clusterip_headless_or_aliases() {
        let service = |spec: ServiceSpec| Service {
            spec: Some(spec),
            ..Service::default()
        };
        let cluster_ip = service(ServiceSpec {
            cluster_ips: Some(vec!["10.96.0.10".into(), "fd00::a".into()]),
            ports: Some(vec![ServicePort {
                name: Some("DNS".into()),
                protocol: Some("UDP".into()),
                port: 53,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        });
        assert_eq!(
            service_info(&cluster_ip),
            Some(ServiceInfo::ClusterIp {
                addresses: ["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()].into(),
                ports: [Port {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    number: 53
                }]
                .into(),
            })
        );
        let headless = service(ServiceSpec {
            cluster_ip: Some("None".into()),
            ..ServiceSpec::default()
        });
        assert_eq!(service_info(&headless), Some(ServiceInfo::Headless));
        let alias = |target: &str| {
            service(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some(target.into()),
                ..ServiceSpec::default()
            })
        };
        assert_eq!(
            service_info(&alias("WWW.Example.com.")),
            Some(ServiceInfo::ExternalName("www.example.com".into()))
        );
        assert_eq!(service_info(&alias("192.0.2.10")), None);
        assert_eq!(service_info(&alias("not a name")), None);
    }

    #[test]
    fn slices_keep_their_ready_endpoints_only() {
        let endpoint = |address: &str, ready: Option<bool>, hostname: Option<&str>| Endpoint {
            addresses: vec![address.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..EndpointConditions::default()
            }),
            hostname: hostname.map(Into::into),
            ..Endpoint::default()
        };
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            metadata: ObjectMeta {
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), "db".to_owned())].into()),
                ..ObjectMeta::default()
            },
            endpoints: vec![
                endpoint("10.244.1.5", Some(true), Some("db-0")),
                endpoint("10.244.1.6", Some(false), Some("db-1")),
                endpoint("10.244.1.7", None, Some("Not_A_Label")),
            ],
            ports: Some(vec![EndpointPort {
                name: Some("pg".into()),
                port: Some(5432),
                ..EndpointPort::default()
            }]),
        };
        let info = slice_info(&slice).unwrap();
        assert_eq!(&*info.service, "db");
        assert_eq!(info.endpoints.len(), 2, "{info:?}");
        assert_eq!(info.endpoints[0].hostname.as_deref(), Some("db-0"));
        assert_eq!(info.endpoints[1].hostname, None, "an invalid hostname is dropped");
        assert_eq!(info.ports[0].protocol, Protocol::Tcp);
        let fqdn = EndpointSlice {
            address_type: "FQDN".into(),
            ..slice
        };
        assert_eq!(slice_info(&fqdn), None);
    }
}
