//! Root tests of the typed netlink operations against the real kernel, each in namespaces of
//! its own that are deleted even when the test fails.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use podnet_netlink::{
    FdbEntry, LinkKind, Neighbour, Netlink, Netns, Route, RouteProtocol, UtsNs, VethPair, Vxlan, sysctl,
};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named namespace deleted on drop.
struct Scratch {
    name: String,
    netns: Netns,
}

impl Scratch {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create network namespaces: run them as root"
        );
        let name = format!(
            "pnt-nl-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let netns = Netns::create_named(&name).expect("create namespace");
        Scratch { name, netns }
    }

    fn netlink(&self) -> Netlink {
        Netlink::connect_in(&self.netns).expect("connect")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Netns::delete_named(&self.name);
    }
}

#[test]
fn named_namespaces_are_created_pinned_and_deleted_idempotently() {
    let scratch = Scratch::new();
    assert!(Netns::exists_named(&scratch.name));
    assert!(
        Netns::create_named(&scratch.name).is_err(),
        "a second create must fail"
    );
    let lo = scratch.netlink().require_link("lo").unwrap();
    assert!(!lo.up, "a new namespace's lo is down");
    assert_ne!(
        scratch.netns.id().unwrap(),
        Netns::current().unwrap().id().unwrap()
    );
    Netns::delete_named(&scratch.name).unwrap();
    Netns::delete_named(&scratch.name).unwrap();
    assert!(!Netns::exists_named(&scratch.name));
    assert!(Netns::open("/run/netns/pnt-does-not-exist").is_err());
    assert!(Netns::create_named("a/b").is_err());
}

#[test]
fn a_veth_pair_spans_two_namespaces_and_a_bridge_port_takes_options() {
    let (host, container) = (Scratch::new(), Scratch::new());
    let mut netlink = host.netlink();
    netlink
        .add_bridge("br-test", [0x02, 0, 0, 0, 0, 1], Some(1400))
        .unwrap();
    assert!(
        netlink
            .add_bridge("br-test", [0x02, 0, 0, 0, 0, 1], None)
            .unwrap_err()
            .is_exists()
    );
    let bridge = netlink.require_link("br-test").unwrap();
    assert_eq!(
        (bridge.kind, bridge.mtu, bridge.mac),
        (LinkKind::Bridge, 1400, Some([0x02, 0, 0, 0, 0, 1]))
    );

    let mut inside = container.netlink();
    inside
        .add_veth(&VethPair {
            name: "eth0",
            mac: None,
            peer_name: "vethtest",
            peer_netns: Some(&host.netns),
            mtu: Some(1400),
        })
        .unwrap();
    let eth0 = inside.require_link("eth0").unwrap();
    let peer = netlink.require_link("vethtest").unwrap();
    assert_eq!(
        (eth0.kind.clone(), peer.kind.clone()),
        (LinkKind::Veth, LinkKind::Veth)
    );
    assert_eq!(eth0.peer_index, Some(peer.index));
    netlink.set_controller(peer.index, bridge.index).unwrap();
    netlink.set_hairpin(peer.index, true).unwrap();
    netlink.set_up(peer.index).unwrap();
    assert_eq!(
        netlink.require_link("vethtest").unwrap().controller,
        Some(bridge.index)
    );
    let detail = std::process::Command::new("ip")
        .args(["-n", &host.name, "-d", "link", "show", "vethtest"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&detail.stdout).contains("hairpin on"));

    inside.set_down(eth0.index).unwrap();
    inside.set_name(eth0.index, "renamed0").unwrap();
    assert!(inside.link("eth0").unwrap().is_none());
    inside.delete_link(eth0.index).unwrap();
    assert!(
        netlink.link("vethtest").unwrap().is_none(),
        "deleting one end deletes both"
    );
}

#[test]
fn addresses_and_tagged_routes_are_added_listed_and_removed() {
    let scratch = Scratch::new();
    let mut netlink = scratch.netlink();
    netlink.add_bridge("br0", [0x02, 0, 0, 0, 0, 2], None).unwrap();
    let bridge = netlink.require_link("br0").unwrap();
    netlink.set_up(bridge.index).unwrap();
    netlink
        .add_address(bridge.index, "10.77.0.1/24".parse().unwrap())
        .unwrap();
    assert!(
        netlink
            .add_address(bridge.index, "10.77.0.1/24".parse().unwrap())
            .unwrap_err()
            .is_exists()
    );
    let addresses = netlink.addresses(Some(bridge.index)).unwrap();
    assert!(addresses.iter().any(|a| a.address.to_string() == "10.77.0.1/24"));

    let mut route = Route::new("10.78.0.0/24".parse().unwrap())
        .via(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9)))
        .dev(bridge.index);
    route.protocol = RouteProtocol::Other(112);
    netlink.add_route(&route).unwrap();
    netlink.replace_route(&route).unwrap();
    let ours: Vec<Route> = netlink
        .routes()
        .unwrap()
        .into_iter()
        .filter(|r| r.protocol == RouteProtocol::Other(112))
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].gateway, route.gateway);
    netlink.delete_route(&route).unwrap();
    assert!(
        !netlink
            .routes()
            .unwrap()
            .iter()
            .any(|r| r.protocol == RouteProtocol::Other(112))
    );
    netlink
        .delete_address(bridge.index, "10.77.0.1/24".parse().unwrap())
        .unwrap();
    assert!(
        netlink
            .addresses(Some(bridge.index))
            .unwrap()
            .iter()
            .all(|a| a.address.addr().is_ipv6())
    );
}

