//! Nodes: a network namespace per node, plugged into an underlay segment.
//!
//! The underlay is what a cloud VPC or a rack switch is to real nodes: one L2 segment
//! (a bridge in the lab's `LAB_fabric` namespace) that every node's `eth0` is cabled to with a
//! veth pair. On the same segment sits `LAB_external`: a client outside the cluster and, behind
//! it, "the internet" (documentation addresses only, RFC 5737). Nodes route everything that is
//! not local to it; it routes nowhere: the lab is sealed from the host's uplink. Each node also
//! gets a UTS namespace with its name as hostname (hostNetwork pods share it).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use podnet_cni::runtime::NetworkConfigList;
use podnet_netlink::{Netlink, Netns, Route, UtsNs, VethPair, sysctl};
use serde_json::{Value, json};

use crate::controlplane::NODE_NETWORK;
use crate::failures::Failures;
use crate::paths::LabPaths;
use crate::resolv::ResolvConf;
use podnet_model::stable_hash::fnv1a;

/// Name of the underlay bridge inside the fabric namespace.
const UNDERLAY_BRIDGE: &str = "underlay";
/// The external namespace's address on the underlay: the nodes' default gateway.
pub const EXTERNAL_ADDRESS: &str = "192.168.10.254";
/// "The internet" behind the external namespace: one address of each RFC 5737 range.
pub const INTERNET_ADDRESSES: [&str; 3] = ["192.0.2.10", "198.51.100.10", "203.0.113.10"];
/// The internet's DNS server, in the external namespace: every node's resolver, and the
/// cluster DNS's upstream.
pub const INTERNET_DNS: &str = "192.0.2.53";
/// The names it knows, one per documentation domain, each an address of the internet's web
/// server.
pub const INTERNET_NAMES: [(&str, &str); 3] = [
    ("www.example.com", "192.0.2.10"),
    ("web.example.net", "198.51.100.10"),
    ("api.example.org", "203.0.113.10"),
];

/// Every node's resolv.conf (a node's own file, which kubelet hands to `dnsPolicy: Default`
/// pods): the internet's DNS server.
pub fn node_resolv_conf() -> ResolvConf {
    ResolvConf {
        nameservers: vec![INTERNET_DNS.to_owned()],
        ..ResolvConf::default()
    }
}
/// Name of a node's underlay interface.
pub const NODE_UPLINK: &str = "eth0";

/// A failure to build or remove part of the topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A kernel operation failed.
    #[error("{what}: {source}")]
    Kernel {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: podnet_netlink::Error,
    },
    /// A file could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The node object lacks what a node needs.
    #[error("node {0}: {1}")]
    Invalid(String, String),
}

fn kernel(what: impl Into<String>) -> impl FnOnce(podnet_netlink::Error) -> TopologyError {
    let what = what.into();
    move |source| TopologyError::Kernel { what, source }
}

/// A running node (cheap to clone: the namespaces are shared).
#[derive(Debug, Clone)]
pub struct NodeRuntime {
    /// The node's name.
    pub name: String,
    /// Its network namespace.
    pub netns: Arc<Netns>,
    /// Its UTS namespace (hostname = node name).
    pub uts: Arc<UtsNs>,
    /// Its CNI network configuration list (written by its agent, or by the lab for a custom
    /// configuration).
    pub network: PathBuf,
    /// Its address on the underlay.
    pub address: IpAddr,
}

/// The external namespace: "the internet" and a client outside the cluster.
#[derive(Debug)]
pub struct External {
    /// Its network namespace.
    pub netns: Arc<Netns>,
    /// Its UTS namespace (hostname `internet`).
    pub uts: Arc<UtsNs>,
}

