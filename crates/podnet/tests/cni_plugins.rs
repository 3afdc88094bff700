//! Root tests of podnet's CNI plugins, driven exactly as a runtime drives them: the plugin
//! executable, CNI_* variables, the configuration on stdin, run inside a node namespace.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::*;

/// A node namespace with podnet's plugins and private data and state directories.
struct Node {
    netns: TestNetns,
    bin: CniBin,
    dir: TestDir,
}

impl Node {
    fn new() -> Self {
        let netns = TestNetns::new("node");
        // A real node's loopback is up (localhost clients of host ports need it).
        netns.exec_ok("ip", &["link", "set", "lo", "up"]);
        Node {
            netns,
            bin: CniBin::new(),
            dir: TestDir::new("data"),
        }
    }

    /// A bridge + host-local configuration on 10.88.7.0/24, changed by `extra` (merged in;
    /// `"ipam"` keys are merged into the ipam section).
    fn conf(&self, version: &str, extra: Value) -> String {
        let mut conf = json!({
            "cniVersion": version,
            "name": "testnet",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": true,
            "stateDir": self.dir.join("state"),
            "ipam": {"type": "host-local", "subnet": "10.88.7.0/24", "dataDir": self.dir.join("ipam")},
        });
        for (key, value) in extra.as_object().unwrap() {
            if key == "ipam" {
                let ipam = conf["ipam"].as_object_mut().unwrap();
                ipam.extend(value.as_object().unwrap().clone());
            } else {
                conf[key] = value.clone();
            }
        }
        conf.to_string()
    }

    fn call(&self, plugin: &str, command: &str) -> Invocation<'_> {
        Invocation::new(&self.netns, &self.bin, plugin, command)
    }

    fn add(&self, id: &str, container: &TestNetns, conf: &str) -> PluginOutput {
        self.call("bridge", "ADD")
            .attachment(id, Some(container), "eth0")
            .run(conf)
    }

    fn del(&self, id: &str, container: Option<&TestNetns>, conf: &str) -> PluginOutput {
        self.call("bridge", "DEL")
            .attachment(id, container, "eth0")
            .run(conf)
    }

    fn ipam_files(&self) -> Vec<String> {
        files_below(&self.dir.join("ipam/testnet"))
            .into_iter()
            .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    fn records(&self) -> Vec<String> {
        files_below(&self.dir.join("state"))
            .into_iter()
            .filter(|name| name.ends_with(".json"))
            .collect()
    }

    /// The elements line of a set or map of podnet's table (empty when it has none).
    fn nft_set(&self, set: &str) -> String {
        let kind = if set.starts_with("portmap-any") || set.starts_with("portmap-addr") {
            "map"
        } else {
            "set"
        };
        self.netns
            .exec_ok("nft", &["list", kind, "inet", "podnet-cni", set])
            .lines()
            .filter(|line| line.contains("elements"))
            .collect()
    }

    fn links(&self) -> String {
        self.netns.exec_ok("ip", &["-o", "link", "show"])
    }
}

fn ip_of(result: &Value, index: usize) -> String {
    result["ips"][index]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn install_copies_one_executable_links_the_plugins_to_it_and_respects_other_files() {
    let dir = TestDir::new("install");
    let install = |force: bool| {
        let mut command = Command::new(podnet());
        command.args(["cni", "install", "--dir"]).arg(&dir.path);
        if force {
            command.arg("--force");
        }
        command.output().unwrap()
    };
    assert!(install(false).status.success());
    // A copy of its own (the directory works where podnet's files are not, as on a host
    // a DaemonSet installs onto), and relative links to it.
    let executable = dir.join("podnet-cni");
    let meta = std::fs::symlink_metadata(&executable).unwrap();
    assert!(meta.file_type().is_file(), "a copy, not a link");
    let beside = podnet().with_file_name("podnet-cni");
    let source = if beside.exists() {
        beside
    } else {
        podnet().to_owned()
    };
    assert_eq!(
        std::fs::read(&executable).unwrap(),
        std::fs::read(source).unwrap()
    );
    for name in ["bridge", "host-local", "loopback", "portmap"] {
        assert_eq!(
            std::fs::read_link(dir.join(name)).unwrap(),
            Path::new("podnet-cni")
        );
    }
    let version = Command::new(dir.join("bridge"))
        .env("CNI_COMMAND", "VERSION")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("supportedVersions"));
    assert!(install(false).status.success(), "twice is fine");

    // Another plugin of the same name is left alone unless forced; an old podnet link is not.
    std::fs::remove_file(dir.join("portmap")).unwrap();
    std::fs::write(dir.join("portmap"), "#!/bin/sh\n").unwrap();
    std::fs::remove_file(dir.join("loopback")).unwrap();
    std::os::unix::fs::symlink("/usr/local/bin/podnet", dir.join("loopback")).unwrap();
    let refused = install(false);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("portmap exists and is not podnet's"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        std::fs::symlink_metadata(dir.join("portmap")).unwrap().is_file(),
        "nothing changed"
    );
    assert!(install(true).status.success());
    for name in ["loopback", "portmap"] {
        assert_eq!(
            std::fs::read_link(dir.join(name)).unwrap(),
            Path::new("podnet-cni")
        );
    }
}

