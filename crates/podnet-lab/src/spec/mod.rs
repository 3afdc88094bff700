//! The lab file: a small `Lab` header and ordinary Kubernetes YAML.
//!
//! ```yaml
//! apiVersion: podnet.dev/v1alpha1
//! kind: Lab
//! metadata: {name: demo}
//! spec:
//!   nodes: 2                 # or a list: [{name: k8s-w1, labels: {zone: a}}, {name: k8s-w2}]
//!   podCIDR: 10.244.0.0/16   # the cluster CIDR; every node gets a /24 of it
//!   backend: vxlan           # how pods reach other nodes: vxlan (default) or host-gw
//!   serviceCIDR: 10.96.0.0/16
//!   serviceNodePortRange: 30000-32767
//!   loadBalancerPool: 192.168.10.200-192.168.10.250
//!   clusterDomain: cluster.local   # the cluster DNS's domain
//!   clusterDNS: 10.96.0.10         # the kube-dns service's ClusterIP (in serviceCIDR)
//!   dnsReplicas: 2                 # the cluster DNS's pods (0: a cluster whose DNS is down)
//! ---
//! apiVersion: v1
//! kind: Pod
//! ...
//! ```
//!
//! Parsing validates everything that can be checked without a running lab, so a bad file is
//! refused before anything is created, with the document, object and field that are wrong.

mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use podnet_model::{Backend, ObjectKey};

use crate::controlplane::nodes;
use crate::topology::EXTERNAL_ADDRESS;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use validate::SERVICE_NAME_LABEL;
pub(crate) use validate::check_name;

/// The `apiVersion` of the lab header.
pub const API_VERSION: &str = "podnet.dev/v1alpha1";
/// Node names the lab uses for namespaces of its own.
const RESERVED_NODE_NAMES: [&str; 2] = ["fabric", "external"];
/// The longest lab name (it prefixes every namespace name of the lab).
pub const MAX_LAB_NAME: usize = 32;
/// The most nodes a lab may have.
pub const MAX_NODES: usize = 64;

/// A parsed and validated lab file.
#[derive(Debug, Clone)]
pub struct LabFile {
    /// The lab header.
    pub spec: LabSpec,
    /// Namespace documents.
    pub namespaces: Vec<Namespace>,
    /// Pod documents.
    pub pods: Vec<Pod>,
    /// Deployment documents.
    pub deployments: Vec<Deployment>,
    /// Service documents.
    pub services: Vec<Service>,
    /// EndpointSlice documents (for services without a selector).
    pub endpoint_slices: Vec<EndpointSlice>,
    /// NetworkPolicy documents.
    pub network_policies: Vec<NetworkPolicy>,
}

/// A node of the lab: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNode {
    /// The node's name.
    pub name: String,
    /// Labels besides those every node gets (`kubernetes.io/hostname`, `kubernetes.io/os`).
    pub labels: BTreeMap<String, String>,
}

/// An inclusive range of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    /// The first address.
    pub first: Ipv4Addr,
    /// The last address.
    pub last: Ipv4Addr,
}

impl AddressRange {
    /// Whether `address` is in the range.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&address)
    }

    /// The addresses of the range, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The lab header's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// The lab's name; it prefixes every namespace the lab creates.
    pub name: String,
    /// The nodes, in order.
    pub nodes: Vec<LabNode>,
    /// The cluster's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// Prefix length of each node's slice of the pod CIDR.
    pub node_cidr_mask_size: u8,
    /// A CNI network configuration replacing the lab's default (single-node labs only).
    pub cni: Option<String>,
    /// How pod traffic crosses between nodes.
    pub backend: Backend,
    /// Where ClusterIPs come from; its first address is reserved, as in a cluster.
    pub service_cidr: Ipv4Net,
    /// Where NodePorts come from.
    pub node_ports: (u16, u16),
    /// Where LoadBalancer addresses come from (announced on the underlay, as MetalLB does).
    pub load_balancer_pool: AddressRange,
    /// The cluster DNS's domain (kubelet's `clusterDomain`).
    pub cluster_domain: String,
    /// The cluster DNS service's address (kubelet's `clusterDNS`).
    pub cluster_dns: Ipv4Addr,
    /// How many pods serve the cluster DNS.
    pub dns_replicas: u8,
}

