//! The lab file: a small `Lab` header and ordinary Kubernetes YAML.
//!
//! ```yaml
//! apiVersion: podnet.dev/v1alpha1
//! kind: Lab
//! metadata: {name: demo}
//! spec:
//!   nodes: 2                 # or a list: [{name: k8s-w1}, {name: k8s-w2}]
//!   podCIDR: 10.244.0.0/16   # the cluster CIDR; every node gets a /24 of it
//!   backend: vxlan           # how pods reach other nodes: vxlan (default) or host-gw
//! ---
//! apiVersion: v1
//! kind: Pod
//! ...
//! ```
//!
//! Parsing validates everything that can be checked without a running lab, so a bad file is
//! refused before anything is created, with the document and field that are wrong.

use std::fmt;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec};
use serde::Deserialize;
use serde_json::Value;

use crate::workload;

/// The `apiVersion` of the lab header.
pub const API_VERSION: &str = "podnet.dev/v1alpha1";
/// Node names the lab uses for namespaces of its own.
const RESERVED_NODE_NAMES: [&str; 2] = ["fabric", "external"];
/// The longest lab name (it prefixes every namespace name of the lab).
pub const MAX_LAB_NAME: usize = 32;
/// The most nodes a lab may have.
const MAX_NODES: usize = 64;

/// The most replicas a Deployment may ask for: more than a lab's nodes can give addresses to,
/// low enough that a typo cannot make the control plane exhaust memory.
const MAX_REPLICAS: i32 = 1000;

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
}

/// The lab header's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// The lab's name; it prefixes every namespace the lab creates.
    pub name: String,
    /// Node names, in order.
    pub nodes: Vec<String>,
    /// The cluster's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// Prefix length of each node's slice of the pod CIDR.
    pub node_cidr_mask_size: u8,
    /// A CNI network configuration replacing the lab's default (single-node labs only).
    pub cni: Option<String>,
    /// How pod traffic crosses between nodes.
    pub backend: podnet_agent::Backend,
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
            (0, _) => write!(f, "{}", self.message),
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
        }
    }
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

