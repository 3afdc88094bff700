//! The floor of a bridge ADD: the kernel operations the bridge plugin makes for one attachment
//! (with `bench/cni.sh`'s configuration: a gateway, no routes), issued by one process that is
//! already running, so nothing but the kernel's own work and the netlink round trips is left.
//! `bench/cni.sh` runs it inside its node namespace (the "host" here) and compares podnet's ADD
//! with it, phase by phase.
//!
//!     add_floor COUNT      (prints one JSON object of median microseconds per phase)
//!
//! It creates COUNT namespaces of its own (`pnfloor-PID-N`) and removes them, even on failure.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use podnet_netlink::{Netlink, Netns, VethPair, sysctl};

const BRIDGE: &str = "pnfloor0";

/// The namespaces made for the run, removed when it ends however it ends.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Netns::delete_named(name);
        }
    }
}

fn main() {
    let count: u32 = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(100);
    let names = Namespaces(
        (0..count)
            .map(|index| format!("pnfloor-{}-{index}", std::process::id()))
            .collect(),
    );
    let containers: Vec<_> = names
        .0
        .iter()
        .map(|name| Netns::create_named(name).expect("create a namespace"))
        .collect();
    let host_ns = Netns::current().expect("own namespace");
    let mut host = Netlink::connect().expect("netlink");
    host.add_bridge(BRIDGE, [0x0e, 0, 0, 0, 0, 1], None)
        .expect("bridge");
    let bridge = host.require_link(BRIDGE).expect("bridge").index;
    host.set_up(bridge).expect("bridge up");
    let gateway = IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 98, 0, 1), 16).expect("valid"));
    host.add_address(bridge, gateway).expect("gateway");

    let mut phases: BTreeMap<&str, Vec<u128>> = BTreeMap::new();
    for (index, container_ns) in containers.iter().enumerate() {
        let mut mark = {
            let mut last = Instant::now();
            move |phases: &mut BTreeMap<&str, Vec<u128>>, name| {
                let now = Instant::now();
                phases.entry(name).or_default().push((now - last).as_micros());
                last = now;
            }
        };
        let mut container = Netlink::connect_in(container_ns).expect("netlink in the container");
        mark(&mut phases, "netns");

        let host_veth = format!("vethfloor{index}");
        container
            .add_veth(&VethPair {
                name: "eth0",
                mac: None,
                peer_name: &host_veth,
                peer_netns: Some(&host_ns),
                mtu: None,
            })
            .expect("veth");
        let eth0 = container.require_link("eth0").expect("eth0");
        mark(&mut phases, "veth");

        host.require_link(BRIDGE).expect("bridge");
        host.addresses(Some(bridge)).expect("bridge addresses");
        let peer = host.require_link(&host_veth).expect("host end");
        host.set_controller(peer.index, bridge).expect("bridge port");
        host.set_up(peer.index).expect("host end up");
        sysctl::set("net.ipv4.ip_forward", "1").expect("forwarding");
        mark(&mut phases, "bridge");

        let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 98, 0, 2)) + index as u32);
        container
            .add_address(eth0.index, IpNet::V4(Ipv4Net::new(address, 16).expect("valid")))
            .expect("address");
        container.set_up(eth0.index).expect("eth0 up");
        mark(&mut phases, "container");
    }
    let _ = host.delete_link(bridge);
    drop(containers);
    drop(names);

    let mut medians: BTreeMap<&str, u128> = phases
        .iter_mut()
        .map(|(name, samples)| {
            samples.sort_unstable();
            (*name, samples[samples.len() / 2])
        })
        .collect();
    let total = medians.values().sum();
    medians.insert("total", total);
    println!("{}", serde_json::to_string(&medians).expect("serializes"));
}
