//! Multi-node labs: pods on different nodes reach each other without NAT over VXLAN and
//! host-gw, nodes and hostNetwork pods reach every pod, egress is masqueraded, and the node
//! agents follow nodes coming, going and themselves restarting.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn lab_file(backend: &str, nodes: usize) -> String {
    format!(
        "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\nspec:\n  nodes: {nodes}\n  backend: {backend}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: server\nspec:\n  nodeName: node1\n  containers:\n  - {{name: whoami, image: traefik/whoami}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  nodeName: node2\n  containers:\n  - {{name: c, image: busybox, command: [sleep, infinity]}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: hostpod\nspec:\n  nodeName: node2\n  hostNetwork: true\n  containers:\n  - {{name: c, image: busybox, command: [sleep, infinity]}}\n"
    )
}

fn remote_addr(answer: &str) -> String {
    answer
        .lines()
        .find_map(|line| line.strip_prefix("RemoteAddr: "))
        .and_then(|addr| addr.rsplit_once(':'))
        .map(|(ip, _)| ip.to_owned())
        .unwrap_or_else(|| panic!("no RemoteAddr in {answer}"))
}

/// Everything the issue asks of both backends, on one lab.
fn pods_nodes_and_egress(backend: &str, pod_mtu: &str, host_source: &str) {
    let lab = Lab::up(&lab_file(backend, 2));
    let (server, client) = (lab.pod_ip("server"), lab.pod_ip("client"));
    assert!(
        server.starts_with("10.244.0.") && client.starts_with("10.244.1."),
        "{}",
        lab.status()
    );
    assert!(
        lab.status().contains(&format!("10.244.1.0/24   {backend}")),
        "{}",
        lab.status()
    );

    // Pod to pod across nodes: the server sees the client's own address.
    let answer = lab.exec("client", None, &["curl", "-s", &format!("http://{server}/")]);
    assert_eq!(remote_addr(&answer), client, "NAT between pods:\n{answer}");
    // The pod MTU fits the backend, so nothing is fragmented.
    let link = lab.exec("client", None, &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains(&format!("mtu {pod_mtu} ")), "{link}");
    lab.exec(
        "client",
        None,
        &[
            "ping",
            "-c1",
            "-W2",
            "-M",
            "do",
            "-s",
            &(pod_mtu.parse::<u32>().unwrap() - 28).to_string(),
            &server,
        ],
    );

    // Every node reaches every pod.
    for node in ["node1", "node2"] {
        for pod in [&server, &client] {
            lab.netns_exec(node, &["ping", "-c1", "-W2", pod]);
        }
    }
    // A hostNetwork pod reaches every pod, from the node's own address (not translated).
    let answer = lab.exec("hostpod", None, &["curl", "-s", &format!("http://{server}/")]);
    assert_eq!(remote_addr(&answer), host_source, "{answer}");
    assert_eq!(lab.exec("hostpod", None, &["hostname"]).trim(), "node2");

    // Egress: "the internet" (a whoami on 203.0.113.10 in the external namespace) sees the
    // node's address; pod-to-pod traffic above was not translated.
    let answer = lab.exec(
        "client",
        None,
        &["curl", "-s", "--max-time", "2", "http://203.0.113.10/"],
    );
    assert!(answer.starts_with("Name: internet\n"), "{answer}");
    assert_eq!(
        remote_addr(&answer),
        "192.168.10.12",
        "egress not masqueraded to node2:\n{answer}"
    );
    // The lab is sealed: the external namespace, where the nodes' default routes end, has no
    // route to a public address (asked with `ip route get`, which sends nothing).
    let lookup = Command::new("ip")
        .args(["-n", &format!("{}_external", lab.name), "route", "get", "8.8.8.8"])
        .output()
        .unwrap();
    assert!(
        !lookup.status.success() && String::from_utf8_lossy(&lookup.stderr).contains("unreachable"),
        "{lookup:?}"
    );
}

#[test]
fn vxlan_carries_pod_traffic_between_nodes_without_nat() {
    // node2 reaches remote pods from its VTEP address, 10.244.1.0.
    pods_nodes_and_egress("vxlan", "1450", "10.244.1.0");
}

