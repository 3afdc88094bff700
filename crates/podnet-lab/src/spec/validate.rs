//! What the API server would refuse: the checks a lab file's objects must pass before anything
//! is created. Each error names the field, as `kubectl apply` would (`spec.ports[0].protocol:
//! Unsupported value: "ICMP"`); the caller adds the document and object.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodSpec, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::LabFile;
use crate::workload;

/// The most replicas a Deployment may ask for: more than a lab's nodes can give addresses to,
/// low enough that a typo cannot make the control plane exhaust memory.
const MAX_REPLICAS: i32 = 1000;
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The most endpoints one EndpointSlice may hold (the API server's limit).
const MAX_SLICE_ENDPOINTS: usize = 1000;

pub(super) fn pod_spec(spec: Option<&PodSpec>) -> Result<(), String> {
    let spec = spec.ok_or("has no spec")?;
    if spec.containers.is_empty() {
        return Err("spec.containers: a pod needs at least one container".into());
    }
    if spec.init_containers.as_ref().is_some_and(|init| !init.is_empty()) {
        return Err(
            "spec.initContainers: the lab does not run init containers; move their commands into a container"
                .into(),
        );
    }
    let mut seen = Vec::new();
    for container in &spec.containers {
        if seen.contains(&&container.name) {
            return Err(format!("container name {:?} is used twice", container.name));
        }
        seen.push(&container.name);
        check_name(&container.name, 63).map_err(|message| format!("container name: {message}"))?;
        workload::Program::for_container(container)
            .map_err(|message| format!("container {:?}: {message}", container.name))?;
    }
    for (key, value) in spec.node_selector.iter().flatten() {
        label(key, value).map_err(|message| format!("spec.nodeSelector: {message}"))?;
    }
    if spec
        .termination_grace_period_seconds
        .is_some_and(|seconds| seconds < 0)
    {
        return Err("spec.terminationGracePeriodSeconds: must be 0 or more".into());
    }
    dns(spec)
}

/// The kinds of `dnsPolicy`.
const DNS_POLICIES: [&str; 4] = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];

/// `dnsPolicy` and `dnsConfig`, with the API server's limits.
fn dns(spec: &PodSpec) -> Result<(), String> {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    if !DNS_POLICIES.contains(&policy) {
        return Err(unsupported("spec.dnsPolicy", policy, &DNS_POLICIES));
    }
    let config = spec.dns_config.as_ref();
    let nameservers = config
        .and_then(|config| config.nameservers.as_deref())
        .unwrap_or_default();
    if policy == "None" && nameservers.is_empty() {
        return Err(
            "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"
                .into(),
        );
    }
    if nameservers.len() > 3 {
        return Err(format!(
            "spec.dnsConfig.nameservers: Invalid value: {nameservers:?}: must not have more than 3 nameservers"
        ));
    }
    for (index, nameserver) in nameservers.iter().enumerate() {
        if nameserver.parse::<IpAddr>().is_err() {
            return Err(format!(
                "spec.dnsConfig.nameservers[{index}]: Invalid value: {nameserver:?}: must be a valid IP address"
            ));
        }
    }
    let searches = config
        .and_then(|config| config.searches.as_deref())
        .unwrap_or_default();
    if searches.len() > 32 || searches.iter().map(|search| search.len() + 1).sum::<usize>() > 2048 {
        return Err("spec.dnsConfig.searches: Invalid value: must not have more than 32 search paths or 2048 characters".into());
    }
    for (index, search) in searches.iter().enumerate() {
        check_name(search.trim_end_matches('.'), 253)
            .map_err(|message| format!("spec.dnsConfig.searches[{index}]: {message}"))?;
    }
    let options = config
        .and_then(|config| config.options.as_deref())
        .unwrap_or_default();
    for (index, option) in options.iter().enumerate() {
        if option.name.as_deref().unwrap_or_default().is_empty() {
            return Err(format!("spec.dnsConfig.options[{index}].name: Required value"));
        }
    }
    Ok(())
}