#[test]
fn version_lists_every_supported_version_in_the_version_asked() {
    let node = Node::new();
    let supported = json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    // The spec: cniVersion is "the value of cniVersion specified on input"; without one, the
    // newest.
    for (stdin, answered) in [
        ("", "1.1.0"),
        ("{not json", "1.1.0"),
        (r#"{"cniVersion":"0.3.1"}"#, "0.3.1"),
        (r#"{"cniVersion":"1.0.0"}"#, "1.0.0"),
        (r#"{"cniVersion":"9.9.9"}"#, "9.9.9"),
    ] {
        let answer = node.call("bridge", "VERSION").run(stdin).ok();
        assert_eq!(
            answer,
            json!({"cniVersion": answered, "supportedVersions": supported}),
            "{stdin}"
        );
    }
}

#[test]
fn add_answers_in_the_shape_of_each_cni_version() {
    let node = Node::new();
    for (index, version) in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let container = TestNetns::new("c");
        let id = format!("ctr{index}");
        let conf = node.conf(version, json!({}));
        let result = node.add(&id, &container, &conf).ok();
        assert_eq!(result["cniVersion"], json!(version));
        if version.starts_with("0.1") || version.starts_with("0.2") {
            assert!(
                result["ip4"]["ip"].as_str().unwrap().starts_with("10.88.7."),
                "{result}"
            );
            assert_eq!(result["ip4"]["gateway"], json!("10.88.7.1"));
            assert!(result.get("interfaces").is_none());
        } else {
            let interfaces = result["interfaces"].as_array().unwrap();
            assert_eq!(interfaces.len(), 3);
            assert_eq!(interfaces[0]["name"], json!("cni0"));
            assert!(interfaces[1]["name"].as_str().unwrap().starts_with("veth"));
            assert_eq!(interfaces[2]["name"], json!("eth0"));
            assert_eq!(interfaces[2]["sandbox"], json!(container.path()));
            assert_eq!(result["ips"][0]["interface"], json!(2));
            assert_eq!(
                result["ips"][0].get("version").is_some(),
                !version.starts_with('1'),
                "{result}"
            );
            assert_eq!(interfaces[2].get("mtu").is_some(), *version == "1.1.0");
        }
        node.del(&id, Some(&container), &conf).ok();
    }
    assert!(node.ipam_files().is_empty());
}

#[test]
fn containers_on_one_bridge_reach_each_other_the_gateway_and_the_outside_masqueraded() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({"ipam": {"routes": [{"dst": "0.0.0.0/0"}]}}));
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    let ip_a = ip_of(&node.add("a", &a, &conf).ok(), 0);
    let ip_b = ip_of(&node.add("b", &b, &conf).ok(), 0);
    assert_ne!(ip_a, ip_b);
    a.exec_ok("ping", &["-c1", "-W2", &ip_b]);
    b.exec_ok("ping", &["-c1", "-W2", &ip_a]);
    a.exec_ok("ping", &["-c1", "-W2", "10.88.7.1"]);
    assert!(
        a.exec_ok("ip", &["route"])
            .contains("default via 10.88.7.1 dev eth0")
    );
    assert_eq!(
        node.netns
            .exec_ok("sysctl", &["-n", "net.ipv4.ip_forward"])
            .trim(),
        "1"
    );
    assert!(node.nft_set("masq-v4").contains("10.88.7.0/24"));

    // "The internet": a documentation-range address behind the node, seen from a container.
    let outside = TestNetns::new("out");
    node.netns.exec_ok(
        "ip",
        &[
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ],
    );
    node.netns
        .exec_ok("ip", &["addr", "add", "198.51.100.1/24", "dev", "uplink"]);
    node.netns.exec_ok("ip", &["link", "set", "uplink", "up"]);
    outside.exec_ok("ip", &["addr", "add", "198.51.100.2/24", "dev", "eth0"]);
    outside.exec_ok("ip", &["link", "set", "eth0", "up"]);
    // The outside answers a ping, and the node's conntrack table shows the container's flow
    // translated to the node's uplink address.
    a.exec_ok("ping", &["-c1", "-W2", "198.51.100.2"]);
    let conntrack = node.netns.exec_ok("conntrack", &["-L", "-p", "icmp"]);
    assert!(
        conntrack
            .lines()
            .any(|line| line.contains(&format!("src={ip_a}")) && line.contains("dst=198.51.100.1")),
        "no masqueraded entry in\n{conntrack}"
    );
}

