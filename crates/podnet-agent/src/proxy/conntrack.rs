//! Forgetting UDP flows whose endpoint went away.
//!
//! UDP has no connection end, so a client that keeps sending keeps its conntrack entry, and
//! with it the endpoint NAT chose for the first packet, even after that endpoint is gone. As
//! kube-proxy does, the proxy deletes those entries: the next packet is a new flow and meets
//! the rules again. TCP needs none of this (a dead endpoint resets or times out the
//! connection), and established connections to surviving endpoints are never touched.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use podnet_netlink::conntrack::Flow;

use super::model::{Target, UDP};
use super::plan::PlannedPort;

/// What a change of a UDP service port means for its tracked flows: the endpoints that went,
/// and whether it had none before (flows that met it then must meet the rules again).
struct Change<'a> {
    gone: BTreeSet<&'a Target>,
    was_unreachable: bool,
}

fn change<'a>(before: Option<&'a PlannedPort>, after: Option<&'a PlannedPort>) -> Option<Change<'a>> {
    let port = before.or(after)?;
    if port.protocol != UDP {
        return None;
    }
    let old: BTreeSet<&Target> = before.iter().flat_map(|port| &port.targets).collect();
    let new: BTreeSet<&Target> = after.iter().flat_map(|port| &port.targets).collect();
    let gone: BTreeSet<&Target> = old.difference(&new).copied().collect();
    let was_unreachable = old.is_empty() && !new.is_empty();
    (!gone.is_empty() || was_unreachable).then_some(Change {
        gone,
        was_unreachable,
    })
}

/// Whether a change of a service port from `before` to `after` may leave stale flows (the
/// conntrack table is read only then).
pub fn leaves_stale_flows(before: Option<&PlannedPort>, after: Option<&PlannedPort>) -> bool {
    change(before, after).is_some()
}

/// Which tracked flows must go after a service port changed from `before` to `after`: flows to
/// the port whose endpoint is no longer one, and flows that reached it while it had none.
pub fn stale(before: Option<&PlannedPort>, after: Option<&PlannedPort>, flows: &[Flow]) -> Vec<Flow> {
    let Some(Change {
        gone,
        was_unreachable,
    }) = change(before, after)
    else {
        return Vec::new();
    };
    let port = before.or(after).expect("a change has a port");
    let addresses: BTreeSet<Ipv4Addr> = before
        .iter()
        .chain(after.iter())
        .flat_map(|port| port.addresses.iter().copied())
        .collect();
    let node_ports: BTreeSet<u16> = before
        .iter()
        .chain(after.iter())
        .filter_map(|port| port.node_port)
        .collect();
    flows
        .iter()
        .filter(|flow| {
            let to_service = (addresses.contains(&flow.original.destination)
                && flow.original.destination_port == port.port)
                || node_ports.contains(&flow.original.destination_port);
            let backend = Target {
                address: flow.reply.source,
                port: flow.reply.source_port,
            };
            let translated = flow.reply.source != flow.original.destination;
            to_service && ((translated && gone.contains(&backend)) || (!translated && was_unreachable))
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use podnet_netlink::conntrack::Tuple;

    use super::*;

    fn port(targets: &[[u8; 4]]) -> PlannedPort {
        PlannedPort {
            protocol: UDP,
            addresses: vec![[10, 96, 0, 10].into()],
            port: 53,
            node_port: None,
            targets: targets
                .iter()
                .map(|address| Target {
                    address: (*address).into(),
                    port: 5353,
                })
                .collect(),
        }
    }

    fn flow(backend: [u8; 4]) -> Flow {
        Flow {
            protocol: UDP,
            original: Tuple {
                source: [10, 244, 0, 5].into(),
                destination: [10, 96, 0, 10].into(),
                source_port: 40000,
                destination_port: 53,
            },
            reply: Tuple {
                source: backend.into(),
                destination: [10, 244, 0, 5].into(),
                source_port: if backend == [10, 96, 0, 10] { 53 } else { 5353 },
                destination_port: 40000,
            },
        }
    }

    #[test]
    fn flows_to_removed_endpoints_go_and_the_others_stay() {
        let flows = [flow([10, 244, 1, 2]), flow([10, 244, 2, 2])];
        let stale = stale(
            Some(&port(&[[10, 244, 1, 2], [10, 244, 2, 2]])),
            Some(&port(&[[10, 244, 2, 2]])),
            &flows,
        );
        assert_eq!(stale, [flows[0]]);
    }

    #[test]
    fn flows_that_met_a_service_without_endpoints_go_when_it_gets_one() {
        let untranslated = flow([10, 96, 0, 10]);
        assert_eq!(
            stale(Some(&port(&[])), Some(&port(&[[10, 244, 1, 2]])), &[untranslated]),
            [untranslated]
        );
        let mut tcp = port(&[[10, 244, 1, 2]]);
        tcp.protocol = super::super::model::TCP;
        assert!(
            stale(Some(&tcp), None, &[flow([10, 244, 1, 2])]).is_empty(),
            "TCP is left alone"
        );
    }
}
