//! Cluster mode: the node agent reads Nodes, Services and EndpointSlices from a Kubernetes API
//! server (a stand-in that speaks the list-and-watch protocol, support/fake_apiserver.py)
//! instead of a lab, and wires a node namespace from them: VXLAN routes, neighbours and FDB
//! entries that follow nodes being added and deleted, and the service proxy's table following
//! services and their endpoints, and the policy controller's table following NetworkPolicies
//! and pods. The DNS server answers from the same objects.

mod support;

use serde_json::{Value, json};
use support::*;

const API_PORT: &str = "6443";

fn node(name: &str, address: &str, pod_cidr: &str) -> Value {
    json!({
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr},
        "status": {"addresses": [{"type": "InternalIP", "address": address}]},
    })
}

fn service() -> Value {
    json!({
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.10", "type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    })
}

fn slice(addresses: &[&str]) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|address| json!({"addresses": [address], "conditions": {"ready": true}}))
        .collect();
    json!({
        "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

/// Starts the stand-in API server in `netns` with `objects`; returns it and a kubeconfig for it.
fn api_server(netns: &TestNetns, dir: &TestDir, objects: Value) -> (Background, std::path::PathBuf) {
    std::fs::write(dir.join("objects.json"), objects.to_string()).unwrap();
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/fake_apiserver.py");
    let api = Background::start_in(
        netns,
        "python3",
        &[server, API_PORT, dir.join("objects.json").to_str().unwrap()],
    );
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"http://127.0.0.1:{API_PORT}\"}}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\n"
        ),
    )
    .unwrap();
    (api, kubeconfig)
}

/// Sends a watch event to the stand-in API server.
fn cluster_event(netns: &TestNetns, kind: &str, object: Value) {
    let body = json!({"type": kind, "object": object}).to_string();
    let url = format!("http://127.0.0.1:{API_PORT}/podnet-test/event");
    netns.exec_ok("curl", &["-sS", "--fail", "-X", "POST", "--data", &body, &url]);
}