#[test]
fn host_gw_carries_pod_traffic_between_nodes_without_nat() {
    pods_nodes_and_egress("host-gw", "1500", "192.168.10.12");
}

#[test]
fn vxlan_is_wired_like_flannel() {
    let lab = Lab::up(&lab_file("vxlan", 3));
    let link = lab.netns_exec("node1", &["ip", "-d", "link", "show", "podnet.1"]);
    for expected in [
        "vxlan id 1 local 192.168.10.11 dev eth0",
        "dstport 8472",
        "nolearning",
        "noudpcsum",
        "mtu 1450",
    ] {
        assert!(link.contains(expected), "{expected:?} not in {link}");
    }
    let routes = lab.netns_exec("node1", &["ip", "route"]);
    assert!(
        routes.contains("10.244.1.0/24 via 10.244.1.0 dev podnet.1 proto 112 onlink"),
        "{routes}"
    );
    assert!(
        routes.contains("10.244.2.0/24 via 10.244.2.0 dev podnet.1 proto 112 onlink"),
        "{routes}"
    );
    let fdb = lab.netns_exec("node1", &["bridge", "fdb", "show", "dev", "podnet.1"]);
    assert!(
        fdb.contains("0e:00:c0:a8:0a:0c dst 192.168.10.12 self permanent"),
        "{fdb}"
    );
    let neighbours = lab.netns_exec("node1", &["ip", "neigh", "show", "dev", "podnet.1"]);
    assert!(
        neighbours.contains("10.244.2.0 lladdr 0e:00:c0:a8:0a:0d PERMANENT"),
        "{neighbours}"
    );
}

#[test]
fn lab_apply_adds_and_removes_nodes_leaving_the_rest_alone() {
    let lab = Lab::up(&lab_file("vxlan", 2));
    let before = container_pid(&lab, "server");

    let mut three = lab_file("vxlan", 3);
    three.push_str(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: third\nspec:\n  nodeName: node3\n  containers:\n  - {name: whoami, image: traefik/whoami}\n",
    );
    let changes = lab.apply(&three);
    assert!(
        changes.contains("node node3 up") && changes.contains("pod default/third on node3"),
        "{changes}"
    );
    assert!(
        !changes.contains("server") && !changes.contains("client"),
        "untouched pods changed: {changes}"
    );
    assert_eq!(container_pid(&lab, "server"), before, "the server was restarted");
    // The other nodes' agents route to node3 at once.
    let routed = eventually(2, || {
        lab.netns_exec("node1", &["ip", "route"])
            .contains("10.244.2.0/24")
            .then_some(())
    });
    assert!(routed.is_some());
    let third = lab.pod_ip("third");
    let answer = lab.exec("client", None, &["curl", "-s", &format!("http://{third}/")]);
    assert_eq!(remote_addr(&answer), lab.pod_ip("client"));

    // And node3 leaves: its namespace, its pods and every route to it go.
    let changes = lab.apply(&lab_file("vxlan", 2));
    assert!(
        changes.contains("pod default/third deleted") && changes.contains("node node3 removed"),
        "{changes}"
    );
    assert!(!run_ok("ip", &["netns", "list"]).contains(&format!("{}_node3", lab.name)));
    let unrouted = eventually(2, || {
        (!lab
            .netns_exec("node1", &["ip", "route"])
            .contains("10.244.2.0/24"))
        .then_some(())
    });
    assert!(
        unrouted.is_some(),
        "{}",
        lab.netns_exec("node1", &["ip", "route"])
    );
    let fdb = lab.netns_exec("node1", &["bridge", "fdb", "show", "dev", "podnet.1"]);
    assert!(!fdb.contains("192.168.10.13"), "{fdb}");
    assert_eq!(container_pid(&lab, "server"), before);
    // Applying the same file again changes nothing.
    assert_eq!(lab.apply(&lab_file("vxlan", 2)).trim(), "nothing to change");
}