pub(super) fn deployment(deployment: &Deployment) -> Result<(), String> {
    let spec = deployment.spec.as_ref().ok_or("has no spec")?;
    if spec
        .replicas
        .is_some_and(|replicas| !(0..=MAX_REPLICAS).contains(&replicas))
    {
        return Err(format!(
            "spec.replicas: a lab runs 0 to {MAX_REPLICAS} replicas of a Deployment"
        ));
    }
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    if selector.is_empty() || selector.iter().any(|(key, value)| labels.get(key) != Some(value)) {
        return Err(
            "spec.selector.matchLabels must be non-empty and match spec.template.metadata.labels".into(),
        );
    }
    if spec
        .selector
        .match_expressions
        .as_ref()
        .is_some_and(|list| !list.is_empty())
    {
        return Err("spec.selector.matchExpressions is not supported; use matchLabels".into());
    }
    pod_spec(spec.template.spec.as_ref()).map_err(|message| format!("spec.template: {message}"))
}

/// The service types.
const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
/// The protocols of service and endpoint ports.
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

pub(super) fn service(service: &Service) -> Result<(), String> {
    let spec = service.spec.as_ref().ok_or("spec: Required value")?;
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&kind) {
        return Err(unsupported("spec.type", kind, &SERVICE_TYPES));
    }
    let exposed = matches!(kind, "NodePort" | "LoadBalancer");
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
    let headless = cluster_ip == "None";
    match cluster_ip {
        "" | "None" => {}
        text => match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => {}
            Ok(IpAddr::V6(_)) => return Err(format!("spec.clusterIP: {text}: the lab is IPv4-only")),
            Err(_) => {
                return Err(format!(
                    "spec.clusterIP: Invalid value: {text:?}: must be a valid IP address or \"None\""
                ));
            }
        },
    }
    if let Some(ips) = &spec.cluster_ips
        && let Some(first) = ips.first()
        && !cluster_ip.is_empty()
        && first != cluster_ip
    {
        return Err("spec.clusterIPs[0]: Invalid value: must match spec.clusterIP".into());
    }
    if spec.ip_families.iter().flatten().any(|family| family != "IPv4") {
        return Err("spec.ipFamilies: the lab is IPv4-only".into());
    }
    if kind == "ExternalName" {
        let name = spec.external_name.as_deref().unwrap_or_default();
        if name.is_empty() {
            return Err("spec.externalName: Required value".into());
        }
        check_name(name.trim_end_matches('.'), 253)
            .map_err(|message| format!("spec.externalName: {message}"))?;
        if !cluster_ip.is_empty() && !headless {
            return Err("spec.clusterIP: Forbidden: may not be set for ExternalName services".into());
        }
    } else if headless && exposed {
        return Err(format!(
            "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for {kind} services"
        ));
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" && !headless {
        return Err("spec.ports: Required value".into());
    }
    let mut names = BTreeSet::new();
    let mut pairs = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (index, port) in ports.iter().enumerate() {
        let field = format!("spec.ports[{index}]");
        service_port(port, &field, ports.len() > 1)?;
        if let Some(name) = &port.name
            && !names.insert(name.clone())
        {
            return Err(format!("{field}.name: Duplicate value: {name:?}"));
        }
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        if !pairs.insert((port.port, protocol.clone())) {
            return Err(format!("{field}: Duplicate value: {}/{protocol}", port.port));
        }
        if port.node_port.is_some() && !exposed {
            return Err(format!(
                "{field}.nodePort: Forbidden: may not be used when `type` is '{kind}'"
            ));
        }
        if let Some(node_port) = port.node_port
            && !node_ports.insert((node_port, protocol.clone()))
        {
            return Err(format!(
                "{field}.nodePort: Duplicate value: {node_port}/{protocol}"
            ));
        }
    }
    for (key, value) in spec.selector.iter().flatten() {
        label(key, value).map_err(|message| format!("spec.selector: {message}"))?;
    }
    match spec.session_affinity.as_deref().unwrap_or("None") {
        "None" => {
            if spec.session_affinity_config.is_some() {
                return Err("spec.sessionAffinityConfig: Forbidden: must not be set when spec.sessionAffinity is None".into());
            }
        }
        "ClientIP" => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|config| config.client_ip.as_ref())
                .and_then(|client| client.timeout_seconds);
            if timeout.is_some_and(|seconds| !(1..=86400).contains(&seconds)) {
                return Err(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be between 1 and 86400".into(),
                );
            }
        }
        other => return Err(unsupported("spec.sessionAffinity", other, &["ClientIP", "None"])),
    }
    if let Some(policy) = spec.external_traffic_policy.as_deref() {
        if !["Cluster", "Local"].contains(&policy) {
            return Err(unsupported(
                "spec.externalTrafficPolicy",
                policy,
                &["Cluster", "Local"],
            ));
        }
        if !exposed && spec.external_ips.as_ref().is_none_or(Vec::is_empty) {
            return Err(format!(
                "spec.externalTrafficPolicy: Invalid value: {policy:?}: may only be set for externally-accessible services"
            ));
        }
    }
    if let Some(policy) = spec.internal_traffic_policy.as_deref()
        && !["Cluster", "Local"].contains(&policy)
    {
        return Err(unsupported(
            "spec.internalTrafficPolicy",
            policy,
            &["Cluster", "Local"],
        ));
    }
    if spec.health_check_node_port.is_some()
        && !(kind == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local"))
    {
        return Err("spec.healthCheckNodePort: Forbidden: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'".into());
    }
    if let Some(port) = spec.health_check_node_port
        && node_ports.iter().any(|(node_port, _)| *node_port == port)
    {
        return Err(format!(
            "spec.healthCheckNodePort: Invalid value: {port}: provided port is already allocated to spec.ports[].nodePort"
        ));
    }
    for (index, address) in spec.external_ips.iter().flatten().enumerate() {
        if address.parse::<Ipv4Addr>().is_err() {
            return Err(format!(
                "spec.externalIPs[{index}]: Invalid value: {address:?}: must be a valid IPv4 address"
            ));
        }
    }
    if let Some(address) = &spec.load_balancer_ip {
        if kind != "LoadBalancer" {
            return Err(
                "spec.loadBalancerIP: Forbidden: may only be used when `type` is 'LoadBalancer'".into(),
            );
        }
        if address.parse::<Ipv4Addr>().is_err() {
            return Err(format!(
                "spec.loadBalancerIP: Invalid value: {address:?}: must be a valid IPv4 address"
            ));
        }
    }
    Ok(())
}