#[test]
fn refused_input_gets_a_spec_error_and_changes_nothing() {
    let node = Node::new();
    let container = TestNetns::new("c");
    let good = node.conf("1.0.0", json!({}));
    let add = || {
        node.call("bridge", "ADD")
            .attachment("c1", Some(&container), "eth0")
    };
    let before = (
        kernel_state(&node.netns),
        kernel_state(&container),
        files_below(&node.dir.path),
    );
    let cases: Vec<(PluginOutput, u64, &str)> = vec![
        (add().run("{\"cniVersion\": "), 6, "cannot decode"),
        (add().run(""), 6, "empty network configuration"),
        (
            add().run(&node.conf("9.9.9", json!({}))),
            1,
            "cniVersion \"9.9.9\" is not supported",
        ),
        (add().without("CNI_NETNS").run(&good), 4, "[CNI_NETNS]"),
        (
            add().without("CNI_CONTAINERID").run(&good),
            4,
            "[CNI_CONTAINERID]",
        ),
        (add().without("CNI_PATH").run(&good), 4, "[CNI_PATH]"),
        (
            add().env("CNI_IFNAME", "name-way-too-long").run(&good),
            4,
            "too long",
        ),
        (
            add().env("CNI_COMMAND", "FROB").run(&good),
            4,
            "unknown CNI_COMMAND",
        ),
        (
            add().env("CNI_NETNS", "/run/netns/pnt-missing").run(&good),
            3,
            "failed to open netns",
        ),
        (
            add().run(&node.conf("1.0.0", json!({"ipam": {"subnet": "10.88.7.0/33"}}))),
            7,
            "invalid CIDR",
        ),
        (
            add().run(&node.conf("1.0.0", json!({"ipam": {"subnet": "10.88.7.9/24"}}))),
            7,
            "host bits",
        ),
        (
            add().run(&node.conf("1.0.0", json!({"ipam": {"type": "no-such-ipam"}}))),
            999,
            "failed to find plugin",
        ),
        (
            add().run(&node.conf("1.0.0", json!({"mtu": "big"}))),
            7,
            "invalid network configuration",
        ),
        (add().run(&node.conf("1.0.0", json!({"vlan": 10}))), 2, "vlan"),
        (
            add().run(&node.conf("1.0.0", json!({"name": "../escape"}))),
            7,
            "invalid network name",
        ),
    ];
    for (output, code, text) in &cases {
        let error = output.err();
        assert_eq!(error["code"], json!(code), "{error}");
        let words = format!(
            "{} {}",
            error["msg"].as_str().unwrap_or_default(),
            error["details"].as_str().unwrap_or_default()
        );
        assert!(words.contains(text), "expected {text:?} in {words}");
    }
    let after = (
        kernel_state(&node.netns),
        kernel_state(&container),
        files_below(&node.dir.path),
    );
    assert_eq!(before, after, "a refused ADD changed the host");
}