/// Creates the fabric namespace with the underlay bridge, and the external namespace on it.
pub fn create_fabric(paths: &LabPaths) -> Result<External, TopologyError> {
    let name = paths.fabric_netns();
    let netns = Netns::create_named(&name).map_err(kernel(format!("create namespace {name}")))?;
    let mut netlink = Netlink::connect_in(&netns).map_err(kernel("connect to the fabric"))?;
    netlink
        .add_bridge(UNDERLAY_BRIDGE, locally_administered_mac(&name), None)
        .map_err(kernel("create the underlay bridge"))?;
    let bridge = netlink
        .require_link(UNDERLAY_BRIDGE)
        .map_err(kernel("find the underlay bridge"))?;
    netlink
        .set_up(bridge.index)
        .map_err(kernel("bring the underlay up"))?;

    let external = paths.external_netns();
    let (external_ns, uplink) = cable(&external, &netns)?;
    let mut link = Netlink::connect_in(&external_ns).map_err(kernel("connect to the external namespace"))?;
    link.add_address(uplink, underlay_address(EXTERNAL_ADDRESS.parse().expect("valid")))
        .map_err(kernel("address the external namespace"))?;
    let lo = link.require_link("lo").map_err(kernel("find lo"))?;
    for address in INTERNET_ADDRESSES.into_iter().chain([INTERNET_DNS]) {
        let address = IpNet::new(address.parse().expect("valid"), 32).expect("host prefix");
        link.add_address(lo.index, address)
            .map_err(kernel("add an internet address"))?;
    }
    std::fs::create_dir_all(paths.root()).map_err(|source| TopologyError::Io {
        what: format!("create {}", paths.root().display()),
        source,
    })?;
    let uts = UtsNs::create(&paths.external_uts(), "internet")
        .map_err(kernel("create the external UTS namespace"))?;
    Ok(External {
        netns: Arc::new(external_ns),
        uts: Arc::new(uts),
    })
}

/// Creates namespace `name` and cables its `eth0` to the underlay; returns the namespace and
/// the index of its (up) `eth0`, with `lo` up too.
fn cable(name: &str, fabric: &Netns) -> Result<(Netns, u32), TopologyError> {
    let netns = Netns::create_named(name).map_err(kernel(format!("create namespace {name}")))?;
    let mut fabric_link = Netlink::connect_in(fabric).map_err(kernel("connect to the fabric"))?;
    let port = fabric_port_name(name);
    fabric_link
        .add_veth(&VethPair {
            name: &port,
            mac: None,
            peer_name: NODE_UPLINK,
            peer_netns: Some(&netns),
            mtu: None,
        })
        .map_err(kernel(format!("cable {name} to the underlay")))?;
    let port_link = fabric_link
        .require_link(&port)
        .map_err(kernel("find the underlay port"))?;
    let bridge = fabric_link
        .require_link(UNDERLAY_BRIDGE)
        .map_err(kernel("find the underlay bridge"))?;
    fabric_link
        .set_controller(port_link.index, bridge.index)
        .map_err(kernel("plug the port"))?;
    fabric_link
        .set_up(port_link.index)
        .map_err(kernel("bring the port up"))?;
    let mut link = Netlink::connect_in(&netns).map_err(kernel(format!("connect to {name}")))?;
    let lo = link.require_link("lo").map_err(kernel("find lo"))?;
    link.set_up(lo.index).map_err(kernel("bring lo up"))?;
    let uplink = link.require_link(NODE_UPLINK).map_err(kernel("find eth0"))?;
    link.set_up(uplink.index).map_err(kernel("bring eth0 up"))?;
    Ok((netns, uplink.index))
}

/// An address on the underlay segment, with its prefix.
fn underlay_address(address: IpAddr) -> IpNet {
    let prefix = NODE_NETWORK.parse::<IpNet>().expect("valid").prefix_len();
    IpNet::new(address, prefix).expect("valid prefix")
}

/// Creates a node: its namespaces, its cable to the underlay, its CNI configuration.
pub fn create_node(
    paths: &LabPaths,
    node: &Node,
    custom_cni: Option<&str>,
) -> Result<NodeRuntime, TopologyError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let invalid = |message: &str| TopologyError::Invalid(name.clone(), message.to_owned());
    let address: IpAddr = podnet_model::node_address(node, "InternalIP")
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| invalid("has no InternalIP"))?;
    build_node(paths, name.clone(), address, custom_cni).inspect_err(|_| {
        // Whatever part of the node exists goes, so that a later attempt starts clean.
        delete_node(paths, &name);
    })
}