fn service_port(port: &ServicePort, field: &str, several: bool) -> Result<(), String> {
    match &port.name {
        None if several => {
            return Err(format!(
                "{field}.name: Required value: every port of a multi-port service needs a name"
            ));
        }
        None => {}
        Some(name) => check_name(name, 63).map_err(|message| format!("{field}.name: {message}"))?,
    }
    if port.port == 0 {
        return Err(format!("{field}.port: Required value"));
    }
    port_number(port.port, &format!("{field}.port"))?;
    if let Some(protocol) = &port.protocol
        && !PROTOCOLS.contains(&protocol.as_str())
    {
        return Err(unsupported(&format!("{field}.protocol"), protocol, &PROTOCOLS));
    }
    match &port.target_port {
        None => {}
        Some(IntOrString::Int(number)) => port_number(*number, &format!("{field}.targetPort"))?,
        Some(IntOrString::String(name)) => port_name(name, &format!("{field}.targetPort"))?,
    }
    if let Some(node_port) = port.node_port {
        port_number(node_port, &format!("{field}.nodePort"))?;
    }
    Ok(())
}

pub(super) fn endpoint_slice(slice: &EndpointSlice) -> Result<(), String> {
    if slice.address_type != "IPv4" {
        return Err(unsupported("addressType", &slice.address_type, &["IPv4"]));
    }
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL));
    if service.is_none() {
        return Err(format!(
            "metadata.labels: Required value: {SERVICE_NAME_LABEL} ties the slice to its Service"
        ));
    }
    if slice.endpoints.len() > MAX_SLICE_ENDPOINTS {
        return Err(format!(
            "endpoints: Too many: {}: must have at most {MAX_SLICE_ENDPOINTS} items",
            slice.endpoints.len()
        ));
    }
    for (index, endpoint) in slice.endpoints.iter().enumerate() {
        if endpoint.addresses.is_empty() {
            return Err(format!("endpoints[{index}].addresses: Required value"));
        }
        for (which, address) in endpoint.addresses.iter().enumerate() {
            if address.parse::<Ipv4Addr>().is_err() {
                return Err(format!(
                    "endpoints[{index}].addresses[{which}]: Invalid value: {address:?}: must be a valid IPv4 address"
                ));
            }
        }
    }
    for (index, port) in slice.ports.iter().flatten().enumerate() {
        let field = format!("ports[{index}]");
        if let Some(number) = port.port {
            port_number(number, &format!("{field}.port"))?;
        }
        if let Some(protocol) = &port.protocol
            && !PROTOCOLS.contains(&protocol.as_str())
        {
            return Err(unsupported(&format!("{field}.protocol"), protocol, &PROTOCOLS));
        }
    }
    Ok(())
}

