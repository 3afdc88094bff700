//! What the proxy keeps of Services and EndpointSlices: only what the data path needs, in a
//! compact form (100k services must fit), converted from the API objects as they arrive.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use podnet_model::{ObjectKey, protocol_number};

/// IP protocol numbers.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// SCTP.
pub const SCTP: u8 = 132;

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A service as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The ClusterIP; none for headless and ExternalName services, which get no rules.
    pub cluster_ip: Option<Ipv4Addr>,
    /// The ports.
    pub ports: Vec<PortInfo>,
    /// `spec.externalIPs` and the load balancer's addresses: traffic to them is external.
    pub external_ips: Vec<Ipv4Addr>,
    /// The load balancer's addresses alone (announced on the segment).
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP`, with its timeout in seconds.
    pub affinity: Option<u32>,
    /// Where kube-proxy would answer load-balancer health checks for this service.
    pub health_check_node_port: Option<u16>,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Its name (empty for the single unnamed port).
    pub name: Box<str>,
    /// Its IP protocol number.
    pub protocol: u8,
    /// The service port.
    pub port: u16,
    /// Its node port, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
}

/// The endpoints of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// The service it belongs to.
    pub service: ObjectKey,
    /// Its ports: name, protocol, port on the endpoints.
    pub ports: Vec<(Box<str>, u8, u16)>,
    /// Its endpoints.
    pub endpoints: Vec<EndpointInfo>,
}

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Its address.
    pub address: Ipv4Addr,
    /// Ready for new connections.
    pub ready: bool,
    /// Still able to serve (may be terminating).
    pub serving: bool,
    /// Being deleted.
    pub terminating: bool,
    /// The node it runs on.
    pub node: Option<Box<str>>,
}

/// Labels that hand a service to another proxy, or declare it headless: kube-proxy leaves such
/// services alone (it watches with `!service.kubernetes.io/service-proxy-name,
/// !service.kubernetes.io/headless`), and so does this proxy.
const NOT_OURS: [&str; 2] = [
    "service.kubernetes.io/service-proxy-name",
    "service.kubernetes.io/headless",
];

/// Whether this proxy serves `service` (see [`NOT_OURS`]).
pub fn proxied(service: &Service) -> bool {
    service
        .metadata
        .labels
        .as_ref()
        .is_none_or(|labels| NOT_OURS.iter().all(|label| !labels.contains_key(*label)))
}

/// The proxy's view of `service` (an ExternalName or headless service has no ClusterIP, and
/// gets no rules).
pub fn service_info(service: &Service) -> ServiceInfo {
    let spec = service.spec.clone().unwrap_or_default();
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    let cluster_ip = match kind {
        "ExternalName" => None,
        _ => spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()),
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            Some(PortInfo {
                name: port.name.clone().unwrap_or_default().into(),
                protocol: protocol_number(port.protocol.as_deref())?,
                port: u16::try_from(port.port).ok()?,
                node_port: matches!(kind, "NodePort" | "LoadBalancer")
                    .then(|| port.node_port.and_then(|number| u16::try_from(number).ok()))
                    .flatten(),
            })
        })
        .collect();
    let load_balancer_ips: Vec<Ipv4Addr> = if kind == "LoadBalancer" {
        service
            .status
            .iter()
            .flat_map(|status| status.load_balancer.iter())
            .flat_map(|balancer| balancer.ingress.iter().flatten())
            .filter_map(|ingress| ingress.ip.as_deref()?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    external_ips.extend(&load_balancer_ips);
    external_ips.sort();
    external_ips.dedup();
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|config| config.client_ip.as_ref())
            .and_then(|client| client.timeout_seconds)
            .unwrap_or(10800)
            .clamp(1, 86400) as u32
    });
    ServiceInfo {
        cluster_ip,
        ports,
        external_ips,
        load_balancer_ips,
        external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        affinity,
        health_check_node_port: spec
            .health_check_node_port
            .and_then(|port| u16::try_from(port).ok()),
    }
}

/// The proxy's view of `slice`; `None` for slices it cannot use (not IPv4, no service).
pub fn slice_info(key: &ObjectKey, slice: &EndpointSlice) -> Option<SliceInfo> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            Some((
                port.name.clone().unwrap_or_default().into(),
                protocol_number(port.protocol.as_deref())?,
                u16::try_from(port.port?).ok()?,
            ))
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|endpoint| {
            let address = endpoint.addresses.first()?.parse().ok()?;
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // Unset conditions mean ready and serving, not terminating (the API's defaults).
            let ready = conditions.ready.unwrap_or(true);
            Some(EndpointInfo {
                address,
                ready,
                serving: conditions.serving.unwrap_or(ready),
                terminating: conditions.terminating.unwrap_or(false),
                node: endpoint.node_name.clone().map(Into::into),
            })
        })
        .collect();
    Some(SliceInfo {
        service: ObjectKey {
            namespace: key.namespace.clone(),
            name: service.clone(),
        },
        ports,
        endpoints,
    })
}