fn build_node(
    paths: &LabPaths,
    name: String,
    address: IpAddr,
    custom_cni: Option<&str>,
) -> Result<NodeRuntime, TopologyError> {
    let invalid = |message: &str| TopologyError::Invalid(name.clone(), message.to_owned());
    let dir = paths.node_dir(&name);
    std::fs::create_dir_all(&dir).map_err(|source| TopologyError::Io {
        what: format!("create {}", dir.display()),
        source,
    })?;

    let fabric =
        Netns::open(podnet_netlink::netns::named_path(&paths.fabric_netns()).map_err(kernel("fabric"))?)
            .map_err(kernel("open the fabric namespace"))?;
    let (netns, uplink) = cable(&paths.node_netns(&name), &fabric)?;
    let uts = UtsNs::create(&dir.join("uts"), &name)
        .map_err(kernel(format!("create the UTS namespace of {name}")))?;
    let mut link = Netlink::connect_in(&netns).map_err(kernel(format!("connect to node {name}")))?;
    link.add_address(uplink, underlay_address(address))
        .map_err(kernel(format!("address node {name}")))?;
    // Whatever is not in the cluster goes to the external namespace: "the internet".
    let default =
        Route::new("0.0.0.0/0".parse().expect("valid")).via(EXTERNAL_ADDRESS.parse().expect("valid"));
    link.add_route(&default)
        .map_err(kernel(format!("route node {name} to the external namespace")))?;
    netns
        .run(|| sysctl::set("net.ipv4.ip_forward", "1"))
        .and_then(|result| result)
        .map_err(kernel("enable forwarding"))?;

    let network = dir.join(crate::controlplane::NODE_CNI_CONF);
    if let Some(text) = custom_cni {
        // A custom configuration is the lab's to write; otherwise the node's agent writes one.
        let text = confine(text, &dir);
        NetworkConfigList::parse(&text).map_err(|err| invalid(&format!("CNI configuration: {err}")))?;
        std::fs::write(&network, &text).map_err(|source| TopologyError::Io {
            what: format!("write {}", network.display()),
            source,
        })?;
    }
    Ok(NodeRuntime {
        name,
        netns: Arc::new(netns),
        uts: Arc::new(uts),
        network,
        address,
    })
}

/// Removes a node's namespaces and directory (its pods must be gone already); idempotent.
pub fn delete_node(paths: &LabPaths, name: &str) -> Failures {
    let mut failures = Failures::new();
    let dir = paths.node_dir(name);
    failures.check(
        format!("remove the UTS namespace of {name}"),
        UtsNs::delete(&dir.join("uts")),
    );
    // Deleting the node's namespace deletes eth0 and, with it, its underlay port.
    failures.check(
        format!("delete node {name}"),
        crate::reaper::delete_netns(&paths.node_netns(name)),
    );
    if let Err(source) = std::fs::remove_dir_all(&dir)
        && source.kind() != std::io::ErrorKind::NotFound
    {
        failures.push(format!("remove {}: {source}", dir.display()));
    }
    failures
}

/// A user's CNI configuration, with the plugins' files kept inside the lab's node directory.
fn confine(text: &str, dir: &std::path::Path) -> String {
    let mut value: Value = serde_json::from_str(text).expect("validated when the file was parsed");
    let plugins: Vec<&mut Value> = match value.get_mut("plugins").and_then(Value::as_array_mut) {
        Some(list) => list.iter_mut().collect(),
        None => vec![&mut value],
    };
    for plugin in plugins {
        if ["bridge", "portmap"].contains(&plugin["type"].as_str().unwrap_or_default())
            && plugin.get("stateDir").is_none()
        {
            plugin["stateDir"] = json!(dir.join("cni-state"));
        }
        if plugin["ipam"]["type"] == "host-local" && plugin["ipam"].get("dataDir").is_none() {
            plugin["ipam"]["dataDir"] = json!(dir.join("ipam"));
        }
    }
    value.to_string()
}

/// The underlay port of a namespace (`LAB_NODE`, `LAB_external`): a short name derived from
/// the namespace's name, stable across restarts.
fn fabric_port_name(netns: &str) -> String {
    format!("n-{:08x}", fnv1a(netns.as_bytes()) as u32)
}

fn locally_administered_mac(seed: &str) -> [u8; 6] {
    let bytes = fnv1a(seed.as_bytes()).to_be_bytes();
    [
        (bytes[0] & 0xfe) | 0x02,
        bytes[1],
        bytes[2],
        bytes[3],
        bytes[4],
        bytes[5],
    ]
}

/// The directory of the lab's CNI plugins.
pub fn cni_bin_dirs(paths: &LabPaths) -> Vec<PathBuf> {
    vec![paths.cni_bin()]
}
