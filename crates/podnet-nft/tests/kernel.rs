//! Root tests: scripts, netlink element transactions and the syncer against the kernel, in a
//! scratch namespace.

use std::net::Ipv4Addr;
use std::process::Command;

use podnet_netlink::Netns;
use podnet_nft::{
    Chain, ChainType, Datum, Element, Error, Family, Hook, Kernel, Operation, Script, Set, Syncer, Table,
    Verdict, table_exists,
};

/// Deletes the scratch namespace even when the test panics.
struct Scratch(String, Netns);

impl Scratch {
    fn new(tag: &str) -> Self {
        let name = format!("pnt-nft-{tag}-{}", std::process::id());
        let netns = Netns::create_named(&name).expect("create a namespace (run as root)");
        Scratch(name, netns)
    }

    fn nft(&self, args: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Netns::delete_named(&self.0);
    }
}

const PROBE: Table = Table {
    family: Family::Inet,
    name: "probe-test",
    comment: "test",
};

#[test]
fn scripts_apply_atomically_and_the_probe_sees_their_tables() {
    let scratch = Scratch::new("script");
    scratch
        .1
        .run(|| {
            assert!(!table_exists(&PROBE).unwrap());
            let seen = Set::new("seen", "type ipv4_addr");
            let element = |last: u8| Element::key([Datum::Ipv4(Ipv4Addr::new(192, 0, 2, last))]);
            let mut script = Script::new();
            script.create_table(&PROBE).add_set(&PROBE, &seen);
            script.elements(&PROBE, "seen", Operation::Add, [&element(1)]);
            script.apply().unwrap();
            assert!(table_exists(&PROBE).unwrap());
            let other_family = Table {
                family: Family::Ip,
                ..PROBE
            };
            assert!(!table_exists(&other_family).unwrap(), "families are distinct");

            // A script with one bad command applies nothing of it.
            let mut bad = Script::new();
            bad.elements(&PROBE, "seen", Operation::Add, [&element(2)]);
            bad.elements(&PROBE, "missing", Operation::Add, [&element(3)]);
            let Err(Error::Rejected { stderr, .. }) = bad.apply() else {
                panic!("accepted")
            };
            assert!(stderr.contains("missing"), "{stderr}");
            // Deleting what may be missing is fine; deleting element 2 for real proves it was
            // never added.
            let mut delete = Script::new();
            delete.delete_elements_if_present(&PROBE, "seen", [&element(9)]);
            delete.apply().unwrap();
            let mut strict = Script::new();
            strict.elements(&PROBE, "seen", Operation::Delete, [&element(2)]);
            assert!(
                strict.apply().is_err(),
                "the first command of a rejected script was applied"
            );
        })
        .unwrap();
}

const PROXY: Table = Table {
    family: Family::Ip,
    name: "syncer-test",
    comment: "test",
};

#[test]
fn the_syncer_sends_element_deltas_over_netlink_that_nft_reads_back() {
    let scratch = Scratch::new("syncer");
    scratch
        .1
        .run(|| {
            let mut syncer: Syncer<u32, Kernel> = Syncer::new(PROXY, Kernel::new());
            syncer.put_set(Set::map(
                "services",
                "type ipv4_addr . inet_proto . inet_service",
                "verdict",
            ));
            syncer.put_set(Set::map(
                "endpoints",
                "typeof ip daddr . meta l4proto . th dport . numgen random mod 2",
                "ip daddr . th dport",
            ));
            syncer.put_chain(Chain::regular(
                "pick-2",
                vec![
                    "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @endpoints"
                        .into(),
                ],
            ));
            syncer.put_chain(Chain::base(
                "prerouting",
                ChainType::Nat,
                Hook::Prerouting,
                -100,
                vec!["ip daddr . meta l4proto . th dport vmap @services".into()],
            ));
            let service = |slot_target: [u8; 4]| {
                let vip = Datum::Ipv4(Ipv4Addr::new(10, 96, 0, 10));
                vec![
                    (
                        "services",
                        Element::verdict(
                            [vip, Datum::Protocol(6), Datum::Port(80)],
                            Verdict::Goto("pick-2".into()),
                        ),
                    ),
                    (
                        "endpoints",
                        Element::mapping(
                            [vip, Datum::Protocol(6), Datum::Port(80), Datum::Number(1)],
                            [Datum::Ipv4(Ipv4Addr::from(slot_target)), Datum::Port(8080)],
                        ),
                    ),
                ]
            };
            syncer.put_group(1, service([10, 244, 1, 5]));
            assert!(syncer.commit().unwrap().rebuilt);
            // Changing one endpoint goes over netlink; nft must read back what the kernel holds.
            syncer.put_group(1, service([10, 244, 2, 7]));
            let committed = syncer.commit().unwrap();
            assert_eq!(
                (committed.added, committed.deleted, committed.structural),
                (1, 1, 0)
            );
        })
        .unwrap();
    let listing = scratch.nft(&["list", "table", "ip", "syncer-test"]);
    assert!(
        listing.contains("10.96.0.10 . tcp . 80 . 1 : 10.244.2.7 . 8080"),
        "{listing}"
    );
    assert!(
        listing.contains("10.96.0.10 . tcp . 80 : goto pick-2"),
        "{listing}"
    );
    assert!(!listing.contains("10.244.1.5"), "{listing}");
}

#[test]
fn ranges_in_concatenations_go_over_netlink_as_first_and_last_keys() {
    let scratch = Scratch::new("ranges");
    let table = Table {
        family: Family::Ip,
        name: "ranges-test",
        comment: "test",
    };
    scratch
        .1
        .run(|| {
            let mut syncer: Syncer<u32, Kernel> = Syncer::new(table, Kernel::new());
            syncer.put_set(
                Set::new(
                    "allowed",
                    "type ipv4_addr . ipv4_addr . inet_proto . inet_service",
                )
                .interval(),
            );
            let rule = |peer: &str, first: u16, last: u16| {
                (
                    "allowed",
                    Element::key([
                        Datum::Prefix("10.0.0.2/32".parse().unwrap()),
                        Datum::Prefix(peer.parse().unwrap()),
                        Datum::Protocol(6),
                        Datum::PortRange(first, last),
                    ]),
                )
            };
            syncer.put_group(1, [rule("10.244.0.0/16", 80, 80)]);
            assert!(syncer.commit().unwrap().rebuilt);
            // Element changes alone: over netlink, ranges as first and last keys.
            syncer.put_group(
                1,
                [rule("10.244.0.0/16", 80, 80), rule("192.0.2.0/24", 8000, 8099)],
            );
            let committed = syncer.commit().unwrap();
            assert_eq!((committed.added, committed.structural), (1, 0));
            syncer.put_group(1, [rule("192.0.2.0/24", 8000, 8099)]);
            assert_eq!(syncer.commit().unwrap().deleted, 1);
        })
        .unwrap();
    let listing = scratch.nft(&["list", "set", "ip", "ranges-test", "allowed"]);
    assert!(
        listing.contains("10.0.0.2 . 192.0.2.0/24 . tcp . 8000-8099"),
        "{listing}"
    );
    assert!(!listing.contains("10.244.0.0/16"), "{listing}");
}