#[test]
fn lab_apply_switches_the_backend_without_restarting_pods() {
    let lab = Lab::up(&lab_file("vxlan", 2));
    let before = container_pid(&lab, "server");
    lab.apply(&lab_file("host-gw", 2));
    // The agents are replaced by ones with the new backend; they swap the VXLAN link for
    // direct routes.
    let rewired = eventually(5, || {
        let routes = lab.netns_exec("node1", &["ip", "route"]);
        (routes.contains("10.244.1.0/24 via 192.168.10.12 dev eth0 proto 112")
            && !lab.netns_exec("node1", &["ip", "link"]).contains("podnet.1"))
        .then_some(())
    });
    assert!(rewired.is_some(), "{}", lab.netns_exec("node1", &["ip", "route"]));
    assert!(
        lab.status().contains("10.244.0.0/24   host-gw"),
        "{}",
        lab.status()
    );
    assert_eq!(container_pid(&lab, "server"), before, "the server was restarted");
    let server = lab.pod_ip("server");
    let answer = lab.exec("client", None, &["curl", "-s", &format!("http://{server}/")]);
    assert_eq!(remote_addr(&answer), lab.pod_ip("client"));
}

#[test]
fn a_killed_agent_leaves_traffic_flowing_and_its_successor_adopts_the_state() {
    let lab = Lab::up(&lab_file("vxlan", 2));
    let server = lab.pod_ip("server");
    // A route that is not podnet's must survive the agent.
    lab.netns_exec(
        "node1",
        &[
            "ip",
            "route",
            "add",
            "198.18.0.0/24",
            "via",
            "192.168.10.254",
            "proto",
            "static",
        ],
    );
    let routes_before = lab.netns_exec("node1", &["ip", "route"]);
    let agent = container_pid(&lab, "podnet-agent-node1");

    // Requests every 20 ms across node1 while its agent is killed and restarted.
    let url = format!("http://{server}/health");
    let loop_script = format!(
        "ok=0; fail=0; for i in $(seq 1 100); do if curl -s --max-time 1 -o /dev/null {url}; then ok=$((ok+1)); else fail=$((fail+1)); fi; sleep 0.02; done; echo $ok $fail"
    );
    let traffic = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| lab.exec("client", None, &["sh", "-c", &loop_script]));
        std::thread::sleep(Duration::from_millis(300));
        run_ok("kill", &["-KILL", &agent]);
        traffic.join().unwrap()
    });
    assert_eq!(
        traffic.trim(),
        "100 0",
        "requests failed while the agent was down"
    );

    let restarted = eventually(10, || {
        let line = lab.pod_line("podnet-agent-node1");
        (line.contains("1/1") && line.split_whitespace().nth(4) == Some("1")).then_some(line)
    });
    assert!(
        restarted.is_some(),
        "agent not restarted: {}",
        lab.pod_line("podnet-agent-node1")
    );
    assert_ne!(container_pid(&lab, "podnet-agent-node1"), agent);
    // The new agent found everything in place: same routes, the foreign one included.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lab.netns_exec("node1", &["ip", "route"]), routes_before);
    let logs = String::from_utf8_lossy(
        &lab.podnet(&[
            "lab",
            "logs",
            "--lab",
            &lab.name,
            "-n",
            "kube-system",
            "podnet-agent-node1",
        ])
        .stdout,
    )
    .into_owned();
    let second_run = logs.rsplit("agent for node node1").next().unwrap();
    assert!(
        !second_run.contains("route 10.244.1.0/24"),
        "the restarted agent re-installed routes:\n{second_run}"
    );
}

#[test]
fn idle_agents_use_no_measurable_cpu() {
    let lab = Lab::up(&lab_file("vxlan", 2));
    std::thread::sleep(Duration::from_millis(500));
    let agent = container_pid(&lab, "podnet-agent-node1");
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{agent}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = ticks() - before;
    assert!(used <= 1, "an idle agent used {used} clock ticks in 3 s");
}

/// The process ID of a pod's container: the process in the pod's network namespace (for an
/// agent, the agent process in its node's).
fn container_pid(lab: &Lab, pod: &str) -> String {
    let (netns, marker) = match pod.strip_prefix("podnet-agent-") {
        Some(node) => (format!("{}_{node}", lab.name), "agent"),
        None => (format!("{}_default_{pod}", lab.name), ""),
    };
    run_ok("ip", &["netns", "pids", &netns])
        .split_whitespace()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.contains(marker))
        })
        .unwrap_or_else(|| panic!("no process in {netns}"))
        .to_owned()
}