/// Parses and validates a lab file.
pub fn parse(text: &str) -> Result<LabFile, SpecError> {
    let file_error = |message: String| SpecError {
        document: 0,
        object: None,
        message,
    };
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|err| file_error(format!("not valid YAML: {err}")))?;
    let mut spec = None;
    let (mut namespaces, mut pods, mut deployments) = (Vec::new(), Vec::new(), Vec::new());
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
        let expected_api = match kind.as_str() {
            "Lab" => API_VERSION,
            "Namespace" | "Pod" => "v1",
            "Deployment" => "apps/v1",
            "" => return Err(error(None, "has no \"kind\"".into())),
            other => {
                return Err(error(
                    Some(format!("{other} {name}")),
                    format!(
                        "kind {other} is not supported by podnet lab yet (it runs Namespace, Pod and Deployment)"
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
        let object = |scoped: bool| {
            Some(if scoped {
                format!("{kind} {namespace}/{name}")
            } else {
                format!("{kind} {name}")
            })
        };
        let decode_error = |scoped: bool, err: serde_json::Error| error(object(scoped), err.to_string());
        match kind.as_str() {
            "Lab" => {
                if spec.is_some() {
                    return Err(error(
                        object(false),
                        "a lab file has exactly one Lab document".into(),
                    ));
                }
                let header: LabDocument =
                    serde_json::from_value(document).map_err(|err| decode_error(false, err))?;
                spec = Some(lab_spec(header).map_err(|message| error(object(false), message))?);
            }
            "Namespace" => {
                check_name(&name, 63).map_err(|message| error(object(false), message))?;
                namespaces.push(serde_json::from_value(document).map_err(|err| decode_error(false, err))?);
            }
            "Pod" => {
                check_name(&namespace, 63)
                    .map_err(|message| error(object(true), format!("namespace: {message}")))?;
                check_name(&name, 253).map_err(|message| error(object(true), message))?;
                let pod: Pod = serde_json::from_value(document).map_err(|err| decode_error(true, err))?;
                check_pod_spec(pod.spec.as_ref()).map_err(|message| error(object(true), message))?;
                pods.push(pod);
            }
            "Deployment" => {
                check_name(&namespace, 63)
                    .map_err(|message| error(object(true), format!("namespace: {message}")))?;
                check_name(&name, 253).map_err(|message| error(object(true), message))?;
                let deployment: Deployment =
                    serde_json::from_value(document).map_err(|err| decode_error(true, err))?;
                check_deployment(&deployment).map_err(|message| error(object(true), message))?;
                deployments.push(deployment);
            }
            _ => unreachable!("kinds are checked above"),
        }
    }
    let file = LabFile {
        spec: spec.ok_or_else(|| {
            file_error(format!(
                "no Lab document: start the file with\n  apiVersion: {API_VERSION}\n  kind: Lab\n  metadata: {{name: demo}}"
            ))
        })?,
        namespaces,
        pods,
        deployments,
    };
    check_unique(&file)?;
    Ok(file)
}

fn lab_spec(header: LabDocument) -> Result<LabSpec, String> {
    let name = header.metadata.name;
    check_name(&name, MAX_LAB_NAME).map_err(|message| format!("metadata.name: {message}"))?;
    let too_many = || format!("spec.nodes: a lab has 1 to {MAX_NODES} nodes");
    let nodes: Vec<String> = match header.spec.nodes {
        Nodes::Count(count) if (1..=MAX_NODES).contains(&count) => {
            (1..=count).map(|index| format!("node{index}")).collect()
        }
        Nodes::Count(_) => return Err(too_many()),
        Nodes::Named(named) => named.into_iter().map(|node| node.name).collect(),
    };
    if nodes.is_empty() || nodes.len() > MAX_NODES {
        return Err(too_many());
    }
    for (index, node) in nodes.iter().enumerate() {
        check_name(node, 63).map_err(|message| format!("spec.nodes[{index}]: {message}"))?;
        if RESERVED_NODE_NAMES.contains(&node.as_str()) {
            return Err(format!(
                "spec.nodes[{index}]: {node:?} is reserved for the lab's own namespaces"
            ));
        }
        if nodes[..index].contains(node) {
            return Err(format!("spec.nodes[{index}]: node {node:?} is listed twice"));
        }
    }
    let pod_cidr: Ipv4Net = match header.spec.pod_cidr.parse::<IpNet>() {
        Ok(IpNet::V4(net)) if net.network() == net.addr() => net,
        Ok(IpNet::V4(net)) => {
            return Err(format!(
                "spec.podCIDR: {net} has host bits set; use {}",
                net.trunc()
            ));
        }
        Ok(IpNet::V6(_)) => return Err("spec.podCIDR: only IPv4 pod CIDRs are supported".into()),
        Err(_) => {
            return Err(format!(
                "spec.podCIDR: {:?} is not a CIDR (e.g. 10.244.0.0/16)",
                header.spec.pod_cidr
            ));
        }
    };
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
            podnet_agent::Backend::Vxlan {
                vni: vxlan.vni,
                port: vxlan.port,
            }
        }
        "host-gw" => podnet_agent::Backend::HostGw,
        other => {
            return Err(format!(
                "spec.backend: {other:?} is not a backend (vxlan or host-gw)"
            ));
        }
    };
    Ok(LabSpec {
        name,
        nodes,
        pod_cidr,
        node_cidr_mask_size: mask,
        cni,
        backend,
    })
}

fn check_pod_spec(spec: Option<&PodSpec>) -> Result<(), String> {
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
    Ok(())
}

fn check_deployment(deployment: &Deployment) -> Result<(), String> {
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
    check_pod_spec(spec.template.spec.as_ref()).map_err(|message| format!("spec.template: {message}"))
}

fn check_unique(file: &LabFile) -> Result<(), SpecError> {
    let mut seen = std::collections::HashSet::new();
    let keys = file
        .namespaces
        .iter()
        .map(|ns| ("Namespace", podnet_model::ObjectKey::of(&ns.metadata)))
        .chain(
            file.pods
                .iter()
                .map(|pod| ("Pod", podnet_model::ObjectKey::of(&pod.metadata))),
        )
        .chain(
            file.deployments
                .iter()
                .map(|d| ("Deployment", podnet_model::ObjectKey::of(&d.metadata))),
        );
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
        assert_eq!(file.spec.nodes, ["node1"]);
        assert_eq!(file.spec.pod_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(file.pods.len(), 1);
    }

    #[test]
    fn named_nodes_and_custom_cni() {
        let file = parse(&format!(
            "{HEADER}spec:\n  nodes: [{{name: k8s-w1}}]\n  cni: {{cniVersion: \"0.2.0\", name: demo_br, type: bridge}}\n"
        ))
        .unwrap();
        assert_eq!(file.spec.nodes, ["k8s-w1"]);
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
                format!("{HEADER}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\n"),
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
                    "spec:\n  initContainers:\n  - {name: i, image: busybox, command: [\"true\"]}\n  containers:\n  - {name: a, image: nginx}\n",
                ),
                "does not run init containers",
            ),
            (
                format!("{HEADER}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: Web\n"),
                "not a valid name",
            ),
            ("{{{".to_owned(), "not valid YAML"),
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
}