#[test]
fn failed_add_rolls_back_everything_it_created() {
    let node = Node::new();
    let container = TestNetns::new("c");
    // The route's gateway is not on the container's subnet: the kernel refuses it at the very
    // end, after the address, record, masquerade element, bridge and veth pair exist.
    let conf = node.conf(
        "1.0.0",
        json!({"ipam": {"routes": [{"dst": "192.0.2.0/24", "gw": "10.99.0.1"}]}}),
    );
    let before_node = kernel_state(&node.netns);
    let error = node.add("c1", &container, &conf).err();
    assert!(
        error["msg"].as_str().unwrap().contains("add route 192.0.2.0/24"),
        "{error}"
    );
    assert!(
        node.ipam_files().is_empty(),
        "address kept: {:?}",
        node.ipam_files()
    );
    assert!(node.records().is_empty(), "record kept: {:?}", node.records());
    assert!(!node.links().contains("cni0"), "bridge kept: {}", node.links());
    assert!(!node.links().contains("veth"), "veth kept: {}", node.links());
    assert!(!container.exec_ok("ip", &["-o", "link"]).contains("eth0"));
    assert!(
        node.nft_set("masq-v4").is_empty(),
        "masquerade kept: {}",
        node.nft_set("masq-v4")
    );
    // Links, addresses and routes are as before; only podnet's (now empty) table remains.
    let without_nft = |state: &str| {
        state
            .split("table inet podnet-cni")
            .next()
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(without_nft(&before_node), without_nft(&kernel_state(&node.netns)));

    // A bridge another attachment uses survives a neighbour's failed ADD.
    let good = node.conf("1.0.0", json!({}));
    let first = TestNetns::new("c");
    node.add("first", &first, &good).ok();
    node.add("c2", &container, &conf).err();
    assert!(node.links().contains("cni0"));
    first.exec_ok("ping", &["-c1", "-W2", "10.88.7.1"]);
    assert_eq!(node.ipam_files().len(), 1);
}

#[test]
fn del_cleans_everything_even_when_the_netns_is_gone_and_twice() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let container = TestNetns::new("c");
    node.add("c1", &container, &conf).ok();
    assert_eq!(node.ipam_files().len(), 1);
    container.delete();
    // No CNI_NETNS and no prevResult: the record says what to remove.
    node.del("c1", None, &conf).ok();
    node.del("c1", Some(&container), &conf).ok();
    assert!(node.ipam_files().is_empty());
    assert!(node.nft_set("masq-v4").is_empty());
    // The veth pair's destruction finishes in the background, and its record with it.
    assert!(
        eventually(5, || node.records().is_empty().then_some(())).is_some(),
        "{:?}",
        node.records()
    );
    assert!(!node.links().contains("veth"), "{}", node.links());
    // A DEL for something never added succeeds too.
    node.del("never", None, &conf).ok();
}

#[test]
fn del_detaches_at_once_and_the_veth_pair_is_destroyed_in_the_background() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let container = TestNetns::new("c");
    let result = node.add("c1", &container, &conf).ok();
    let host_veth = result["interfaces"][1]["name"].as_str().unwrap().to_owned();
    node.del("c1", Some(&container), &conf).ok();
    // Detached: eth0 is free for a new attachment right away.
    assert!(!container.exec_ok("ip", &["-o", "link"]).contains("eth0"));
    let readd = node.add("c1", &container, &conf).ok();
    assert_ne!(readd["interfaces"][1]["name"], json!(host_veth));
    let gone = eventually(5, || (!node.links().contains(&host_veth)).then_some(()));
    assert!(gone.is_some(), "{host_veth} still exists: {}", node.links());
    assert!(!container.exec_ok("ip", &["-o", "link"]).contains("pndel"));
    // The re-added attachment kept its record; the reaper removed only the old one's.
    assert_eq!(node.records(), vec!["bridge/testnet/c1:eth0.json".to_owned()]);
    container.exec_ok("ping", &["-c1", "-W2", "10.88.7.1"]);
}

#[test]
fn masquerade_stays_while_any_attachment_of_the_subnet_remains() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    node.add("a", &a, &conf).ok();
    node.add("b", &b, &conf).ok();
    node.del("a", Some(&a), &conf).ok();
    assert!(node.nft_set("masq-v4").contains("10.88.7.0/24"));
    node.del("b", Some(&b), &conf).ok();
    assert!(node.nft_set("masq-v4").is_empty());
}