/// The directions a NetworkPolicy may apply to (`spec.policyTypes`).
const POLICY_TYPES: [&str; 2] = ["Ingress", "Egress"];
/// The operators of a label selector's `matchExpressions`.
const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// A NetworkPolicy's spec, as the API server checks it: its selectors, every rule's ports and
/// peers, and the policy types (each at most once).
pub(super) fn network_policy(policy: &NetworkPolicy) -> Result<(), String> {
    // No spec is an empty one, as the API server reads it: every pod of the namespace, ingress.
    let Some(spec) = &policy.spec else {
        return Ok(());
    };
    if let Some(selector) = &spec.pod_selector {
        label_selector(selector, "spec.podSelector")?;
    }
    for (index, rule) in spec.ingress.iter().flatten().enumerate() {
        let field = format!("spec.ingress[{index}]");
        policy_ports(rule.ports.as_deref(), &field)?;
        policy_peers(rule.from.as_deref(), &format!("{field}.from"))?;
    }
    for (index, rule) in spec.egress.iter().flatten().enumerate() {
        let field = format!("spec.egress[{index}]");
        policy_ports(rule.ports.as_deref(), &field)?;
        policy_peers(rule.to.as_deref(), &format!("{field}.to"))?;
    }
    let policy_types = spec.policy_types.as_deref().unwrap_or_default();
    for (index, policy_type) in policy_types.iter().enumerate() {
        let field = format!("spec.policyTypes[{index}]");
        if !POLICY_TYPES.contains(&policy_type.as_str()) {
            return Err(unsupported(&field, policy_type, &POLICY_TYPES));
        }
        if policy_types[..index].contains(policy_type) {
            return Err(format!("{field}: Duplicate value: {policy_type:?}"));
        }
    }
    Ok(())
}

/// The `ports` of the rule at `rule`: a protocol, and a port number (with an optional `endPort`
/// closing a range) or a port name.
fn policy_ports(ports: Option<&[NetworkPolicyPort]>, rule: &str) -> Result<(), String> {
    for (index, port) in ports.unwrap_or_default().iter().enumerate() {
        let field = format!("{rule}.ports[{index}]");
        if let Some(protocol) = &port.protocol
            && !PROTOCOLS.contains(&protocol.as_str())
        {
            return Err(unsupported(&format!("{field}.protocol"), protocol, &PROTOCOLS));
        }
        let end_port =
            |end: i32, message: &str| Err(format!("{field}.endPort: Invalid value: {end}: {message}"));
        match (&port.port, port.end_port) {
            (Some(IntOrString::Int(number)), end) => {
                port_number(*number, &format!("{field}.port"))?;
                if let Some(end) = end {
                    if end < *number {
                        return end_port(end, "must be greater than or equal to `port`");
                    }
                    port_number(end, &format!("{field}.endPort"))?;
                }
            }
            (Some(IntOrString::String(_)), Some(end)) => {
                return end_port(
                    end,
                    "may not be specified when `port` is non-numeric; give the range's first port as a number",
                );
            }
            (Some(IntOrString::String(name)), None) => port_name(name, &format!("{field}.port"))?,
            (None, Some(end)) => return end_port(end, "may not be specified when `port` is not specified"),
            (None, None) => {}
        }
    }
    Ok(())
}

