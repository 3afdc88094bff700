//! End-to-end tests of `podnet lab`: the real binary, a real lab on this host's kernel.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

const SEED_002: &str = include_str!("../../../examples/seed-002-pause-nginx.yaml");
const SEED_000: &str = include_str!("../../../examples/seed-000-shared-netns.yaml");
const SEED_004: &str = include_str!("../../../examples/seed-004-cross-node.yaml");

#[test]
fn seed_004_pods_on_different_nodes_talk_without_nat_and_leave_masqueraded() {
    let lab = Lab::up(&SEED_004.replace("name: seed004", "name: NAME"));
    let (whoami, client) = (lab.pod_ip("clusterip-dnat"), lab.pod_ip("client"));
    assert_eq!(whoami, "10.244.0.2", "the example's comments use this address");
    let answer = lab.exec("client", None, &["curl", "-s", &format!("http://{whoami}")]);
    assert!(answer.contains(&format!("RemoteAddr: {client}:")), "{answer}");
    let internet = lab.exec("client", None, &["curl", "-s", "http://203.0.113.10"]);
    assert!(internet.contains("RemoteAddr: 192.168.10.12:"), "{internet}");
    let status = lab.status();
    assert_eq!(
        status
            .lines()
            .filter(|line| line.contains("nginx-test-") && line.contains("Running"))
            .count(),
        3,
        "{status}"
    );
}

#[test]
fn seed_002_pause_sandbox_with_nginx_answers_curl_from_another_pod() {
    let lab = Lab::up(&SEED_002.replace("name: seed002", "name: NAME"));
    let web = lab.pod_ip("web");
    assert_eq!(web, "10.0.10.2", "host-local hands out .2 first, as in the seed");
    let page = lab.exec("client", None, &["curl", "-s", &format!("http://{web}")]);
    assert!(page.contains("<title>Welcome to nginx!</title>"), "{page}");
    // The seed's routes, installed by the bridge plugin from host-local's result.
    let routes = run_ok(
        "ip",
        &[
            "netns",
            "exec",
            &format!("{}_default_web", lab.name),
            "ip",
            "route",
        ],
    );
    assert!(routes.contains("default via 10.0.10.1 dev eth0"), "{routes}");
    assert!(routes.contains("1.1.1.1 via 10.0.10.1 dev eth0"), "{routes}");
    // The seed's bridge, on the node.
    let links = run_ok(
        "ip",
        &[
            "netns",
            "exec",
            &format!("{}_node1", lab.name),
            "ip",
            "-br",
            "addr",
        ],
    );
    assert!(
        links
            .lines()
            .any(|line| line.starts_with("cni_net0") && line.contains("10.0.10.1/24")),
        "{links}"
    );
    assert!(lab.down().status.success());
    lab.assert_gone();
    let again = lab.down();
    assert!(again.status.success(), "a second down must succeed too");
}

#[test]
fn seed_000_containers_of_a_pod_share_localhost_and_its_ports() {
    let lab = Lab::up(&SEED_000.replace("name: seed000", "name: NAME"));
    let page = lab.exec("shared", Some("netshoot"), &["curl", "-s", "http://localhost"]);
    assert!(page.contains("Welcome to nginx!"), "{page}");
    let sockets = lab.exec("shared", Some("netshoot"), &["ss", "-ltnH"]);
    assert!(sockets.contains(":80 "), "{sockets}");
    assert_eq!(
        lab.exec("shared", Some("netshoot"), &["hostname"]).trim(),
        "shared"
    );

    // Two nginx containers in one pod: one holds :80, the other cannot bind it.
    let clash = eventually(10, || {
        let status = lab.status();
        let line = status
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some("clash"))?
            .to_owned();
        (line.contains("1/2") && line.contains("CrashLoopBackOff") || line.contains("Error")).then_some(line)
    });
    assert!(clash.is_some(), "{}", lab.status());
    let logs: String = ["first", "second"]
        .iter()
        .map(|container| {
            String::from_utf8_lossy(
                &lab.podnet(&["lab", "logs", "--lab", &lab.name, "clash", "-c", container])
                    .stdout,
            )
            .into_owned()
        })
        .collect();
    assert!(
        logs.contains("bind() to 0.0.0.0:80 failed (98: Address already in use)"),
        "{logs}"
    );
}

