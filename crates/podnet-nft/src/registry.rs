//! Everything podnet tags in a node's kernel, named in one place: its nftables tables, the
//! packet-mark bits it sets, the hook priorities its chains run at, and the route protocol of
//! its routes. Whatever carries one of these is podnet's to change or remove after a restart;
//! nothing else ever is.

use crate::model::{Family, Table};

/// The CNI plugins' table: masquerading (`ipMasq`) and host ports (`portmap`).
pub const CNI_TABLE: Table = Table {
    family: Family::Inet,
    name: "podnet-cni",
    comment: "podnet CNI plugins: ipMasq and portmap",
};

/// The node agent's egress table: pod traffic leaving the cluster takes the node's address.
pub const EGRESS_TABLE: Table = Table {
    family: Family::Ip,
    name: "podnet-egress",
    comment: "podnet agent: masquerade pod traffic leaving the cluster",
};

/// The node agent's service proxy: ClusterIPs, NodePorts, load-balancer and external IPs.
pub const PROXY_TABLE: Table = Table {
    family: Family::Ip,
    name: "podnet-proxy",
    comment: "podnet agent: Kubernetes services (kube-proxy's job)",
};

/// The node agent's NetworkPolicy table: which traffic local pods may send and receive.
pub const POLICY_TABLE: Table = Table {
    family: Family::Ip,
    name: "podnet-policy",
    comment: "podnet agent: Kubernetes NetworkPolicy",
};

/// Mark bit asking the CNI table's postrouting chain to masquerade a host-port connection
/// (the reference portmap plugin's default `markMasqBit`, 13).
pub const HOSTPORT_MASQUERADE_MARK: u32 = 0x2000;

/// Mark bit asking the proxy's postrouting chain to masquerade a service connection (bit 14,
/// kube-proxy's).
pub const SERVICE_MASQUERADE_MARK: u32 = 0x4000;

/// Hook priorities (lower runs first), as nft names them.
pub mod priority {
    /// Destination NAT: `dstnat`.
    pub const DSTNAT: i32 = -100;
    /// Filtering: `filter`.
    pub const FILTER: i32 = 0;
    /// Source NAT: `srcnat`.
    pub const SRCNAT: i32 = 100;
}

/// The route protocol number podnet's routes carry (`ip route ... proto 112`), so the agent can
/// tell its routes from everybody else's after a restart.
pub const ROUTE_PROTOCOL: u8 = 112;
