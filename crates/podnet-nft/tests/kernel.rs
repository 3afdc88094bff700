//! Root tests: transactions and the table probe against the kernel, in a scratch namespace.

use podnet_netlink::Netns;
use podnet_nft::{Error, Family, Transaction, table_exists};

/// Deletes the scratch namespace even when the test panics.
struct Scratch(String);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Netns::delete_named(&self.0);
    }
}

#[test]
fn transactions_apply_atomically_and_the_probe_sees_their_tables() {
    let scratch = Scratch(format!("pnt-nft-{}", std::process::id()));
    let netns = Netns::create_named(&scratch.0).expect("create a namespace (run as root)");
    netns
        .run(|| {
            assert!(!table_exists(Family::Inet, "probe-test").unwrap());
            let mut tx = Transaction::new();
            tx.push("add table inet probe-test");
            tx.push("add set inet probe-test seen { type ipv4_addr; }");
            tx.push("add element inet probe-test seen { 192.0.2.1 }");
            tx.apply().unwrap();
            assert!(table_exists(Family::Inet, "probe-test").unwrap());
            assert!(
                !table_exists(Family::Ip, "probe-test").unwrap(),
                "families are distinct"
            );

            // A transaction with one bad command applies nothing of it.
            let mut bad = Transaction::new();
            bad.push("add element inet probe-test seen { 192.0.2.2 }");
            bad.push("add element inet probe-test missing { 192.0.2.3 }");
            let Err(Error::Rejected { stderr, .. }) = bad.apply() else {
                panic!("accepted")
            };
            assert!(stderr.contains("missing"), "{stderr}");
            let mut check = Transaction::new();
            check.push("get element inet probe-test seen { 192.0.2.2 }");
            assert!(
                check.apply().is_err(),
                "the first command of a rejected transaction was applied"
            );

            // Deleting what may be missing is fine.
            let mut delete = Transaction::new();
            delete.push_delete("element inet probe-test seen { 192.0.2.9 }");
            delete.apply().unwrap();
        })
        .unwrap();
}