#[test]
fn the_agent_follows_nodes_from_the_kubernetes_api() {
    // The node: a namespace with its underlay address on eth0 (a bridge: the kernel here has no
    // dummy links).
    let netns = TestNetns::new("kube");
    netns.exec_ok("ip", &["link", "set", "lo", "up"]);
    netns.exec_ok("ip", &["link", "add", "eth0", "type", "bridge"]);
    netns.exec_ok("ip", &["addr", "add", "192.168.50.11/24", "dev", "eth0"]);
    netns.exec_ok("ip", &["link", "set", "eth0", "up"]);

    let dir = TestDir::new("kube");
    let (_api, kubeconfig) = api_server(
        &netns,
        &dir,
        json!([
            node("n1", "192.168.50.11", "10.50.0.0/24"),
            node("n2", "192.168.50.12", "10.50.1.0/24"),
            service(),
            slice(&["10.50.1.5"]),
        ]),
    );
    let _agent = Background::start_in(
        &netns,
        podnet().to_str().unwrap(),
        &[
            "agent",
            "--node",
            "n1",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );

    let routes = || netns.exec_ok("ip", &["route"]);
    let has_route = |cidr: &str, present: bool| {
        eventually(10, || {
            (routes().contains(&format!(
                "{cidr} via {} dev podnet.1 proto 112 onlink",
                cidr.trim_end_matches("/24")
            )) == present)
                .then_some(())
        })
        .is_some()
    };
    assert!(has_route("10.50.1.0/24", true), "{}", routes());
    let fdb = netns.exec_ok("bridge", &["fdb", "show", "dev", "podnet.1"]);
    assert!(fdb.contains("dst 192.168.50.12 self permanent"), "{fdb}");
    // The node's own subnet is its pods' bridge.
    let bridge = netns.exec_ok("ip", &["-o", "addr", "show", "cni0"]);
    assert!(bridge.contains("10.50.0.1/24"), "{bridge}");

    // A node joins, another leaves: the watch carries both within seconds.
    cluster_event(&netns, "ADDED", node("n3", "192.168.50.13", "10.50.2.0/24"));
    assert!(has_route("10.50.2.0/24", true), "{}", routes());
    // A route to a new peer's subnet that somebody else installed is left alone.
    netns.exec_ok(
        "ip",
        &["route", "add", "10.50.9.0/24", "dev", "eth0", "proto", "static"],
    );
    cluster_event(&netns, "ADDED", node("n4", "192.168.50.14", "10.50.9.0/24"));
    let fdb_has_n4 = eventually(10, || {
        netns
            .exec_ok("bridge", &["fdb", "show", "dev", "podnet.1"])
            .contains("dst 192.168.50.14")
            .then_some(())
    });
    assert!(fdb_has_n4.is_some());
    assert!(
        routes().contains("10.50.9.0/24 dev eth0 proto static"),
        "{}",
        routes()
    );

    // Services: the proxy programs the ClusterIP to the slice's endpoints and follows them.
    let table = || netns.exec_ok("nft", &["list", "table", "ip", "podnet-proxy"]);
    let has = |text: &str| eventually(10, || table().contains(text).then_some(())).is_some();
    assert!(has("10.96.0.10 . tcp . 80 . 0 : 10.50.1.5 . 8080"), "{}", table());
    cluster_event(&netns, "MODIFIED", slice(&["10.50.1.5", "10.50.2.7"]));
    assert!(has("10.96.0.10 . tcp . 80 : goto cluster-2"), "{}", table());
    cluster_event(&netns, "DELETED", service());
    assert!(
        eventually(10, || (!table().contains("10.96.0.10")).then_some(())).is_some(),
        "{}",
        table()
    );

    cluster_event(&netns, "DELETED", node("n2", "192.168.50.12", "10.50.1.0/24"));
    assert!(has_route("10.50.1.0/24", false), "{}", routes());
    let fdb = netns.exec_ok("bridge", &["fdb", "show", "dev", "podnet.1"]);
    assert!(
        !fdb.contains("192.168.50.12") && fdb.contains("dst 192.168.50.13 self permanent"),
        "{fdb}"
    );
}

#[test]
fn the_agent_enforces_network_policies_from_the_kubernetes_api() {
    let netns = TestNetns::new("kube-pol");
    netns.exec_ok("ip", &["link", "set", "lo", "up"]);
    let dir = TestDir::new("kube-pol");
    let pod = |name: &str, node: &str, ip: &str| {
        json!({
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"name": "pg", "containerPort": 5432}]}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
        })
    };
    let policy = json!({
        "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "pg"}]}],
        },
    });
    let namespace = json!({"kind": "Namespace", "metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}}});
    let (_api, kubeconfig) = api_server(
        &netns,
        &dir,
        json!([
            namespace,
            node("n1", "192.168.50.11", "10.50.0.0/24"),
            pod("db", "n1", "10.50.0.5"),
            pod("web", "n2", "10.50.1.7"),
            policy.clone()
        ]),
    );
    let _agent = Background::start_in(
        &netns,
        podnet().to_str().unwrap(),
        &[
            "agent",
            "--node",
            "n1",
            "--controllers",
            "policy",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    let list = |kind: &str, name: &str| {
        let output = netns.exec("nft", &["list", kind, "ip", "podnet-policy", name]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let set = |name: &str| list("set", name);
    let has = |name: &str, text: &str| eventually(10, || set(name).contains(text).then_some(())).is_some();
    // The node's pod subnet passes only for the pods the plan covers: db, the one pod here.
    assert!(
        has("pod-subnets", "elements = { 10.50.0.0/24 }"),
        "{}",
        set("pod-subnets")
    );
    assert!(has("admitted", "elements = { 10.50.0.5 }"), "{}", set("admitted"));
    // db (on this node) is isolated: its packets jump to its own chain, whose set admits web
    // (on the other node) on its port named pg, and nothing else.
    let jumps = || list("map", "ingress-pods");
    assert!(
        jumps().contains("10.50.0.5 : jump ingress-10-50-0-5"),
        "{}",
        jumps()
    );
    assert_eq!(
        list("chain", "ingress-10-50-0-5")
            .lines()
            .filter(|line| line.contains("return"))
            .count(),
        2,
        "{}",
        list("chain", "ingress-10-50-0-5")
    );
    assert!(
        has("ingress-10-50-0-5-ports", "10.50.1.7 . tcp . 5432"),
        "{}",
        set("ingress-10-50-0-5-ports")
    );
    cluster_event(&netns, "DELETED", policy);
    assert!(
        eventually(10, || (!jumps().contains("10.50.0.5")).then_some(())).is_some(),
        "{}",
        jumps()
    );
    assert!(set("admitted").contains("10.50.0.5"), "{}", set("admitted"));
}

#[test]
fn the_dns_server_answers_from_the_kubernetes_api() {
    let netns = TestNetns::new("kube-dns");
    netns.exec_ok("ip", &["link", "set", "lo", "up"]);
    let dir = TestDir::new("kube-dns");
    let namespace = json!({"kind": "Namespace", "metadata": {"name": "default"}});
    let (_api, kubeconfig) = api_server(&netns, &dir, json!([namespace, service(), slice(&["10.50.1.5"])]));
    let _dns = Background::start_in(
        &netns,
        podnet().to_str().unwrap(),
        &[
            "dns",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--listen",
            "127.0.0.1:53",
            "--no-forward",
        ],
    );
    let dig = |args: &[&str]| {
        let mut all = vec!["+short", "+time=1", "+tries=1", "@127.0.0.1"];
        all.extend(args);
        netns.exec("dig", &all)
    };
    let answers = |args: &[&str], expected: &str| {
        eventually(10, || {
            let output = dig(args);
            (String::from_utf8_lossy(&output.stdout) == expected).then_some(())
        })
        .is_some()
    };
    assert!(answers(&["web.default.svc.cluster.local"], "10.96.0.10\n"));
    assert!(answers(
        &["SRV", "_http._tcp.web.default.svc.cluster.local"],
        "0 100 80 web.default.svc.cluster.local.\n"
    ));
    assert!(answers(&["-x", "10.96.0.10"], "web.default.svc.cluster.local.\n"));
    // The watch carries a deletion within moments.
    cluster_event(&netns, "DELETED", service());
    assert!(answers(&["web.default.svc.cluster.local"], ""));
}

#[test]
fn without_an_api_server_configuration_the_agent_says_what_to_do() {
    let dir = TestDir::new("kube-none");
    let output = std::process::Command::new(podnet())
        .args(["agent", "--node", "n1"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", dir.join("missing"))
        .env("HOME", &dir.path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--kubeconfig"), "{stderr}");
}