/// The peers of a rule (`from` or `to`): each selects pods, namespaces or an address block.
fn policy_peers(peers: Option<&[NetworkPolicyPeer]>, list: &str) -> Result<(), String> {
    for (index, peer) in peers.unwrap_or_default().iter().enumerate() {
        let field = format!("{list}[{index}]");
        if let Some(selector) = &peer.pod_selector {
            label_selector(selector, &format!("{field}.podSelector"))?;
        }
        if let Some(selector) = &peer.namespace_selector {
            label_selector(selector, &format!("{field}.namespaceSelector"))?;
        }
        if let Some(block) = &peer.ip_block {
            ip_block(block, &format!("{field}.ipBlock"))?;
        }
        let selects = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match (selects, peer.ip_block.is_some()) {
            (false, false) => {
                return Err(format!(
                    "{field}: Required value: must specify a peer: podSelector, namespaceSelector or ipBlock"
                ));
            }
            (true, true) => {
                return Err(format!(
                    "{field}: Forbidden: may not specify both ipBlock and another peer; make them two peers"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// An address block: a CIDR, and exceptions strictly inside it.
fn ip_block(block: &IPBlock, field: &str) -> Result<(), String> {
    if block.cidr.is_empty() {
        return Err(format!("{field}.cidr: Required value"));
    }
    let network = cidr(&block.cidr, &format!("{field}.cidr"))?;
    for (index, except) in block.except.iter().flatten().enumerate() {
        let field = format!("{field}.except[{index}]");
        let excepted = cidr(except, &field)?;
        if !network.contains(&excepted) || excepted.prefix_len() <= network.prefix_len() {
            return Err(format!(
                "{field}: Invalid value: {except:?}: must be a strict subset of `cidr` {:?}",
                block.cidr
            ));
        }
    }
    Ok(())
}

/// A CIDR of either family, for `field`.
fn cidr(text: &str, field: &str) -> Result<IpNet, String> {
    text.parse().map_err(|_| {
        format!(
            "{field}: Invalid value: {text:?}: must be a valid CIDR value (e.g. 10.9.8.0/24 or 2001:db8::/64)"
        )
    })
}

/// A label selector as the API server checks it: valid `matchLabels`, and `matchExpressions`
/// with a valid key, a known operator and the values that operator takes.
fn label_selector(selector: &LabelSelector, field: &str) -> Result<(), String> {
    for (key, value) in selector.match_labels.iter().flatten() {
        label(key, value).map_err(|message| format!("{field}.matchLabels: {message}"))?;
    }
    for (index, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let field = format!("{field}.matchExpressions[{index}]");
        let values = requirement.values.as_deref().unwrap_or_default();
        match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "{field}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!(
                    "{field}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                ));
            }
            operator if SELECTOR_OPERATORS.contains(&operator) => {}
            operator => {
                return Err(format!(
                    "{field}.operator: Invalid value: {operator:?}: not a valid selector operator; use In, NotIn, Exists or DoesNotExist"
                ));
            }
        }
        label_key(&requirement.key).map_err(|message| format!("{field}.key: {message}"))?;
        for (which, value) in values.iter().enumerate() {
            label_value(value).map_err(|message| format!("{field}.values[{which}]: {message}"))?;
        }
    }
    Ok(())
}

/// The checks that need the Lab header: fixed addresses and ports inside the lab's ranges.
/// Errors carry the object they concern.
pub(super) fn service_ranges(file: &LabFile) -> Result<(), (String, String)> {
    let spec = &file.spec;
    for service in &file.services {
        let object = format!("Service {}", podnet_model::ObjectKey::of(&service.metadata));
        let fail = |message: String| (object.clone(), message);
        let Some(service_spec) = &service.spec else {
            continue;
        };
        if let Some(Ok(address)) = service_spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .map(str::parse::<Ipv4Addr>)
        {
            if !spec.service_cidr.contains(&address) {
                return Err(fail(format!(
                    "spec.clusterIP: Invalid value: \"{address}\": provided IP is not in the valid range. The range of valid IPs is {}",
                    spec.service_cidr
                )));
            }
            if address == spec.service_cidr.network()
                || address == next(spec.service_cidr.network())
                || address == spec.service_cidr.broadcast()
            {
                return Err(fail(format!(
                    "spec.clusterIP: Invalid value: \"{address}\": provided IP is reserved (the network address, the first address and the broadcast address of {} are not for services)",
                    spec.service_cidr
                )));
            }
        }
        let (first, last) = spec.node_ports;
        let out_of_range = |field: String, port: i32| {
            fail(format!(
                "{field}: Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {first}-{last}"
            ))
        };
        for (index, port) in service_spec.ports.iter().flatten().enumerate() {
            if let Some(node_port) = port.node_port
                && !(i32::from(first)..=i32::from(last)).contains(&node_port)
            {
                return Err(out_of_range(format!("spec.ports[{index}].nodePort"), node_port));
            }
        }
        if let Some(port) = service_spec.health_check_node_port
            && !(i32::from(first)..=i32::from(last)).contains(&port)
        {
            return Err(out_of_range("spec.healthCheckNodePort".into(), port));
        }
        if let Some(Ok(address)) = service_spec
            .load_balancer_ip
            .as_deref()
            .map(str::parse::<Ipv4Addr>)
            && !spec.load_balancer_pool.contains(address)
        {
            return Err(fail(format!(
                "spec.loadBalancerIP: {address} is not in the lab's load-balancer pool {}",
                spec.load_balancer_pool
            )));
        }
    }
    Ok(())
}

fn next(address: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(address) + 1)
}

fn port_number(number: i32, field: &str) -> Result<(), String> {
    if (1..=65535).contains(&number) {
        Ok(())
    } else {
        Err(format!(
            "{field}: Invalid value: {number}: must be between 1 and 65535, inclusive"
        ))
    }
}

/// An IANA service name, as named ports are: at most 15 lower-case letters, digits and '-',
/// with a letter, not starting or ending with '-' nor holding "--".
fn port_name(name: &str, field: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{field}: Invalid value: {name:?}: must be a port number or an IANA service name (at most 15 lower-case letters, digits and '-', with a letter)"
        ))
    }
}