/// What is wrong with a lab file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// 1-based index of the YAML document, 0 for the file as a whole.
    pub document: usize,
    /// The object, like `Pod default/web`, when known.
    pub object: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.document, &self.object) {
            (0, Some(object)) => write!(f, "{object}: {}", self.message),
            (0, None) => write!(f, "{}", self.message),
            (document, Some(object)) => write!(f, "document {document} ({object}): {}", self.message),
            (document, None) => write!(f, "document {document}: {}", self.message),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LabDocument {
    #[serde(rename = "apiVersion")]
    _api_version: serde::de::IgnoredAny,
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    metadata: LabMetadata,
    #[serde(default)]
    spec: LabSpecDocument,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabMetadata {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LabSpecDocument {
    #[serde(default = "one_node")]
    nodes: Nodes,
    #[serde(default = "default_pod_cidr", rename = "podCIDR")]
    pod_cidr: String,
    #[serde(default = "default_node_mask", rename = "nodeCIDRMaskSize")]
    node_cidr_mask_size: u8,
    #[serde(default)]
    cni: Option<Value>,
    #[serde(default = "default_backend")]
    backend: String,
    #[serde(default)]
    vxlan: VxlanDocument,
    #[serde(default = "default_service_cidr", rename = "serviceCIDR")]
    service_cidr: String,
    #[serde(default = "default_node_port_range")]
    service_node_port_range: String,
    #[serde(default = "default_load_balancer_pool")]
    load_balancer_pool: String,
    #[serde(default = "default_cluster_domain")]
    cluster_domain: String,
    #[serde(default, rename = "clusterDNS")]
    cluster_dns: Option<String>,
    #[serde(default = "default_dns_replicas")]
    dns_replicas: u8,
}

impl Default for LabSpecDocument {
    fn default() -> Self {
        LabSpecDocument {
            nodes: one_node(),
            pod_cidr: default_pod_cidr(),
            node_cidr_mask_size: default_node_mask(),
            cni: None,
            backend: default_backend(),
            vxlan: VxlanDocument::default(),
            service_cidr: default_service_cidr(),
            service_node_port_range: default_node_port_range(),
            load_balancer_pool: default_load_balancer_pool(),
            cluster_domain: default_cluster_domain(),
            cluster_dns: None,
            dns_replicas: default_dns_replicas(),
        }
    }
}

/// kubeadm runs two CoreDNS replicas.
fn default_dns_replicas() -> u8 {
    2
}

/// The most DNS replicas a lab runs (more only cost namespaces and processes).
const MAX_DNS_REPLICAS: u8 = 10;

fn default_cluster_domain() -> String {
    "cluster.local".into()
}

fn default_service_cidr() -> String {
    "10.96.0.0/16".into()
}

fn default_node_port_range() -> String {
    "30000-32767".into()
}

/// Inside the underlay (nodes are .11 upwards, the external namespace .254), as a MetalLB pool
/// on a cluster's node network would be.
fn default_load_balancer_pool() -> String {
    "192.168.10.200-192.168.10.250".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VxlanDocument {
    #[serde(default = "default_vni")]
    vni: u32,
    #[serde(default = "default_vxlan_port")]
    port: u16,
}

impl Default for VxlanDocument {
    fn default() -> Self {
        VxlanDocument {
            vni: default_vni(),
            port: default_vxlan_port(),
        }
    }
}

fn default_backend() -> String {
    "vxlan".into()
}

fn default_vni() -> u32 {
    1
}

fn default_vxlan_port() -> u16 {
    8472
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Nodes {
    Count(usize),
    Named(Vec<NamedNode>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedNode {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn one_node() -> Nodes {
    Nodes::Count(1)
}

fn default_pod_cidr() -> String {
    "10.244.0.0/16".into()
}

fn default_node_mask() -> u8 {
    24
}

/// The kinds a lab file may hold, with their `apiVersion`.
const KINDS: [(&str, &str); 8] = [
    ("Lab", API_VERSION),
    ("Namespace", "v1"),
    ("Pod", "v1"),
    ("Service", "v1"),
    ("Deployment", "apps/v1"),
    ("EndpointSlice", "discovery.k8s.io/v1"),
    ("NetworkPolicy", "networking.k8s.io/v1"),
    ("", ""),
];

/// Parses and validates a lab file.
pub fn parse(text: &str) -> Result<LabFile, SpecError> {
    let file_error = |message: String| SpecError {
        document: 0,
        object: None,
        message,
    };
    // A lab file may describe a large cluster (the service benchmark has 200,000 documents):
    // the parser's limits, meant for configuration files, are raised accordingly.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 2_000_000,
            max_events: 200_000_000,
            max_nodes: 50_000_000,
            max_total_scalar_bytes: 1 << 30,
        },
    };
    let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|err| file_error(format!("not valid YAML: {err}")))?;
    let mut spec = None;
    let mut file = LabFile {
        spec: placeholder_spec(),
        namespaces: Vec::new(),
        pods: Vec::new(),
        deployments: Vec::new(),
        services: Vec::new(),
        endpoint_slices: Vec::new(),
        network_policies: Vec::new(),
    };
    for (index, document) in documents.into_iter().enumerate() {
        let number = index + 1;
        if document.is_null() {
            continue;
        }
        let error = |object: Option<String>, message: String| SpecError {
            document: number,
            object,
            message,
        };
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        let api_version = document["apiVersion"].as_str().unwrap_or_default().to_owned();
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let namespace = document["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let expected_api = match KINDS.iter().find(|(known, _)| *known == kind) {
            Some(("", _)) => return Err(error(None, "has no \"kind\"".into())),
            Some((_, api)) => *api,
            None => {
                return Err(error(
                    Some(format!("{kind} {name}")),
                    format!(
                        "kind {kind} is not supported by podnet lab yet (it runs Namespace, Pod, Deployment, Service, EndpointSlice and NetworkPolicy)"
                    ),
                ));
            }
        };
        if api_version != expected_api {
            return Err(error(
                Some(format!("{kind} {name}")),
                format!("apiVersion must be {expected_api:?}, not {api_version:?}"),
            ));
        }
        let scoped = kind != "Lab" && kind != "Namespace";
        let object = Some(if scoped {
            format!("{kind} {namespace}/{name}")
        } else {
            format!("{kind} {name}")
        });
        let fail = |message: String| error(object.clone(), message);
        if scoped {
            check_name(&namespace, 63).map_err(|message| fail(format!("metadata.namespace: {message}")))?;
            let checked = if kind == "Service" {
                validate::check_dns1035_label(&name)
            } else {
                check_name(&name, 253)
            };
            checked.map_err(|message| fail(format!("metadata.name: {message}")))?;
        }
        match kind.as_str() {
            "Lab" => {
                if spec.is_some() {
                    return Err(fail("a lab file has exactly one Lab document".into()));
                }
                let header: LabDocument = decode(document).map_err(fail)?;
                spec = Some(lab_spec(header).map_err(fail)?);
            }
            "Namespace" => {
                check_name(&name, 63).map_err(|message| fail(format!("metadata.name: {message}")))?;
                file.namespaces.push(decode(document).map_err(fail)?);
            }
            "Pod" => {
                let pod: Pod = decode(document).map_err(fail)?;
                validate::pod_spec(pod.spec.as_ref()).map_err(fail)?;
                file.pods.push(pod);
            }
            "Deployment" => {
                let deployment: Deployment = decode(document).map_err(fail)?;
                validate::deployment(&deployment).map_err(fail)?;
                file.deployments.push(deployment);
            }
            "Service" => {
                let service: Service = decode(document).map_err(fail)?;
                validate::service(&service).map_err(fail)?;
                file.services.push(service);
            }
            "EndpointSlice" => {
                let slice: EndpointSlice = decode(document).map_err(fail)?;
                validate::endpoint_slice(&slice).map_err(fail)?;
                file.endpoint_slices.push(slice);
            }
            "NetworkPolicy" => {
                let policy: NetworkPolicy = decode(document).map_err(fail)?;
                validate::network_policy(&policy).map_err(fail)?;
                file.network_policies.push(policy);
            }
            _ => unreachable!("kinds are checked above"),
        }
    }
    file.spec = spec.ok_or_else(|| {
        file_error(format!(
            "no Lab document: start the file with\n  apiVersion: {API_VERSION}\n  kind: Lab\n  metadata: {{name: demo}}"
        ))
    })?;
    check_unique(&file)?;
    validate::service_ranges(&file).map_err(|(object, message)| SpecError {
        document: 0,
        object: Some(object),
        message,
    })?;
    Ok(file)
}

/// Decodes a document, naming the field that does not fit (`spec.selector: invalid type:
/// sequence, expected a map`).
fn decode<T: DeserializeOwned>(document: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(document).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// Stands in for the header until the Lab document is read.
fn placeholder_spec() -> LabSpec {
    LabSpec {
        name: String::new(),
        nodes: Vec::new(),
        pod_cidr: Ipv4Net::default(),
        node_cidr_mask_size: 24,
        cni: None,
        backend: Backend::DEFAULT_VXLAN,
        service_cidr: Ipv4Net::default(),
        node_ports: (0, 0),
        load_balancer_pool: AddressRange {
            first: Ipv4Addr::UNSPECIFIED,
            last: Ipv4Addr::UNSPECIFIED,
        },
        cluster_domain: String::new(),
        cluster_dns: Ipv4Addr::UNSPECIFIED,
        dns_replicas: 0,
    }
}

fn lab_spec(header: LabDocument) -> Result<LabSpec, String> {
    let name = header.metadata.name;
    check_name(&name, MAX_LAB_NAME).map_err(|message| format!("metadata.name: {message}"))?;
    let too_many = || format!("spec.nodes: a lab has 1 to {MAX_NODES} nodes");
    let nodes: Vec<LabNode> = match header.spec.nodes {
        Nodes::Count(count) if (1..=MAX_NODES).contains(&count) => (1..=count)
            .map(|index| LabNode {
                name: format!("node{index}"),
                labels: BTreeMap::new(),
            })
            .collect(),
        Nodes::Count(_) => return Err(too_many()),
        Nodes::Named(named) => named
            .into_iter()
            .map(|node| LabNode {
                name: node.name,
                labels: node.labels,
            })
            .collect(),
    };
    if nodes.is_empty() || nodes.len() > MAX_NODES {
        return Err(too_many());
    }
    for (index, node) in nodes.iter().enumerate() {
        let name = &node.name;
        check_name(name, 63).map_err(|message| format!("spec.nodes[{index}]: {message}"))?;
        if RESERVED_NODE_NAMES.contains(&name.as_str()) {
            return Err(format!(
                "spec.nodes[{index}]: {name:?} is reserved for the lab's own namespaces"
            ));
        }
        if nodes[..index].iter().any(|other| &other.name == name) {
            return Err(format!("spec.nodes[{index}]: node {name:?} is listed twice"));
        }
        for (key, value) in &node.labels {
            validate::label(key, value)
                .map_err(|message| format!("spec.nodes[{index}].labels: {message}"))?;
        }
    }
    let pod_cidr = ipv4_network("spec.podCIDR", &header.spec.pod_cidr)?;
    let mask = header.spec.node_cidr_mask_size;
    if mask < pod_cidr.prefix_len() || mask > 28 {
        return Err(format!(
            "spec.nodeCIDRMaskSize: must be between the pod CIDR's /{} and /28",
            pod_cidr.prefix_len()
        ));
    }
    let slices = 1usize << (mask - pod_cidr.prefix_len()).min(20);
    if slices < nodes.len() {
        return Err(format!(
            "spec.podCIDR: {pod_cidr} holds only {slices} /{mask} node subnets for {} nodes",
            nodes.len()
        ));
    }
    let cni = match header.spec.cni {
        None => None,
        Some(_) if nodes.len() > 1 => {
            return Err(
                "spec.cni: a custom CNI configuration fixes one subnet, so it needs a single-node lab".into(),
            );
        }
        Some(config) => {
            let text = config.to_string();
            podnet_cni::runtime::NetworkConfigList::parse(&text).map_err(|err| format!("spec.cni: {err}"))?;
            Some(text)
        }
    };
    let backend = match header.spec.backend.as_str() {
        "vxlan" => {
            let vxlan = header.spec.vxlan;
            if vxlan.vni == 0 || vxlan.vni >= 1 << 24 {
                return Err(format!(
                    "spec.vxlan.vni: {} is not a VNI (1 to 16777215)",
                    vxlan.vni
                ));
            }
            Backend::Vxlan {
                vni: vxlan.vni,
                port: vxlan.port,
            }
        }
        "host-gw" => Backend::HostGw,
        other => {
            return Err(format!(
                "spec.backend: {other:?} is not a backend (vxlan or host-gw)"
            ));
        }
    };
    let service_cidr = ipv4_network("spec.serviceCIDR", &header.spec.service_cidr)?;
    if service_cidr.prefix_len() > 28 {
        return Err("spec.serviceCIDR: use a /28 or larger".into());
    }
    if service_cidr.contains(&pod_cidr.network()) || pod_cidr.contains(&service_cidr.network()) {
        return Err(format!(
            "spec.serviceCIDR: {service_cidr} overlaps spec.podCIDR {pod_cidr}"
        ));
    }
    let node_ports = port_range(&header.spec.service_node_port_range).ok_or_else(|| {
        format!(
            "spec.serviceNodePortRange: {:?} is not a port range (e.g. 30000-32767)",
            header.spec.service_node_port_range
        )
    })?;
    let load_balancer_pool = address_range(&header.spec.load_balancer_pool).ok_or_else(|| {
        format!(
            "spec.loadBalancerPool: {:?} is not an address range (e.g. 192.168.10.200-192.168.10.250) or CIDR",
            header.spec.load_balancer_pool
        )
    })?;
    let taken = [("spec.podCIDR", pod_cidr), ("spec.serviceCIDR", service_cidr)];
    for (field, network) in taken {
        if load_balancer_pool
            .addresses()
            .any(|address| network.contains(&address))
        {
            return Err(format!(
                "spec.loadBalancerPool: {load_balancer_pool} overlaps {field} {network}"
            ));
        }
    }
    if let Some(address) = load_balancer_pool
        .addresses()
        .find(|address| !nodes::pool_may_hold(*address))
    {
        return Err(format!(
            "spec.loadBalancerPool: {load_balancer_pool} holds {address}, which the underlay {} keeps for its network and broadcast addresses, the nodes ({}) and the external gateway ({EXTERNAL_ADDRESS})",
            nodes::NODE_NETWORK,
            nodes::node_addresses()
        ));
    }
    let dns_replicas = header.spec.dns_replicas;
    if dns_replicas > MAX_DNS_REPLICAS {
        return Err(format!(
            "spec.dnsReplicas: {dns_replicas} is more than a lab runs ({MAX_DNS_REPLICAS} at most)"
        ));
    }
    let cluster_domain = header.spec.cluster_domain.trim_end_matches('.').to_owned();
    check_name(&cluster_domain, 253).map_err(|message| format!("spec.clusterDomain: {message}"))?;
    // The tenth address of the service CIDR, as kubeadm picks it.
    let cluster_dns = match &header.spec.cluster_dns {
        None => Ipv4Addr::from(u32::from(service_cidr.network()) + 10),
        Some(text) => text
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("spec.clusterDNS: {text:?} is not an IPv4 address"))?,
    };
    let reserved = [service_cidr.network(), service_cidr.broadcast()];
    let first_host = Ipv4Addr::from(u32::from(service_cidr.network()) + 1);
    if !service_cidr.contains(&cluster_dns) || reserved.contains(&cluster_dns) || cluster_dns == first_host {
        return Err(format!(
            "spec.clusterDNS: {cluster_dns} must be an address of spec.serviceCIDR {service_cidr} other than its network, first and broadcast addresses"
        ));
    }
    Ok(LabSpec {
        name,
        nodes,
        pod_cidr,
        node_cidr_mask_size: mask,
        cni,
        backend,
        service_cidr,
        node_ports,
        load_balancer_pool,
        cluster_domain,
        cluster_dns,
        dns_replicas,
    })
}

/// An IPv4 network without host bits, for `field`.
fn ipv4_network(field: &str, text: &str) -> Result<Ipv4Net, String> {
    match text.parse::<IpNet>() {
        Ok(IpNet::V4(net)) if net.network() == net.addr() => Ok(net),
        Ok(IpNet::V4(net)) => Err(format!("{field}: {net} has host bits set; use {}", net.trunc())),
        Ok(IpNet::V6(_)) => Err(format!("{field}: only IPv4 is supported")),
        Err(_) => Err(format!("{field}: {text:?} is not a CIDR (e.g. 10.244.0.0/16)")),
    }
}

/// `30000-32767`.
fn port_range(text: &str) -> Option<(u16, u16)> {
    let (first, last) = text.split_once('-')?;
    let (first, last): (u16, u16) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    (first > 0 && first <= last).then_some((first, last))
}

/// `192.168.10.200-192.168.10.250`, or a CIDR (all its addresses).
fn address_range(text: &str) -> Option<AddressRange> {
    if let Some((first, last)) = text.split_once('-') {
        let (first, last): (Ipv4Addr, Ipv4Addr) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
        return (first <= last).then_some(AddressRange { first, last });
    }
    let net: Ipv4Net = text.trim().parse().ok()?;
    Some(AddressRange {
        first: net.network(),
        last: net.broadcast(),
    })
}

/// Refuses two objects of one kind with the same name (in the same namespace).
fn check_unique(file: &LabFile) -> Result<(), SpecError> {
    let mut seen = std::collections::HashSet::new();
    let keys = keyed(&file.namespaces)
        .chain(keyed(&file.pods))
        .chain(keyed(&file.deployments))
        .chain(keyed(&file.services))
        .chain(keyed(&file.endpoint_slices))
        .chain(keyed(&file.network_policies));
    for (kind, key) in keys {
        let key = if kind == "Namespace" {
            key.name.clone()
        } else {
            key.to_string()
        };
        if !seen.insert((kind, key.clone())) {
            return Err(SpecError {
                document: 0,
                object: None,
                message: format!("{kind} {key} is defined twice"),
            });
        }
    }
    Ok(())
}

/// Each object's kind and key.
fn keyed<T>(objects: &[T]) -> impl Iterator<Item = (&'static str, ObjectKey)> + '_
where
    T: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    objects
        .iter()
        .map(|object| (T::KIND, ObjectKey::of(object.metadata())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: demo\n";

    #[test]
    fn parses_header_defaults_and_objects() {
        let file = parse(&format!(
            "{HEADER}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n"
        ))
        .unwrap();
        assert_eq!(file.spec.name, "demo");
        assert_eq!(file.spec.nodes[0].name, "node1");
        assert_eq!(file.spec.pod_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(file.spec.service_cidr.to_string(), "10.96.0.0/16");
        assert_eq!(
            file.spec.cluster_dns,
            Ipv4Addr::new(10, 96, 0, 10),
            "the tenth address"
        );
        assert_eq!(file.spec.cluster_domain, "cluster.local");
        assert_eq!(file.spec.dns_replicas, 2, "as kubeadm runs CoreDNS");
        assert_eq!(file.spec.node_ports, (30000, 32767));
        assert_eq!(
            file.spec.load_balancer_pool.to_string(),
            "192.168.10.200-192.168.10.250"
        );
        assert_eq!(file.pods.len(), 1);
    }

    #[test]
    fn named_nodes_and_custom_cni() {
        let file = parse(&format!(
            "{HEADER}spec:\n  nodes: [{{name: k8s-w1, labels: {{zone: a}}}}]\n  cni: {{cniVersion: \"0.2.0\", name: demo_br, type: bridge}}\n"
        ))
        .unwrap();
        assert_eq!(file.spec.nodes[0].name, "k8s-w1");
        assert_eq!(file.spec.nodes[0].labels["zone"], "a");
        assert!(file.spec.cni.unwrap().contains("demo_br"));
    }

    #[test]
    fn refuses_bad_files_saying_where_and_why() {
        let pod =
            |body: &str| format!("{HEADER}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n{body}");
        let cases = [
            (
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n".to_owned(),
                "no Lab document",
            ),
            (format!("{HEADER}---\n{HEADER}"), "exactly one Lab"),
            (format!("{HEADER}spec:\n  nodes: 0\n"), "1 to 64 nodes"),
            (
                format!("{HEADER}spec:\n  nodes: 18446744073709551615\n"),
                "1 to 64 nodes",
            ),
            (
                format!("{HEADER}spec:\n  nodes: [{{name: fabric}}]\n"),
                "reserved",
            ),
            (format!("{HEADER}spec:\n  podCIDR: 10.244.0.1/16\n"), "host bits"),
            (
                format!("{HEADER}spec:\n  nodes: 3\n  podCIDR: 10.244.0.0/23\n"),
                "holds only 2",
            ),
            (
                format!(
                    "{HEADER}spec:\n  nodes: 2\n  cni: {{cniVersion: \"1.0.0\", name: x, type: bridge}}\n"
                ),
                "single-node",
            ),
            (format!("{HEADER}spec:\n  colour: blue\n"), "unknown field"),
            (format!("{HEADER}spec:\n  backend: ipip\n"), "not a backend"),
            (
                format!("{HEADER}spec:\n  loadBalancerPool: 10.96.0.0/28\n"),
                "spec.loadBalancerPool: 10.96.0.0-10.96.0.15 overlaps spec.serviceCIDR",
            ),
            (
                format!("{HEADER}spec:\n  loadBalancerPool: 192.168.10.240-192.168.10.255\n"),
                "holds 192.168.10.254",
            ),
            (
                format!("{HEADER}spec:\n  loadBalancerPool: 192.168.10.70-192.168.10.80\n"),
                "holds 192.168.10.70",
            ),
            (
                format!(
                    "{HEADER}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: s\n"
                ),
                "not supported by podnet lab yet",
            ),
            (pod("spec:\n  containers: []\n"), "at least one container"),
            (
                format!(
                    "{HEADER}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 100000\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - {{name: nginx, image: nginx}}\n"
                ),
                "0 to 1000 replicas",
            ),
            (
                pod("spec:\n  containers:\n  - name: a\n    image: redis\n"),
                "cannot be emulated",
            ),
            (
                pod("spec:\n  containers:\n  - {name: a, image: nginx}\n  - {name: a, image: nginx}\n"),
                "used twice",
            ),
            (
                pod(
                    "spec:\n  dnsPolicy: ClusterFirstWithoutHostNet\n  containers:\n  - {name: a, image: nginx}\n",
                ),
                "spec.dnsPolicy: Unsupported value: \"ClusterFirstWithoutHostNet\"",
            ),
            (
                pod("spec:\n  dnsPolicy: \"None\"\n  containers:\n  - {name: a, image: nginx}\n"),
                "must provide at least one DNS nameserver",
            ),
            (
                pod(
                    "spec:\n  dnsConfig: {nameservers: [1.1.1.1, 8.8.8.8, 9.9.9.9, 1.0.0.1]}\n  containers:\n  - {name: a, image: nginx}\n",
                ),
                "must not have more than 3 nameservers",
            ),
            (
                pod(
                    "spec:\n  dnsConfig: {nameservers: [dns.example]}\n  containers:\n  - {name: a, image: nginx}\n",
                ),
                "spec.dnsConfig.nameservers[0]: Invalid value",
            ),
            (
                format!("{HEADER}spec:\n  clusterDNS: 10.97.0.10\n"),
                "spec.clusterDNS: 10.97.0.10 must be an address of spec.serviceCIDR",
            ),
            (
                format!("{HEADER}spec:\n  dnsReplicas: 11\n"),
                "spec.dnsReplicas: 11 is more than a lab runs (10 at most)",
            ),
            (
                pod(
                    "spec:\n  initContainers:\n  - {name: i, image: busybox, command: [\"true\"]}\n  containers:\n  - {name: a, image: nginx}\n",
                ),
                "does not run init containers",
            ),
            (
                format!("{HEADER}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: Web\n"),
                "not a valid name",
            ),
            ("{{{".to_owned(), "not valid YAML"),
            (
                format!("{HEADER}spec:\n  serviceCIDR: 10.244.0.0/20\n"),
                "overlaps spec.podCIDR",
            ),
            (
                format!("{HEADER}spec:\n  serviceNodePortRange: 5-1\n"),
                "not a port range",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{text}\n=> {err}");
        }
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let text = format!(
            "{HEADER}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: other}}\n    spec:\n      containers:\n      - {{name: nginx, image: nginx}}\n"
        );
        assert!(parse(&text).unwrap_err().to_string().contains("matchLabels"));
    }

    fn service(body: &str) -> String {
        format!("{HEADER}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n{body}")
    }

    #[test]
    fn services_and_slices_are_parsed() {
        let file = parse(&format!(
            "{}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints:\n- addresses: [10.244.0.9]\nports:\n- {{name: http, port: 8080}}\n",
            service("  ports:\n  - {name: http, port: 80}\n")
        ))
        .unwrap();
        assert_eq!(file.services.len(), 1);
        assert_eq!(file.endpoint_slices.len(), 1);
    }

    #[test]
    fn bad_services_are_refused_naming_object_and_field() {
        let cases = [
            (
                service("  ports:\n  - {name: http}\n"),
                "spec.ports[0].port: Required value",
            ),
            (
                service("  ports:\n  - {port: 80, protocol: ICMP}\n"),
                "spec.ports[0].protocol: Unsupported value: \"ICMP\"",
            ),
            (
                service("  type: NodePort\n  ports:\n  - {port: 80, nodePort: 40000}\n"),
                "spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767",
            ),
            (
                service("  selector: [app, web]\n  ports:\n  - {port: 80}\n"),
                "spec.selector: invalid type: sequence, expected a map",
            ),
            (
                service("  ports:\n  - {port: 80}\n  - {port: 81}\n"),
                "spec.ports[0].name: Required value",
            ),
            (
                service("  ports:\n  - {port: 70000}\n"),
                "spec.ports[0].port: Invalid value: 70000",
            ),
            (
                service("  clusterIP: 10.200.0.1\n  ports:\n  - {port: 80}\n"),
                "spec.clusterIP: Invalid value: \"10.200.0.1\": provided IP is not in the valid range",
            ),
            (
                service("  ports:\n  - {port: 80, nodePort: 30080}\n"),
                "may not be used when `type` is 'ClusterIP'",
            ),
            (
                service("  type: Foo\n  ports:\n  - {port: 80}\n"),
                "spec.type: Unsupported value: \"Foo\"",
            ),
            (
                service("  ports:\n  - {port: 80, targetPort: Not_A_Name}\n"),
                "spec.ports[0].targetPort: Invalid value",
            ),
            (
                service(
                    "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  ports:\n  - {port: 80}\n",
                ),
                "timeoutSeconds: must be between 1 and 86400",
            ),
            (
                format!(
                    "{HEADER}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\naddressType: IPv4\nendpoints: []\n"
                ),
                "kubernetes.io/service-name ties the slice",
            ),
            (
                service(
                    "  type: NodePort\n  ports:\n  - {name: a, port: 80, nodePort: 30080}\n  - {name: b, port: 81, nodePort: 30080}\n",
                ),
                "spec.ports[1].nodePort: Duplicate value: 30080/TCP",
            ),
            (
                service(
                    "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 30080\n  ports:\n  - {port: 80, nodePort: 30080}\n",
                ),
                "spec.healthCheckNodePort: Invalid value: 30080: provided port is already allocated",
            ),
            (
                service("  clusterIP: 10.96.255.255\n  ports:\n  - {port: 80}\n"),
                "provided IP is reserved",
            ),
            (
                service("  ports:\n  - {port: 80}\n").replace("name: web", "name: 1web"),
                "a DNS-1035 label must start with a lower-case letter",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{text}\n=> {err}");
            if !text.contains("EndpointSlice") && !text.contains("1web") {
                assert!(err.contains("Service default/web"), "{err}");
            }
        }
    }

    /// The NetworkPolicy example of the Kubernetes documentation (concepts/services-networking/
    /// network-policies), with the `namespace` line dropped.
    const DOCS_POLICY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
";

    /// A NetworkPolicy `default/web` with `spec` (indented by two).
    fn policy(spec: &str) -> String {
        format!(
            "{HEADER}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\nspec:\n{spec}"
        )
    }

    #[test]
    fn network_policies_of_the_kubernetes_docs_are_accepted() {
        let file = parse(&format!("{HEADER}---\n{DOCS_POLICY}")).unwrap();
        assert_eq!(file.network_policies.len(), 1);
        let spec = file.network_policies[0].spec.as_ref().unwrap();
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
        let from = spec.ingress.as_ref().unwrap()[0].from.as_ref().unwrap();
        assert_eq!(
            from[0].ip_block.as_ref().unwrap().except.as_deref(),
            Some(&["172.17.1.0/24".to_owned()][..])
        );

        let accepted = [
            // Default deny of all ingress and all egress.
            "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
            // Allow all ingress.
            "  podSelector: {}\n  ingress:\n  - {}\n  policyTypes: [Ingress]\n",
            // No spec at all: every pod of the namespace, ingress denied.
            "",
            // A port range.
            "  podSelector:\n    matchLabels: {role: db}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/24}\n    ports:\n    - {protocol: TCP, port: 32000, endPort: 32768}\n",
            // Pods of some namespaces, by expressions; a named port; UDP and SCTP.
            "  podSelector:\n    matchExpressions:\n    - {key: app, operator: In, values: [web, api]}\n    - {key: legacy, operator: DoesNotExist}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: team, operator: NotIn, values: [qa]}]\n      podSelector:\n        matchLabels: {app.kubernetes.io/name: client}\n    ports:\n    - {port: http}\n    - {protocol: UDP, port: 53}\n    - {protocol: SCTP}\n",
            // IPv6 blocks.
            "  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: \"2001:db8::/32\", except: [\"2001:db8:1::/48\"]}\n",
        ];
        for spec in accepted {
            let text = if spec.is_empty() {
                policy("").replace("spec:\n", "")
            } else {
                policy(spec)
            };
            parse(&text).unwrap_or_else(|err| panic!("{text}\n=> {err}"));
        }
    }

    #[test]
    fn bad_network_policies_are_refused_naming_object_and_field() {
        let peer = |peer: &str| {
            policy(&format!(
                "  podSelector: {{}}\n  ingress:\n  - from:\n    - {peer}\n"
            ))
        };
        let to = |peer: &str| {
            policy(&format!(
                "  podSelector: {{}}\n  egress:\n  - to:\n    - {peer}\n"
            ))
        };
        let port = |port: &str| {
            policy(&format!(
                "  podSelector: {{}}\n  ingress:\n  - ports:\n    - {port}\n"
            ))
        };
        let selector = |selector: &str| policy(&format!("  podSelector: {selector}\n"));
        let cases = [
            (
                port("{protocol: ICMP, port: 80}"),
                "spec.ingress[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ),
            (
                port("{port: 0}"),
                "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            ),
            (
                port("{port: 70000}"),
                "spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535",
            ),
            (
                port("{port: Not_A_Name}"),
                "spec.ingress[0].ports[0].port: Invalid value: \"Not_A_Name\": must be a port number or an IANA service name",
            ),
            (
                port("{port: web-server-port-1}"),
                "spec.ingress[0].ports[0].port: Invalid value: \"web-server-port-1\"",
            ),
            (
                port("{port: \"8080\"}"),
                "spec.ingress[0].ports[0].port: Invalid value: \"8080\"",
            ),
            (
                port("{port: -web}"),
                "spec.ingress[0].ports[0].port: Invalid value: \"-web\"",
            ),
            (
                port("{port: web-}"),
                "spec.ingress[0].ports[0].port: Invalid value: \"web-\"",
            ),
            (
                port("{port: we--b}"),
                "spec.ingress[0].ports[0].port: Invalid value: \"we--b\"",
            ),
            (
                port("{port: http, endPort: 8080}"),
                "spec.ingress[0].ports[0].endPort: Invalid value: 8080: may not be specified when `port` is non-numeric",
            ),
            (
                port("{port: 8080, endPort: 80}"),
                "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
            ),
            (
                port("{port: 8080, endPort: 70000}"),
                "spec.ingress[0].ports[0].endPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ),
            (
                port("{endPort: 8080}"),
                "spec.ingress[0].ports[0].endPort: Invalid value: 8080: may not be specified when `port` is not specified",
            ),
            (
                peer("{}"),
                "spec.ingress[0].from[0]: Required value: must specify a peer",
            ),
            (
                peer("{podSelector: {}, ipBlock: {cidr: 10.0.0.0/8}}"),
                "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer",
            ),
            (
                to("{namespaceSelector: {}, ipBlock: {cidr: 10.0.0.0/8}}"),
                "spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer",
            ),
            (
                to("{ipBlock: {cidr: 10.0.0.0}}"),
                "spec.egress[0].to[0].ipBlock.cidr: Invalid value: \"10.0.0.0\": must be a valid CIDR value",
            ),
            (
                to("{ipBlock: {cidr: 10.0.0.0/33}}"),
                "spec.egress[0].to[0].ipBlock.cidr: Invalid value: \"10.0.0.0/33\"",
            ),
            (
                to("{ipBlock: {cidr: \"\"}}"),
                "spec.egress[0].to[0].ipBlock.cidr: Required value",
            ),
            (
                to("{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/x]}}"),
                "spec.egress[0].to[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/x\": must be a valid CIDR value",
            ),
            (
                to("{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 192.168.0.0/16]}}"),
                "spec.egress[0].to[0].ipBlock.except[1]: Invalid value: \"192.168.0.0/16\": must be a strict subset of `cidr` \"10.0.0.0/8\"",
            ),
            (
                to("{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}"),
                "spec.egress[0].to[0].ipBlock.except[0]: Invalid value: \"10.0.0.0/8\": must be a strict subset",
            ),
            (
                to("{ipBlock: {cidr: 10.0.0.0/8, except: [\"::/64\"]}}"),
                "spec.egress[0].to[0].ipBlock.except[0]: Invalid value: \"::/64\": must be a strict subset",
            ),
            (
                peer("{podSelector: {matchLabels: {app: -web}}}"),
                "spec.ingress[0].from[0].podSelector.matchLabels: app: \"-web\" is not a valid label value",
            ),
            (
                peer("{namespaceSelector: {matchLabels: {Bad Key: x}}}"),
                "spec.ingress[0].from[0].namespaceSelector.matchLabels: \"Bad Key\" is not a valid label key",
            ),
            (
                selector("{matchExpressions: [{key: app, operator: In}]}"),
                "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            ),
            (
                selector("{matchExpressions: [{key: app, operator: NotIn, values: []}]}"),
                "spec.podSelector.matchExpressions[0].values: Required value",
            ),
            (
                selector("{matchExpressions: [{key: app, operator: Exists, values: [web]}]}"),
                "spec.podSelector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            (
                selector("{matchExpressions: [{key: app, operator: DoesNotExist, values: [web]}]}"),
                "spec.podSelector.matchExpressions[0].values: Forbidden",
            ),
            (
                selector("{matchExpressions: [{key: tier, operator: Gt, values: [\"1\"]}]}"),
                "spec.podSelector.matchExpressions[0].operator: Invalid value: \"Gt\": not a valid selector operator",
            ),
            (
                selector("{matchExpressions: [{key: a/b/c, operator: Exists}]}"),
                "spec.podSelector.matchExpressions[0].key: \"a/b/c\" is not a valid label key",
            ),
            (
                selector("{matchExpressions: [{key: app, operator: In, values: [ok, not ok]}]}"),
                "spec.podSelector.matchExpressions[0].values[1]: \"not ok\" is not a valid label value",
            ),
            (
                to("{namespaceSelector: {matchExpressions: [{key: team, operator: Exists, values: [a]}]}}"),
                "spec.egress[0].to[0].namespaceSelector.matchExpressions[0].values: Forbidden",
            ),
            (
                policy("  podSelector: {}\n  policyTypes: [Ingress, Sideways]\n"),
                "spec.policyTypes[1]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"",
            ),
            (
                policy("  podSelector: {}\n  policyTypes: [Egress, Egress]\n"),
                "spec.policyTypes[1]: Duplicate value: \"Egress\"",
            ),
            (
                policy(
                    "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n  - ports:\n    - {port: 80, protocol: icmp}\n",
                ),
                "spec.ingress[1].ports[0].protocol: Unsupported value: \"icmp\"",
            ),
            (
                policy("  podSelector: []\n"),
                "spec.podSelector: invalid type: sequence",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{text}\n=> {err}");
            assert!(err.contains("(NetworkPolicy default/web)"), "{err}");
        }
    }

    #[test]
    fn network_policy_names_and_duplicates_are_refused() {
        let named = |name: &str, namespace: &str| {
            format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  podSelector: {{}}\n"
            )
        };
        let refusals = [
            (
                format!("{HEADER}{}", named("Deny_All", "default")),
                "document 2 (NetworkPolicy default/Deny_All): metadata.name: \"Deny_All\" is not a valid name",
            ),
            (
                format!("{HEADER}{}{}", named("deny", "shop"), named("deny", "shop")),
                "NetworkPolicy shop/deny is defined twice",
            ),
            (
                format!(
                    "{HEADER}---\napiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n"
                ),
                "apiVersion must be \"networking.k8s.io/v1\", not \"networking.k8s.io/v1beta1\"",
            ),
        ];
        for (text, expected) in refusals {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{text}\n=> {err}");
        }
        // A DNS subdomain, dots included; the same name in two namespaces is two policies.
        let file = parse(&format!(
            "{HEADER}{}{}",
            named("deny.all", "shop"),
            named("deny.all", "default")
        ))
        .unwrap();
        assert_eq!(file.network_policies.len(), 2);
    }
}