#[test]
fn vxlan_links_carry_static_neighbours_and_fdb_entries() {
    let scratch = Scratch::new();
    let mut netlink = scratch.netlink();
    netlink.add_bridge("uplink", [0x02, 0, 0, 0, 0, 3], None).unwrap();
    let uplink = netlink.require_link("uplink").unwrap();
    netlink
        .add_address(uplink.index, "192.168.50.1/24".parse().unwrap())
        .unwrap();
    let wanted = Vxlan {
        name: "podnet.7".into(),
        vni: 7,
        port: 8472,
        local: Ipv4Addr::new(192, 168, 50, 1),
        underlay: uplink.index,
        mtu: 1450,
        mac: [0x0e, 0, 192, 168, 50, 1],
        udp_checksum: false,
    };
    netlink.add_vxlan(&wanted).unwrap();
    assert_eq!(netlink.vxlan("podnet.7").unwrap(), Some(wanted.clone()));
    assert_eq!(
        netlink.vxlan("uplink").unwrap(),
        None,
        "a bridge is not a VXLAN link"
    );
    let index = netlink.require_link("podnet.7").unwrap().index;

    let neighbour = Neighbour {
        index,
        ip: "10.244.1.0".parse().unwrap(),
        mac: [0x0e, 0, 192, 168, 50, 2],
    };
    netlink.replace_neighbour(&neighbour).unwrap();
    netlink.replace_neighbour(&neighbour).unwrap();
    assert_eq!(netlink.neighbours(index).unwrap(), vec![neighbour]);
    let entry = FdbEntry {
        index,
        mac: neighbour.mac,
        destination: Ipv4Addr::new(192, 168, 50, 2),
    };
    netlink.replace_fdb(&entry).unwrap();
    netlink.replace_fdb(&entry).unwrap();
    assert_eq!(netlink.fdb(index).unwrap(), vec![entry]);
    netlink.delete_fdb(&entry).unwrap();
    netlink.delete_neighbour(&neighbour).unwrap();
    assert!(netlink.fdb(index).unwrap().is_empty());
    assert!(netlink.neighbours(index).unwrap().is_empty());
}

#[test]
fn sysctls_and_uts_namespaces_belong_to_their_namespace() {
    let scratch = Scratch::new();
    let host_forwarding = sysctl::get("net.ipv4.ip_forward").unwrap();
    scratch
        .netns
        .run(|| sysctl::set("net.ipv4.ip_forward", "1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        scratch
            .netns
            .run(|| sysctl::get("net.ipv4.ip_forward"))
            .unwrap()
            .unwrap(),
        "1"
    );
    assert_eq!(
        sysctl::get("net.ipv4.ip_forward").unwrap(),
        host_forwarding,
        "the caller's namespace is untouched"
    );

    let dir = std::env::temp_dir().join(format!("pnt-uts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pin = dir.join("uts");
    let uts = UtsNs::create(&pin, "sandbox-host").unwrap();
    // A file of the sandbox's own over one of the host's, seen only inside.
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
    let files = [(resolv.clone(), PathBuf::from("/etc/resolv.conf"))];
    let view = podnet_netlink::SandboxView {
        netns: &scratch.netns,
        uts: Some(&uts),
        files: &files,
    };
    let (hostname, seen) = podnet_netlink::netns::run_in(view, || {
        (
            nix::unistd::gethostname().unwrap(),
            std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        )
    })
    .unwrap();
    assert_eq!(hostname.to_str(), Some("sandbox-host"));
    assert_eq!(seen, "nameserver 192.0.2.53\n");
    assert_ne!(nix::unistd::gethostname().unwrap().to_str(), Some("sandbox-host"));
    assert_ne!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap(),
        seen,
        "the host's is untouched"
    );
    drop(uts);
    UtsNs::delete(&pin).unwrap();
    UtsNs::delete(&pin).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