fn unsupported(field: &str, value: &str, supported: &[&str]) -> String {
    let list: Vec<String> = supported.iter().map(|value| format!("{value:?}")).collect();
    format!(
        "{field}: Unsupported value: {value:?}: supported values: {}",
        list.join(", ")
    )
}

/// A label key (optionally `prefix/`) and value, as Kubernetes allows them.
pub(crate) fn label(key: &str, value: &str) -> Result<(), String> {
    label_key(key)?;
    label_value(value).map_err(|message| format!("{key}: {message}"))
}

/// A label key: a name of at most 63 characters, optionally behind a DNS subdomain prefix and '/'.
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if !label_text(name) || prefix.is_some_and(|prefix| check_name(prefix, 253).is_err()) {
        return Err(format!("{key:?} is not a valid label key"));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters as a label key's name.
fn label_value(value: &str) -> Result<(), String> {
    if !value.is_empty() && !label_text(value) {
        return Err(format!("{value:?} is not a valid label value"));
    }
    Ok(())
}

/// At most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
fn label_text(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Kubernetes' rule for most names (RFC 1123): lower-case letters, digits, '-' and '.', starting
/// and ending with a letter or digit.
pub(crate) fn check_name(name: &str, max: usize) -> Result<(), String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (max > 63 && c == '.'));
    let valid_ends = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if !name.is_empty() && name.len() <= max && valid_chars && valid_ends {
        return Ok(());
    }
    Err(format!(
        "{name:?} is not a valid name: use at most {max} lower-case letters, digits and '-'{}, starting and ending with a letter or digit",
        if max > 63 { " or '.'" } else { "" }
    ))
}

/// The rule for Service names (RFC 1035 labels, as the API server checks them): at most 63
/// lower-case letters, digits and '-', starting with a letter and ending with a letter or digit.
pub(crate) fn check_dns1035_label(name: &str) -> Result<(), String> {
    check_name(name, 63)?;
    if name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Ok(());
    }
    Err(format!(
        "{name:?} is not a valid name: a DNS-1035 label must start with a lower-case letter"
    ))
}