#[test]
fn gc_releases_what_belongs_to_attachments_that_no_longer_exist() {
    let node = Node::new();
    let conf11 = node.conf("1.1.0", json!({}));
    let containers: Vec<TestNetns> = (0..3).map(|_| TestNetns::new("c")).collect();
    for (index, container) in containers.iter().enumerate() {
        node.add(&format!("c{index}"), container, &conf11).ok();
    }
    let mut gc: Value = serde_json::from_str(&conf11).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    node.call("bridge", "GC").run(&gc.to_string()).ok();
    assert_eq!(node.ipam_files().len(), 1);
    assert_eq!(node.records(), vec!["bridge/testnet/c1:eth0.json".to_owned()]);
    assert_eq!(node.links().matches("veth").count(), 1, "{}", node.links());
    containers[1].exec_ok("ping", &["-c1", "-W2", "10.88.7.1"]);
    // Without the list of valid attachments GC would release everything: refused.
    let unlisted = node.call("bridge", "GC").run(&conf11).err();
    assert_eq!(unlisted["code"], json!(7), "{unlisted}");
    // GC is a 1.1.0 command.
    let old = node
        .call("bridge", "GC")
        .run(&node.conf("1.0.0", json!({})))
        .err();
    assert_eq!(old["code"], json!(1));
}

#[test]
fn status_reports_an_exhausted_range_as_unavailable() {
    let node = Node::new();
    let conf = node.conf("1.1.0", json!({"ipam": {"subnet": "10.88.9.0/30"}}));
    node.call("bridge", "STATUS").run(&conf).ok();
    let container = TestNetns::new("c");
    node.add("c1", &container, &conf).ok();
    let status = node.call("bridge", "STATUS").run(&conf).err();
    assert_eq!(status["code"], json!(50), "{status}");
    let second = TestNetns::new("c");
    let full = node.add("c2", &second, &conf).err();
    assert!(
        full["msg"]
            .as_str()
            .unwrap()
            .contains("no IP addresses available"),
        "{full}"
    );
}

#[test]
fn check_confirms_an_attachment_and_detects_drift() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let container = TestNetns::new("c");
    let result = node.add("c1", &container, &conf).ok();
    let mut check: Value = serde_json::from_str(&conf).unwrap();
    check["prevResult"] = result.clone();
    let call = || {
        node.call("bridge", "CHECK")
            .attachment("c1", Some(&container), "eth0")
    };
    call().run(&check.to_string()).ok();
    let no_prev = call().run(&conf).err();
    assert!(no_prev["msg"].as_str().unwrap().contains("prevResult"));
    let address = result["ips"][0]["address"].as_str().unwrap();
    container.exec_ok("ip", &["addr", "del", address, "dev", "eth0"]);
    let drift = call().run(&check.to_string()).err();
    assert!(
        drift["msg"].as_str().unwrap().contains("Failed to match addr"),
        "{drift}"
    );
}

#[test]
fn dual_stack_ranges_give_one_address_per_family() {
    let node = Node::new();
    let conf = node.conf(
        "1.0.0",
        json!({"ipam": {"subnet": null, "ranges": [[{"subnet": "10.88.8.0/24"}], [{"subnet": "fd00:10::/64"}]]}}),
    );
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    let result = node.add("a", &a, &conf).ok();
    assert_eq!(ip_of(&result, 0), "10.88.8.2");
    assert_eq!(ip_of(&result, 1), "fd00:10::2");
    node.add("b", &b, &conf).ok();
    // Usable as soon as ADD answers: never tentative (no DAD unless the configuration asks).
    let addresses = b.exec_ok("ip", &["-6", "addr", "show", "dev", "eth0", "scope", "global"]);
    assert!(
        addresses.contains("fd00:10::3/64 scope global nodad"),
        "{addresses}"
    );
    b.exec_ok("ping", &["-c1", "-W2", "fd00:10::2"]);
    assert!(node.nft_set("masq-v6").contains("fd00:10::/64"));
}

#[test]
fn loopback_brings_lo_up_and_reports_its_addresses() {
    let node = Node::new();
    let container = TestNetns::new("c");
    let conf = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}).to_string();
    let result = node
        .call("loopback", "ADD")
        .attachment("c1", Some(&container), "lo")
        .run(&conf)
        .ok();
    assert_eq!(result["interfaces"][0]["name"], json!("lo"));
    assert_eq!(result["ips"][0]["address"], json!("127.0.0.1/8"));
    container.exec_ok("ping", &["-c1", "-W1", "127.0.0.1"]);
    node.call("loopback", "CHECK")
        .attachment("c1", Some(&container), "lo")
        .run(&conf)
        .ok();
}

