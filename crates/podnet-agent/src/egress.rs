//! Egress masquerading: pods keep their own address inside the cluster and borrow the node's
//! outside of it.
//!
//! Outside the cluster nobody routes pod subnets back, so a packet from a local pod to an
//! address that is no node's pod subnet (and not multicast) leaves with the node's address
//! (`masquerade`); replies are translated back by conntrack. Pod-to-pod and node-to-pod traffic
//! is never translated, so a server always sees its client's real pod address.

use ipnet::Ipv4Net;
use podnet_nft::Transaction;

use crate::plan::NodePlan;

/// The agent's own nftables table.
pub const TABLE: &str = "podnet-egress";

/// The transaction that (re)creates the table for `plan`: the old table, if any, and the new
/// one are swapped in one atomic commit.
pub fn transaction(plan: &NodePlan) -> Transaction {
    let mut tx = Transaction::new();
    tx.push_fmt(format_args!("add table ip {TABLE}"));
    tx.push_fmt(format_args!("delete table ip {TABLE}"));
    tx.push(render(&plan.pod_cidr, &plan.cluster_cidrs));
    tx
}

fn render(local: &Ipv4Net, cluster: &[Ipv4Net]) -> String {
    let cluster: Vec<String> = cluster.iter().map(ToString::to_string).collect();
    format!(
        "table ip {TABLE} {{
	comment \"podnet agent: masquerade pod traffic leaving the cluster\"
	set cluster-pods {{
		type ipv4_addr
		flags interval
		auto-merge
		elements = {{ {} }}
	}}
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr {local} ip daddr != @cluster-pods ip daddr != 224.0.0.0/4 masquerade
	}}
}}",
        cluster.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerades_only_what_leaves_the_cluster_pod_network() {
        let text = render(
            &"10.244.0.0/24".parse().unwrap(),
            &["10.244.0.0/24".parse().unwrap(), "10.244.1.0/24".parse().unwrap()],
        );
        assert!(
            text.contains("elements = { 10.244.0.0/24, 10.244.1.0/24 }"),
            "{text}"
        );
        assert!(
            text.contains(
                "ip saddr 10.244.0.0/24 ip daddr != @cluster-pods ip daddr != 224.0.0.0/4 masquerade"
            )
        );
    }
}