/// A port target of a service port: what a packet is DNATed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The endpoint's address.
    pub address: Ipv4Addr,
    /// The port on the endpoint.
    pub port: u16,
}

/// The endpoints of one service port, as kube-proxy categorises them for this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortEndpoints {
    /// For cluster-wide traffic: the ready endpoints, or when there are none, those still
    /// serving while terminating.
    pub cluster: Vec<Target>,
    /// For node-local traffic: the same, among this node's endpoints.
    pub local: Vec<Target>,
    /// Every address of this node's endpoints, whatever their state (they may reach
    /// themselves through the service: hairpin).
    pub here: Vec<Ipv4Addr>,
}

/// Categorises the endpoints `slices` give service port `port` for node `node`.
pub fn port_endpoints<'a>(
    port: &PortInfo,
    slices: impl Iterator<Item = &'a SliceInfo>,
    node: &str,
) -> PortEndpoints {
    let mut all: Vec<(Target, &EndpointInfo)> = Vec::new();
    for slice in slices {
        let Some((_, _, target_port)) = slice
            .ports
            .iter()
            .find(|(name, protocol, _)| *name == port.name && *protocol == port.protocol)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            all.push((
                Target {
                    address: endpoint.address,
                    port: *target_port,
                },
                endpoint,
            ));
        }
    }
    all.sort_by_key(|(target, _)| *target);
    all.dedup_by_key(|(target, _)| *target);
    let choose = |candidates: Vec<&(Target, &EndpointInfo)>| -> Vec<Target> {
        let ready: Vec<Target> = candidates
            .iter()
            .filter(|(_, endpoint)| endpoint.ready)
            .map(|(target, _)| *target)
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        candidates
            .iter()
            .filter(|(_, endpoint)| endpoint.serving && endpoint.terminating)
            .map(|(target, _)| *target)
            .collect()
    };
    let local: Vec<&(Target, &EndpointInfo)> = all
        .iter()
        .filter(|(_, endpoint)| endpoint.node.as_deref() == Some(node))
        .collect();
    let mut here: Vec<Ipv4Addr> = local.iter().map(|(target, _)| target.address).collect();
    here.dedup();
    PortEndpoints {
        cluster: choose(all.iter().collect()),
        local: choose(local),
        here,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(address: [u8; 4], ready: bool, serving: bool, terminating: bool, node: &str) -> EndpointInfo {
        EndpointInfo {
            address: address.into(),
            ready,
            serving,
            terminating,
            node: Some(node.into()),
        }
    }

    fn http() -> PortInfo {
        PortInfo {
            name: "http".into(),
            protocol: TCP,
            port: 80,
            node_port: None,
        }
    }

    fn slice(endpoints: Vec<EndpointInfo>) -> SliceInfo {
        SliceInfo {
            service: ObjectKey {
                namespace: "default".into(),
                name: "web".into(),
            },
            ports: vec![("http".into(), TCP, 8080)],
            endpoints,
        }
    }

    #[test]
    fn ready_endpoints_win_and_terminating_ones_serve_only_without_them() {
        let slices = [slice(vec![
            endpoint([10, 244, 0, 2], true, true, false, "n1"),
            endpoint([10, 244, 1, 2], false, true, true, "n2"),
        ])];
        let endpoints = port_endpoints(&http(), slices.iter(), "n2");
        assert_eq!(
            endpoints.cluster,
            [Target {
                address: [10, 244, 0, 2].into(),
                port: 8080
            }]
        );
        assert_eq!(
            endpoints.local,
            [Target {
                address: [10, 244, 1, 2].into(),
                port: 8080
            }],
            "no local ready endpoint: the local terminating one still serves"
        );
        let none = [slice(vec![endpoint([10, 244, 0, 2], false, false, true, "n1")])];
        assert!(port_endpoints(&http(), none.iter(), "n1").cluster.is_empty());
    }

    #[test]
    fn a_slice_without_the_port_adds_no_endpoint_to_it() {
        let mut other = slice(vec![endpoint([10, 244, 0, 9], true, true, false, "n1")]);
        other.ports = vec![("metrics".into(), TCP, 9090)];
        let endpoints = port_endpoints(&http(), [other].iter(), "n1");
        assert!(endpoints.cluster.is_empty());
    }

    #[test]
    fn services_labelled_for_another_proxy_or_headless_are_left_alone() {
        let labelled = |labels: &[(&str, &str)]| Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Service::default()
        };
        assert!(proxied(&Service::default()));
        assert!(proxied(&labelled(&[("app", "web")])));
        assert!(!proxied(&labelled(&[(
            "service.kubernetes.io/service-proxy-name",
            "foo-bar"
        )])));
        assert!(!proxied(&labelled(&[("service.kubernetes.io/headless", "")])));
    }
}