#[test]
fn whoami_answers_with_its_hostname_ips_and_the_client_address() {
    let lab = Lab::up(
        "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: whoami\nspec:\n  containers:\n  - name: whoami\n    image: traefik/whoami\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, infinity]\n",
    );
    let (server, client) = (lab.pod_ip("whoami"), lab.pod_ip("client"));
    let answer = lab.exec("client", None, &["curl", "-s", &format!("http://{server}/")]);
    assert!(answer.starts_with("Hostname: whoami\n"), "{answer}");
    assert!(answer.contains("IP: 127.0.0.1\n"), "{answer}");
    assert!(answer.contains(&format!("IP: {server}\n")), "{answer}");
    assert!(answer.contains(&format!("RemoteAddr: {client}:")), "{answer}");
    assert!(answer.contains("GET / HTTP/1.1\nHost: "), "{answer}");
    assert!(answer.contains("User-Agent: curl/"), "{answer}");
}

#[test]
fn deployment_replicas_become_running_pods_and_exec_keeps_exit_codes() {
    let lab = Lab::up(
        "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nginx-test\n  namespace: shop\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: nginx-test}\n  template:\n    metadata:\n      labels: {app: nginx-test}\n    spec:\n      containers:\n      - name: nginx\n        image: nginx\n        ports:\n        - containerPort: 80\n",
    );
    let status = lab.status();
    let pods: Vec<&str> = status.lines().filter(|line| line.starts_with("shop ")).collect();
    assert_eq!(pods.len(), 3, "{status}");
    assert!(
        pods.iter()
            .all(|line| line.contains("1/1") && line.contains("Running")),
        "{status}"
    );
    let pod = pods[0].split_whitespace().nth(1).unwrap();
    let output = lab.podnet(&[
        "lab", "exec", "--lab", &lab.name, "-n", "shop", pod, "--", "sh", "-c", "exit 7",
    ]);
    assert_eq!(output.status.code(), Some(7));
}

