//! Announcing load-balancer addresses on the node's segment, as MetalLB's layer-2 mode does.
//!
//! Exactly one node answers ARP for each address: every agent computes the same winner from
//! the same inputs (a hash of node name and address, the lowest wins, among the nodes allowed:
//! all of them, or with `externalTrafficPolicy: Local` those running a ready endpoint), and
//! the winner holds the address (a /32 on `lo`, tagged with podnet's protocol), so the kernel
//! answers ARP for it on the segment. Traffic to the address then arrives at that node, whose
//! service rules translate it before it could be delivered locally (kube-proxy's IPVS mode
//! holds its addresses the same way). A proxy-ARP entry would not do: the kernel only answers
//! for it when the address is routed out of another link than the one asking.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use podnet_model::stable_hash::fnv1a;

/// The node that announces `address`, among `nodes` (all known nodes) restricted to
/// `eligible` when given.
pub fn winner<'a>(
    address: Ipv4Addr,
    nodes: impl Iterator<Item = &'a str>,
    eligible: Option<&BTreeSet<Box<str>>>,
) -> Option<&'a str> {
    nodes
        .filter(|node| eligible.is_none_or(|eligible| eligible.contains(*node)))
        .min_by_key(|node| (fnv1a(format!("{node}#{address}").as_bytes()), *node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_computes_the_same_single_winner_among_the_eligible() {
        let nodes = ["n1", "n2", "n3"];
        let address = Ipv4Addr::new(192, 168, 10, 200);
        let first = winner(address, nodes.iter().copied(), None).unwrap();
        let reversed: Vec<&str> = nodes.iter().rev().copied().collect();
        assert_eq!(winner(address, reversed.iter().copied(), None), Some(first));
        let only_n2: BTreeSet<Box<str>> = BTreeSet::from(["n2".into()]);
        assert_eq!(winner(address, nodes.iter().copied(), Some(&only_n2)), Some("n2"));
        assert_eq!(
            winner(address, nodes.iter().copied(), Some(&BTreeSet::new())),
            None
        );
    }
}