#[test]
fn host_local_gives_fifty_parallel_adds_fifty_distinct_addresses() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let outputs: Vec<PluginOutput> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|index| {
                let conf = &conf;
                let node = &node;
                scope.spawn(move || {
                    node.call("host-local", "ADD")
                        .attachment(&format!("p{index}"), None, "eth0")
                        .env("CNI_NETNS", "/run/netns/unused")
                        .run(conf)
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let addresses: HashSet<String> = outputs.iter().map(|output| ip_of(&output.ok(), 0)).collect();
    assert_eq!(addresses.len(), 50);
    assert_eq!(node.ipam_files().len(), 50);
}

#[test]
fn host_local_shares_its_store_with_the_reference_plugin() {
    let reference = std::path::Path::new("/usr/lib/cni/host-local");
    assert!(
        reference.exists(),
        "install containernetworking-plugins (the project's setup script does)"
    );
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let reference_add = |id: &str| {
        let mut invocation = node
            .call("host-local", "ADD")
            .attachment(id, None, "eth0")
            .env("CNI_NETNS", "/x");
        invocation.plugin = reference.to_path_buf();
        invocation.run(&conf)
    };
    // Allocations made by the reference plugin are seen, continued and released by podnet's.
    assert_eq!(ip_of(&reference_add("ref1").ok(), 0), "10.88.7.2");
    assert_eq!(ip_of(&reference_add("ref2").ok(), 0), "10.88.7.3");
    let ours = node
        .call("host-local", "ADD")
        .attachment("ours", None, "eth0")
        .env("CNI_NETNS", "/x")
        .run(&conf);
    assert_eq!(ip_of(&ours.ok(), 0), "10.88.7.4");
    node.call("host-local", "DEL")
        .attachment("ref1", None, "eth0")
        .run(&conf)
        .ok();
    assert!(!node.ipam_files().contains(&"10.88.7.2".to_owned()));
    // And the other way round.
    assert_eq!(ip_of(&reference_add("ref3").ok(), 0), "10.88.7.5");
    let bytes = std::fs::read(node.dir.join("ipam/testnet/10.88.7.4")).unwrap();
    assert_eq!(bytes, b"ours\r\neth0");
}

#[test]
fn host_local_killed_at_any_point_leaves_only_freeable_addresses() {
    let node = Node::new();
    let conf = node.conf("1.1.0", json!({}));
    let bin = node.bin.plugin("host-local");
    for attempt in 0..40u64 {
        let mut child = std::process::Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("k{attempt}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", "/x")
            .env("CNI_PATH", &node.bin.dir.path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_micros(attempt * 50));
        let _ = child.kill();
        let _ = child.wait();
    }
    let dir = node.dir.join("ipam/testnet");
    for file in node.ipam_files() {
        let owner = std::fs::read_to_string(dir.join(&file)).unwrap();
        let (id, ifname) = owner
            .split_once("\r\n")
            .unwrap_or_else(|| panic!("{file} has no owner: {owner:?}"));
        assert!(id.starts_with('k') && ifname == "eth0", "{file}: {owner:?}");
    }
    // Everything left is freeable: GC with no valid attachment frees it all.
    let mut gc: Value = serde_json::from_str(&conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([]);
    node.call("host-local", "GC").run(&gc.to_string()).ok();
    assert!(node.ipam_files().is_empty());
    let leftovers: Vec<String> = files_below(&dir)
        .into_iter()
        .filter(|name| name != "lock" && !name.starts_with("last_reserved_ip."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// bridge + portmap, chained as a runtime chains a conflist. Hairpin mode lets a container
/// reach itself through its host port: with bridge netfilter on, the DNATed packet is bridged
/// back out of the port it came in by.
fn add_with_ports(node: &Node, id: &str, container: &TestNetns, mappings: Value) -> PluginOutput {
    let bridge_conf = node.conf("1.0.0", json!({"hairpinMode": true}));
    let result = node.add(id, container, &bridge_conf).ok();
    let portmap_conf = json!({
        "cniVersion": "1.0.0", "name": "testnet", "type": "portmap",
        "capabilities": {"portMappings": true},
        "stateDir": node.dir.join("state"),
        "runtimeConfig": {"portMappings": mappings},
        "prevResult": result,
    });
    node.call("portmap", "ADD")
        .attachment(id, Some(container), "eth0")
        .run(&portmap_conf.to_string())
}

#[test]
fn portmap_forwards_host_ports_from_outside_localhost_and_hairpin() {
    let node = Node::new();
    let web = TestNetns::new("web");
    let mapped = add_with_ports(
        &node,
        "web",
        &web,
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let result = mapped.ok();
    assert_eq!(
        result["interfaces"][2]["name"],
        json!("eth0"),
        "portmap passes prevResult through"
    );
    let root = TestDir::new("www");
    std::fs::write(root.join("index.html"), "hello from web\n").unwrap();
    let _server = Background::start_in(
        &web,
        "busybox",
        &["httpd", "-f", "-p", "80", "-h", root.path.to_str().unwrap()],
    );
    web.exec_ok("ip", &["link", "set", "lo", "up"]);
    let client = TestNetns::new("cl");
    node.add("client", &client, &node.conf("1.0.0", json!({}))).ok();
    for (from, url) in [
        (&node.netns, "http://10.88.7.1:8080/"),
        (&node.netns, "http://127.0.0.1:8080/"),
        (&client, "http://10.88.7.1:8080/"),
        (&web, "http://10.88.7.1:8080/"),
    ] {
        let body = eventually(5, || http_get(from, url));
        assert_eq!(
            body.as_deref(),
            Some("hello from web\n"),
            "{url} from {}",
            from.name
        );
    }
    let del = json!({"cniVersion": "1.0.0", "name": "testnet", "type": "portmap", "stateDir": node.dir.join("state")});
    node.call("portmap", "DEL")
        .attachment("web", Some(&web), "eth0")
        .run(&del.to_string())
        .ok();
    assert!(node.nft_set("portmap-any-v4").is_empty());
    assert_eq!(http_get(&node.netns, "http://10.88.7.1:8080/"), None);
}

#[test]
fn portmap_refuses_a_host_port_another_container_holds() {
    let node = Node::new();
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    let port = json!([{"hostPort": 9090, "containerPort": 80}]);
    add_with_ports(&node, "a", &a, port.clone()).ok();
    let refused = add_with_ports(&node, "b", &b, port).err();
    assert!(
        refused["msg"]
            .as_str()
            .unwrap()
            .contains("9090/tcp is already mapped"),
        "{refused}"
    );
    let owner = node.nft_set("portmap-any-v4");
    assert!(
        owner.contains(&format!("{} . 80", "10.88.7.2")),
        "a's mapping survives: {owner}"
    );
    // One address of a port that another container maps on all addresses would silently win
    // over it: refused too.
    let c = TestNetns::new("c");
    let one_address = add_with_ports(
        &node,
        "c",
        &c,
        json!([{"hostPort": 9090, "containerPort": 80, "hostIP": "10.88.7.1"}]),
    )
    .err();
    assert!(
        one_address["msg"]
            .as_str()
            .unwrap()
            .contains("9090/tcp is already mapped"),
        "{one_address}"
    );
    assert!(node.nft_set("portmap-addr-v4").is_empty());
}

#[test]
fn portmap_hairpin_elements_stay_while_any_mapping_of_the_port_needs_them() {
    let node = Node::new();
    node.netns
        .exec_ok("ip", &["addr", "add", "192.0.2.1/32", "dev", "lo"]);
    let (a, b) = (TestNetns::new("a"), TestNetns::new("b"));
    for (id, netns, host_ip) in [("a", &a, "10.88.7.1"), ("b", &b, "192.0.2.1")] {
        add_with_ports(
            &node,
            id,
            netns,
            json!([{"hostPort": 9191, "containerPort": 80, "hostIP": host_ip}]),
        )
        .ok();
    }
    let hairpin = "10.88.7.0/24 . tcp . 9191";
    assert!(node.nft_set("portmap-masq-v4").contains(hairpin));
    let del = json!({"cniVersion": "1.0.0", "name": "testnet", "type": "portmap", "stateDir": node.dir.join("state")});
    node.call("portmap", "DEL")
        .attachment("a", Some(&a), "eth0")
        .run(&del.to_string())
        .ok();
    let left = node.nft_set("portmap-masq-v4");
    assert!(left.contains(hairpin), "b still needs it: {left}");
    node.call("portmap", "DEL")
        .attachment("b", Some(&b), "eth0")
        .run(&del.to_string())
        .ok();
    assert!(node.nft_set("portmap-masq-v4").is_empty());
}