#[test]
fn a_bad_lab_file_is_refused_and_creates_nothing() {
    let lab = Lab::prepare(
        "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: db\nspec:\n  containers:\n  - name: redis\n    image: redis:7\n",
    );
    let output = lab.podnet(&["lab", "up", lab.file().to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("document 2 (Pod default/db)") && stderr.contains("cannot be emulated"),
        "{stderr}"
    );
    lab.assert_gone();
}

#[test]
fn a_lab_whose_daemon_dies_half_way_leaves_nothing_behind() {
    // Forty pods take long enough to kill the daemon while it is wiring them.
    let mut text = "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\n".to_owned();
    text.push_str("---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: many\nspec:\n  replicas: 40\n  selector:\n    matchLabels: {app: many}\n  template:\n    metadata:\n      labels: {app: many}\n    spec:\n      containers:\n      - {name: c, image: busybox, command: [sleep, infinity]}\n");
    let lab = Lab::prepare(&text);
    let mut up = Command::new(podnet())
        .args(["lab", "up", lab.file().to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first pod, then kill the daemon.
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(up.stderr.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .any(|line| line.unwrap().contains("pod default/many-")),
        "no pod was wired"
    );
    let pattern = format!("lab daemon {}", lab.name);
    let _ = Command::new("pkill").args(["-KILL", "-f", &pattern]).status();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = up.wait().unwrap();
    assert!(!status.success(), "lab up reported success: {rest:?}");
    // Container processes that outlived the daemon are gone with the namespaces.
    lab.assert_gone();
}

#[test]
fn down_removes_everything_even_when_the_daemon_was_killed() {
    let lab = Lab::up(
        "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, infinity]\n",
    );
    let containers: Vec<String> = run_ok("ip", &["netns", "pids", &format!("{}_default_p", lab.name)])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(containers.len(), 1, "the pod's one container process");
    let pattern = format!("lab daemon {}", lab.name);
    assert!(
        Command::new("pkill")
            .args(["-KILL", "-f", &pattern])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        Path::new("/proc").join(&containers[0]).exists(),
        "the container outlives its daemon"
    );
    let output = lab.down();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    lab.assert_gone();
    let gone = eventually(2, || {
        (!Path::new("/proc").join(&containers[0]).exists()).then_some(())
    });
    assert!(
        gone.is_some(),
        "container process {} survived lab down",
        containers[0]
    );
}

#[test]
fn a_terminating_pod_stays_visible_its_replacement_waits_and_down_cuts_its_grace_short() {
    let header = "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\n";
    let pod = |name: &str, grace: u32| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: {grace}\n  containers:\n  - name: whoami\n    image: traefik/whoami\n    lifecycle:\n      preStop:\n        sleep: {{seconds: {grace}}}\n"
        )
    };
    let lab = Lab::up(&format!("{header}{}{}", pod("quick", 2), pod("slow", 600)));
    let first_uid = lab.get("pods", Some("quick"))["items"][0]["metadata"]["uid"].clone();

    // Both deleted: they stay, terminating, with their containers and a shell to look inside.
    lab.apply(header);
    let status = lab.status();
    let rows: Vec<&str> = status
        .lines()
        .filter(|line| line.starts_with("default "))
        .collect();
    assert_eq!(rows.len(), 2, "{status}");
    assert!(
        rows.iter()
            .all(|row| row.contains("Terminating") && row.contains("1/1")),
        "{status}"
    );
    assert_eq!(lab.exec("slow", None, &["hostname"]).trim(), "slow");

    // `quick` comes back: the new pod waits for the old one to be gone, then runs.
    lab.apply(&format!("{header}{}", pod("quick", 2)));
    let quick = lab.get("pods", Some("quick"))["items"][0].clone();
    assert_ne!(quick["metadata"]["uid"], first_uid);
    assert!(quick["metadata"]["deletionTimestamp"].is_null(), "{quick}");
    assert_eq!(quick["status"]["phase"], "Running", "{quick}");
    assert!(lab.status().contains("Terminating"), "slow is still stopping");

    // Going down does not wait out slow's ten minutes.
    let started = std::time::Instant::now();
    assert!(lab.down().status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    lab.assert_gone();
}

#[test]
fn network_policies_are_stored_served_and_a_bad_one_refused_changing_nothing() {
    let header = "apiVersion: podnet.dev/v1alpha1
kind: Lab
metadata:
  name: NAME
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {team: shop}
";
    let policy = |name: &str, protocol: &str| {
        format!(
            "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {name}
  namespace: shop
spec:
  podSelector:
    matchLabels: {{role: db}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {{team: shop}}
    ports:
    - {{protocol: {protocol}, port: 6379}}
"
        )
    };
    let lab = Lab::up(&format!("{header}{}", policy("db", "TCP")));
    let stored = lab.get("networkpolicies", None);
    let items = stored["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{stored}");
    assert_eq!(items[0]["kind"], "NetworkPolicy");
    assert_eq!(items[0]["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(items[0]["metadata"]["namespace"], "shop");
    assert_eq!(items[0]["spec"]["ingress"][0]["ports"][0]["port"], 6379);
    assert_eq!(lab.get("netpol", Some("db"))["items"], stored["items"]);

    // A bad policy is refused, naming it and the field, and the running one stays as it was.
    let refusal = lab.apply_refused(&format!("{header}{}", policy("db", "ICMP")));
    assert!(
        refusal.contains("NetworkPolicy shop/db")
            && refusal.contains(
                "spec.ingress[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
            ),
        "{refusal}"
    );
    assert_eq!(lab.get("networkpolicies", None), stored);

    // A new policy in, the old one out, each reported.
    let changes = lab.apply(&format!("{header}{}", policy("cache", "UDP")));
    assert!(
        changes.contains("networkpolicy shop/cache configured")
            && changes.contains("networkpolicy shop/db deleted"),
        "{changes}"
    );
    let names: Vec<serde_json::Value> = lab.get("networkpolicies", None)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, ["cache"]);
}
