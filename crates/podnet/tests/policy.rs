//! NetworkPolicy in a multi-node lab, after the upstream e2e suite's model: namespaces x, y
//! and z with pods a, b and c each (serving TCP, UDP and SCTP on ports 80 and 81, each port
//! named as upstream names it), every pod behind a ClusterIP service of its own, spread over
//! two nodes.
//! Each case applies policies, probes every pair through the services and compares the
//! reachability matrix with the truth table the API's rules give.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use support::*;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// A pod of the model: (namespace, name).
type Pod = (&'static str, &'static str);

fn pods() -> Vec<Pod> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |pod| (*ns, *pod)))
        .collect()
}

/// The lab: the model's namespaces (labelled `ns: NAME`), pods and services.
fn model_file() -> String {
    let mut file =
        "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\nspec:\n  nodes: 2\n".to_owned();
    for ns in NAMESPACES {
        let _ = write!(
            file,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"{ns}\"\n  labels: {{ns: \"{ns}\"}}\n"
        );
    }
    for (index, (ns, pod)) in pods().into_iter().enumerate() {
        let node = if index % 2 == 0 { "node1" } else { "node2" };
        let mut containers = String::new();
        for port in [80, 81] {
            let _ = write!(
                containers,
                "  - name: cont-{port}\n    image: registry.k8s.io/e2e-test-images/agnhost:2.52\n    args: [netexec, --http-port={port}, --udp-port={port}, --sctp-port={port}]\n    ports:\n    - {{name: serve-{port}-tcp, containerPort: {port}}}\n    - {{name: serve-{port}-udp, containerPort: {port}, protocol: UDP}}\n    - {{name: serve-{port}-sctp, containerPort: {port}, protocol: SCTP}}\n"
            );
        }
        let _ = write!(
            file,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: \"{ns}\"\n  labels: {{pod: {pod}}}\nspec:\n  nodeName: {node}\n  containers:\n{containers}"
        );
        let _ = write!(
            file,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s-{pod}\n  namespace: \"{ns}\"\nspec:\n  selector: {{pod: {pod}}}\n  ports:\n  - {{name: p80-tcp, port: 80}}\n  - {{name: p80-udp, port: 80, protocol: UDP}}\n  - {{name: p81-tcp, port: 81}}\n  - {{name: p81-udp, port: 81, protocol: UDP}}\n  - {{name: p80-sctp, port: 80, protocol: SCTP}}\n  - {{name: p81-sctp, port: 81, protocol: SCTP}}\n"
        );
    }
    file
}

fn policy(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: \"{namespace}\"\nspec:\n{spec}"
    )
}

/// One probe: to a pod's service on a port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Probe {
    port: u16,
    protocol: &'static str,
}

impl Probe {
    const fn new(port: u16, protocol: &'static str) -> Self {
        Probe { port, protocol }
    }
}

const TCP_80: Probe = Probe::new(80, "tcp");
const TCP_81: Probe = Probe::new(81, "tcp");
const UDP_80: Probe = Probe::new(80, "udp");
const SCTP_80: Probe = Probe::new(80, "sctp");
const SCTP_81: Probe = Probe::new(81, "sctp");

/// The model's lab with each service's address.
struct Model {
    lab: Lab,
    addresses: BTreeMap<Pod, String>,
}

impl Model {
    fn up() -> Self {
        let lab = Lab::up(&model_file());
        let services = lab.get("services", None);
        let mut addresses = BTreeMap::new();
        for (ns, pod) in pods() {
            let address = services["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|service| {
                    service["metadata"]["namespace"] == ns
                        && service["metadata"]["name"] == format!("s-{pod}")
                })
                .and_then(|service| service["spec"]["clusterIP"].as_str())
                .unwrap_or_else(|| panic!("no service for {ns}/{pod}"))
                .to_owned();
            addresses.insert((ns, pod), address);
        }
        Model { lab, addresses }
    }

    /// Applies the model plus `policies`, then waits until the agents have them.
    fn apply(&self, policies: &[String]) {
        self.apply_file(&format!("{}{}", model_file(), policies.concat()));
    }

    /// Applies `file`, then waits until the agents have it.
    fn apply_file(&self, file: &str) {
        self.lab.apply(file);
        // The agents program policies as they hear of them; give them a moment.
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    /// Probes every pair on `probe`, each source running its probes in parallel; returns the
    /// pairs that connected.
    fn reachability(&self, probe: Probe) -> BTreeMap<(Pod, Pod), bool> {
        let podnet = podnet().to_str().unwrap().to_owned();
        let protocol = probe.protocol;
        std::thread::scope(|scope| {
            let handles: Vec<_> = pods()
                .into_iter()
                .map(|from| {
                    let mut script = String::new();
                    for to in pods() {
                        let address = &self.addresses[&to];
                        let _ = writeln!(
                            script,
                            "( {podnet} workload agnhost connect {address}:{} --protocol={protocol} --timeout=1s >/dev/null 2>&1 && echo {}/{} yes || echo {}/{} no ) &",
                            probe.port, to.0, to.1, to.0, to.1
                        );
                    }
                    script.push_str("wait\n");
                    scope.spawn(move || (from, self.lab.exec_in(from.0, from.1, &["sh", "-c", &script])))
                })
                .collect();
            let mut matrix = BTreeMap::new();
            for handle in handles {
                let (from, output) = handle.join().unwrap();
                let text = String::from_utf8_lossy(&output.stdout).into_owned();
                for to in pods() {
                    let reached = text.lines().any(|line| line == format!("{}/{} yes", to.0, to.1));
                    matrix.insert((from, to), reached);
                }
            }
            matrix
        })
    }

    /// Asserts that the matrix on `probe` is `expected(from, to)` for every pair.
    fn assert_matrix(&self, case: &str, probe: Probe, expected: impl Fn(Pod, Pod) -> bool) {
        // A probe that lost its packet to a busy machine is probed once more.
        let mut wrong = self.mismatches(probe, &expected);
        if !wrong.is_empty() {
            wrong = self.mismatches(probe, &expected);
        }
        assert!(
            wrong.is_empty(),
            "{case} on {probe:?}: wrong pairs (from, to, observed):\n{wrong:#?}"
        );
    }

    fn mismatches(&self, probe: Probe, expected: &impl Fn(Pod, Pod) -> bool) -> Vec<(Pod, Pod, bool)> {
        self.reachability(probe)
            .into_iter()
            .filter(|((from, to), reached)| *reached != expected(*from, *to))
            .map(|((from, to), reached)| (from, to, reached))
            .collect()
    }
}

#[test]
fn the_upstream_model_s_cases_give_their_truth_tables() {
    let model = Model::up();
    // No policy: everybody reaches everybody, over each protocol.
    for probe in [TCP_80, UDP_80, SCTP_80] {
        model.assert_matrix("no policy", probe, |_, _| true);
    }

    // Default deny ingress in x: nothing reaches x's pods; the rest is untouched.
    let deny_x = policy(
        "x",
        "deny-ingress",
        "  podSelector: {}\n  policyTypes: [Ingress]\n",
    );
    model.apply(std::slice::from_ref(&deny_x));
    model.assert_matrix("deny ingress in x", TCP_80, |_, to| to.0 != "x");
    model.assert_matrix("deny ingress in x", UDP_80, |_, to| to.0 != "x");
    model.assert_matrix("deny ingress in x", SCTP_80, |_, to| to.0 != "x");
    // The refused packets are counted per pod and direction (x/a runs on node1).
    let metrics = model
        .lab
        .netns_exec("node1", &["curl", "-s", "http://127.0.0.1:10249/metrics"]);
    let dropped: u64 = metrics
        .lines()
        .find(|line| {
            line.starts_with("podnet_policy_dropped_packets_total{pod=\"x/a\",direction=\"ingress\"}")
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no drop counter for x/a:\n{metrics}"));
    assert!(
        dropped >= 9 * 3,
        "every pod's TCP, UDP and SCTP probe to x/a was refused: {dropped}"
    );

    // Plus: x/a admits everyone on its port named serve-80-sctp, over SCTP only (upstream's
    // "should not allow access by TCP when a policy specifies only SCTP").
    let sctp_only = policy(
        "x",
        "allow-sctp-80",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: serve-80-sctp, protocol: SCTP}\n",
    );
    model.apply(&[deny_x.clone(), sctp_only]);
    model.assert_matrix("SCTP only, SCTP 80", SCTP_80, |_, to| to.0 != "x" || to.1 == "a");
    model.assert_matrix("SCTP only, SCTP 81", SCTP_81, |_, to| to.0 != "x");
    model.assert_matrix("SCTP only, TCP 80", TCP_80, |_, to| to.0 != "x");

    // Plus: x/a admits namespace y on port 80 only, and pods b of any namespace on 81.
    let allow_y = policy(
        "x",
        "allow-y-80",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: \"y\"}}\n    ports:\n    - {port: 80}\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {pod: b}}\n    ports:\n    - {port: serve-81-tcp}\n",
    );
    model.apply(&[deny_x.clone(), allow_y.clone()]);
    model.assert_matrix("y to x/a on 80", TCP_80, |from, to| {
        to.0 != "x" || (to == ("x", "a") && from.0 == "y")
    });
    model.assert_matrix("b to x/a on 81 (named)", TCP_81, |from, to| {
        to.0 != "x" || (to == ("x", "a") && from.1 == "b")
    });
    model.assert_matrix("no UDP rule", UDP_80, |_, to| to.0 != "x");

    // Labels change while the policies stay: namespace y relabelled is no longer admitted.
    let relabelled = model_file().replace(
        "name: \"y\"\n  labels: {ns: \"y\"}",
        "name: \"y\"\n  labels: {ns: \"w\"}",
    );
    assert_ne!(relabelled, model_file());
    model.apply_file(&format!("{relabelled}{deny_x}{allow_y}"));
    model.assert_matrix("y relabelled", TCP_80, |_, to| to.0 != "x");
    // A pod's labels change in place (same pod, same address): x/b becomes x/a's friend.
    let friends = policy(
        "x",
        "friends",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {role: friend}}\n",
    );
    model.apply(&[deny_x.clone(), friends.clone()]);
    model.assert_matrix("no friend yet", TCP_80, |_, to| to.0 != "x");
    let x_b = model.lab.pod_ip_in("x", "b");
    let befriended = model_file().replace(
        "name: b\n  namespace: \"x\"\n  labels: {pod: b}",
        "name: b\n  namespace: \"x\"\n  labels: {pod: b, role: friend}",
    );
    assert_ne!(befriended, model_file());
    let said = model.lab.apply(&format!("{befriended}{deny_x}{friends}"));
    assert!(said.contains("pod x/b relabelled"), "{said}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        model.lab.pod_ip_in("x", "b"),
        x_b,
        "x/b was replaced, not relabelled"
    );
    model.assert_matrix("x/b relabelled a friend", TCP_80, |from, to| {
        to.0 != "x" || (to == ("x", "a") && from == ("x", "b"))
    });
    // Allows add up: an allow-all ingress policy beside the deny opens x again.
    let allow_all = policy("x", "allow-all", "  podSelector: {}\n  ingress:\n  - {}\n");
    model.apply(&[deny_x.clone(), allow_all]);
    model.assert_matrix("deny plus allow-all", TCP_80, |_, _| true);
    // Rules that overlap (y's pods are inside the pod network's block, port 80 inside 80-81).
    let block_80 = policy(
        "x",
        "pods-80",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.244.0.0/16}\n    ports:\n    - {port: 80}\n",
    );
    let y_80_81 = policy(
        "x",
        "y-80-81",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: \"y\"}}\n    ports:\n    - {port: 80, endPort: 81}\n",
    );
    model.apply(&[deny_x.clone(), block_80, y_80_81]);
    model.assert_matrix("overlapping rules, 80", TCP_80, |_, to| {
        to.0 != "x" || to.1 == "a"
    });
    model.assert_matrix("overlapping rules, 81", TCP_81, |from, to| {
        to.0 != "x" || (to.1 == "a" && from.0 == "y")
    });

    // Egress: y's pods may only reach z (and nothing else, DNS included); the ingress policies go.
    let egress_y = policy(
        "y",
        "egress-to-z",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: \"z\"}}\n",
    );
    model.apply(std::slice::from_ref(&egress_y));
    model.assert_matrix("y egress to z only", TCP_80, |from, to| {
        from.0 != "y" || to.0 == "z"
    });
    // Egress with DNS: y may also ask the cluster DNS, so names resolve while x stays closed.
    let dns = policy(
        "y",
        "egress-dns",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n      podSelector: {matchLabels: {k8s-app: kube-dns}}\n    ports:\n    - {port: 53, protocol: UDP}\n    - {port: 53, protocol: TCP}\n",
    );
    let resolve = || {
        let output = model.lab.exec_in(
            "y",
            "a",
            &["dig", "+short", "+time=1", "+tries=1", "s-a.z.svc.cluster.local"],
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let refused = resolve();
    assert!(
        refused.contains("timed out"),
        "DNS answered without an egress rule for it: {refused}"
    );
    model.apply(&[egress_y.clone(), dns]);
    assert_eq!(resolve(), model.addresses[&("z", "a")]);
    model.assert_matrix("y egress to z and DNS", TCP_80, |from, to| {
        from.0 != "y" || to.0 == "z"
    });

    // ipBlock with except: z/c admits the pod network but x/a's address; on ports 80-81.
    let x_a = model.lab.pod_ip_in("x", "a");
    let block = policy(
        "z",
        "block",
        &format!(
            "  podSelector: {{matchLabels: {{pod: c}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 10.244.0.0/16, except: [{x_a}/32]}}\n    ports:\n    - {{port: 80, endPort: 81}}\n"
        ),
    );
    model.apply(std::slice::from_ref(&block));
    for probe in [TCP_80, TCP_81] {
        model.assert_matrix("ipBlock except, endPort", probe, |from, to| {
            to != ("z", "c") || from != ("x", "a")
        });
    }

    // Default deny both ways in y: nothing reaches y's pods, and they reach nothing.
    let deny_y = policy(
        "y",
        "deny-all",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
    );
    model.apply(std::slice::from_ref(&deny_y));
    model.assert_matrix("deny both ways in y", TCP_80, |from, to| {
        from.0 != "y" && to.0 != "y"
    });

    // All policies gone: everything reaches everything again.
    model.apply(&[]);
    model.assert_matrix("policies removed", TCP_80, |_, _| true);
}

#[test]
fn an_established_connection_outlives_a_policy_that_denies_new_ones() {
    // The model, and an echo server in x that keeps connections open.
    let echo = "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: echo\n  namespace: \"x\"\n  labels: {pod: echo}\nspec:\n  nodeName: node1\n  containers:\n  - name: echo\n    image: python\n    command: [python3, -c, \"import socketserver\\nclass Echo(socketserver.StreamRequestHandler):\\n  def handle(self):\\n    for line in self.rfile: self.wfile.write(line)\\nsocketserver.ThreadingTCPServer(('', 9000), Echo).serve_forever()\"]\n    readinessProbe:\n      tcpSocket: {port: 9000}\n      periodSeconds: 1\n";
    let lab = Lab::up(&format!("{}{echo}", model_file()));
    let server = lab.pod_ip_in("x", "echo");
    let log = TestDir::new("established");
    let said = log.join("said");
    // y/a connects, says one line, and a second one once the policy is in place.
    let _client = Background::start_in_named(
        &format!("{}_y_a", lab.name),
        "bash",
        &[
            "-c",
            &format!(
                "exec 3<>/dev/tcp/{server}/9000; echo one >&3; read -t 5 a <&3; echo $a > {said}; \
                 while [ ! -e {said}.go ]; do sleep 0.1; done; echo two >&3; read -t 5 b <&3; echo $b >> {said}",
                said = said.display()
            ),
        ],
    );
    let first = eventually(10, || {
        std::fs::read_to_string(&said).ok().filter(|text| text == "one\n")
    });
    assert!(first.is_some(), "the connection did not come up");

    lab.apply(&format!(
        "{}{echo}{}",
        model_file(),
        policy("x", "deny", "  podSelector: {}\n  policyTypes: [Ingress]\n")
    ));
    // New connections are refused...
    let refused = eventually(5, || {
        let output = lab.exec_in(
            "y",
            "a",
            &[
                "bash",
                "-c",
                &format!("timeout 1 bash -c 'exec 3<>/dev/tcp/{server}/9000'"),
            ],
        );
        (!output.status.success()).then_some(())
    });
    assert!(refused.is_some(), "a new connection to x was admitted");
    // ...while the one established before goes on.
    std::fs::write(log.join("said.go"), "").unwrap();
    let second = eventually(10, || {
        std::fs::read_to_string(&said)
            .ok()
            .filter(|text| text == "one\ntwo\n")
    });
    assert!(
        second.is_some(),
        "the established connection was cut: {:?}",
        std::fs::read_to_string(&said)
    );
}

#[test]
fn a_new_pod_is_isolated_before_its_first_packet() {
    // A UDP sink in x logging every datagram that reaches it, and a policy denying all egress
    // of pods labelled `app: fresh`.
    let sink = "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: sink\n  namespace: \"x\"\nspec:\n  nodeName: node1\n  containers:\n  - name: sink\n    image: python\n    command: [python3, -u, -c, \"import socket\\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\\ns.bind(('', 9000))\\nprint('listening')\\nwhile True: print(s.recv(100).decode().strip())\"]\n";
    let base = format!(
        "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\nspec:\n  nodes: 2\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"x\"\n{sink}{}",
        policy(
            "x",
            "deny-fresh-egress",
            "  podSelector: {matchLabels: {app: fresh}}\n  policyTypes: [Egress]\n"
        )
    );
    let lab = Lab::up(&base);
    let logs = || {
        let output = lab.podnet(&["lab", "logs", "--lab", &lab.name, "-n", "x", "sink"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(
        eventually(10, || logs().contains("listening").then_some(())).is_some(),
        "the sink did not start: {}",
        logs()
    );
    let sink_ip = lab.pod_ip_in("x", "sink");

    // Two new pods on the other node send numbered datagrams to the sink from their first
    // instant: 100 back to back, then 100 paced over a second or two. One is selected by the
    // policy, the other is not. That node's agent is frozen while they are created (as a busy
    // agent, or a kubelet publishing the pods' addresses late, would leave it behind): their
    // sandboxes must wait for it rather than start unjudged.
    let sender = |name: &str, app: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: \"x\"\n  labels: {{app: {app}}}\nspec:\n  nodeName: node2\n  containers:\n  - name: send\n    image: bash\n    command: [bash, -c, \"for ((i = 1; i <= 100; i++)); do echo {name} $i > /dev/udp/{sink_ip}/9000; done; for ((i = 101; i <= 200; i++)); do echo {name} $i > /dev/udp/{sink_ip}/9000; sleep 0.01; done; sleep infinity\"]\n"
        )
    };
    let agent = agent_pid(&lab.name, "node2");
    let file = format!(
        "{base}{}{}",
        sender("fresh", "fresh"),
        sender("control", "control")
    );
    std::thread::scope(|scope| {
        let applying = scope.spawn(|| lab.apply(&file));
        run_ok("kill", &["-STOP", &agent]);
        std::thread::sleep(std::time::Duration::from_secs(3));
        run_ok("kill", &["-CONT", &agent]);
        applying.join().unwrap();
    });
    let received = eventually(20, || {
        let text = logs();
        text.contains("control 200").then_some(text)
    })
    .unwrap_or_else(|| panic!("the unselected pod's datagrams did not all arrive:\n{}", logs()));
    // The unselected pod was admitted before its first datagram: nothing of it was lost at
    // start-up. The selected one was isolated before its first: nothing of it got through.
    assert!(
        received.lines().any(|line| line == "control 1"),
        "the unselected pod's first datagram was lost:\n{received}"
    );
    let leaked: Vec<&str> = received
        .lines()
        .filter(|line| line.starts_with("fresh "))
        .collect();
    assert!(
        leaked.is_empty(),
        "datagrams of the isolated pod got through: {leaked:?}"
    );

    // An address of the node's pod subnet that no pod the agent knows holds (an interface
    // wired behind the agent's back, or a pod whose plugin found no agent) is cut off until
    // it is admitted.
    let node_netns = format!("{}_node2", lab.name);
    let subnet = lab.get("nodes", Some("node2"))["items"][0]["spec"]["podCIDR"]
        .as_str()
        .unwrap()
        .to_owned();
    let (network, prefix) = subnet.split_once('/').unwrap();
    let (network, prefix): (std::net::Ipv4Addr, u32) = (network.parse().unwrap(), prefix.parse().unwrap());
    let bridges = lab.netns_exec("node2", &["ip", "-j", "link", "show", "type", "bridge"]);
    let bridge = serde_json::from_str::<serde_json::Value>(&bridges).unwrap()[0]["ifname"]
        .as_str()
        .unwrap()
        .to_owned();
    let stray = TestNetns::new("stray");
    // Near the top of the subnet, where IPAM hands out addresses last.
    let address = std::net::Ipv4Addr::from(u32::from(network) + (1 << (32 - prefix)) - 6);
    let gateway = std::net::Ipv4Addr::from(u32::from(network) + 1);
    run_ok(
        "ip",
        &[
            "-n",
            &node_netns,
            "link",
            "add",
            "stray0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &stray.name,
        ],
    );
    run_ok(
        "ip",
        &[
            "-n",
            &node_netns,
            "link",
            "set",
            "stray0",
            "master",
            &bridge,
            "up",
        ],
    );
    stray.exec_ok(
        "ip",
        &["addr", "add", &format!("{address}/{prefix}"), "dev", "eth0"],
    );
    stray.exec_ok("ip", &["link", "set", "eth0", "up"]);
    stray.exec_ok("ip", &["route", "add", "default", "via", &gateway.to_string()]);
    let send = |tag: &str| {
        stray.exec_ok(
            "bash",
            &[
                "-c",
                &format!("for i in 1 2 3 4 5; do echo {tag} $i > /dev/udp/{sink_ip}/9000; sleep 0.1; done"),
            ],
        );
    };
    send("stray");
    run_ok(
        "ip",
        &[
            "netns",
            "exec",
            &node_netns,
            "nft",
            "add",
            "element",
            "ip",
            "podnet-policy",
            "admitted",
            &format!("{{ {address} }}"),
        ],
    );
    send("admitted");
    let received = eventually(10, || {
        let text = logs();
        text.contains("admitted 5").then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "the stray address, once admitted, did not reach the sink:\n{}",
            logs()
        )
    });
    assert!(
        !received.contains("stray "),
        "an address no pod holds reached the sink before it was admitted:\n{received}"
    );
}

/// The process of the agent of `node` in lab `lab`.
fn agent_pid(lab: &str, node: &str) -> String {
    let arguments = |pid: &str| -> Vec<String> {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|byte| *byte == 0)
            .map(|word| String::from_utf8_lossy(word).into_owned())
            .collect()
    };
    let has = |words: &[String], flag: &str, value: &str| {
        words.windows(2).any(|pair| pair[0] == flag && pair[1] == value)
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let words = arguments(&pid.to_string());
            words.iter().any(|word| word == "agent")
                && has(&words, "--node", node)
                && has(&words, "--lab", lab)
        })
        .map(|pid| pid.to_string())
        .unwrap_or_else(|| panic!("no agent process for {node} of lab {lab}"))
}

#[test]
fn a_policy_edit_never_drops_what_both_versions_allow_nor_passes_what_neither_does() {
    // A server in x isolated for ingress, "good" allowed to it on 80, "bad" not; both probe it
    // continuously while a second policy flips between two versions that both allow good on
    // 80 and neither bad, but cut the allowed ranges differently (an ipBlock with bad carved
    // out and a port range around 80, against a pod selector with another range).
    let pods = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"x\"\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: srv\n  namespace: \"x\"\n  labels: {role: srv}\nspec:\n  nodeName: node1\n  containers:\n  - name: srv\n    image: registry.k8s.io/e2e-test-images/agnhost:2.52\n    args: [netexec, --http-port=80]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: good\n  namespace: \"x\"\n  labels: {role: good}\nspec:\n  nodeName: node2\n  containers:\n  - {name: pause, image: pause}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  namespace: \"x\"\n  labels: {role: bad}\nspec:\n  nodeName: node2\n  containers:\n  - {name: pause, image: pause}\n";
    let header = "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\nspec:\n  nodes: 2\n";
    let standing = [
        policy(
            "x",
            "deny",
            "  podSelector: {matchLabels: {role: srv}}\n  policyTypes: [Ingress]\n",
        ),
        policy(
            "x",
            "allow-good",
            "  podSelector: {matchLabels: {role: srv}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {role: good}}\n    ports:\n    - {port: 80}\n",
        ),
    ]
    .concat();
    let lab = Lab::up(&format!("{header}{pods}{standing}"));
    let (server, bad) = (lab.pod_ip_in("x", "srv"), lab.pod_ip_in("x", "bad"));
    let versions = [
        policy(
            "x",
            "churn",
            &format!(
                "  podSelector: {{matchLabels: {{role: srv}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 10.244.0.0/16, except: [{bad}/32]}}\n    ports:\n    - {{port: 79, endPort: 81}}\n"
            ),
        ),
        policy(
            "x",
            "churn",
            "  podSelector: {matchLabels: {role: srv}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {role: good}}\n    ports:\n    - {port: 80, endPort: 90}\n",
        ),
    ];
    lab.apply(&format!("{header}{pods}{standing}{}", versions[0]));

    let dir = TestDir::new("churn");
    let stop = dir.join("stop");
    let probe = |pod: &str| {
        let log = dir.join(pod);
        let script = format!(
            "while [ ! -e {stop} ]; do timeout 1 bash -c 'exec 3<>/dev/tcp/{server}/80' 2>/dev/null && echo pass >> {log} || echo fail >> {log}; done",
            stop = stop.display(),
            log = log.display()
        );
        Background::start_in_named(&format!("{}_x_{pod}", lab.name), "bash", &["-c", &script])
    };
    let _probes = [probe("good"), probe("bad")];
    let count = |pod: &str, verdict: &str| {
        std::fs::read_to_string(dir.join(pod))
            .unwrap_or_default()
            .lines()
            .filter(|line| *line == verdict)
            .count()
    };
    assert!(
        eventually(10, || (count("good", "pass") > 0).then_some(())).is_some(),
        "good never reached the server"
    );
    // The kernel follows each version: its allowed ranges say which.
    let ports_set = format!("ingress-{}-ports", server.replace('.', "-"));
    let ranges = || {
        lab.netns_exec(
            "node1",
            &["nft", "list", "set", "ip", "podnet-policy", &ports_set],
        )
    };
    let marks = ["tcp . 79-81", "tcp . 80-90"];
    for edit in 1..=30 {
        lab.apply(&format!("{header}{pods}{standing}{}", versions[edit % 2]));
        if edit <= 2 {
            let mark = marks[edit % 2];
            assert!(
                eventually(5, || ranges().contains(mark).then_some(())).is_some(),
                "version {} never reached the kernel:\n{}",
                edit % 2,
                ranges()
            );
        }
    }
    std::fs::write(&stop, "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (passed, failed) = (count("good", "pass"), count("good", "fail"));
    let (leaked, refused) = (count("bad", "pass"), count("bad", "fail"));
    assert!(
        passed > 30 && refused > 0,
        "too few probes to judge: good {passed}/{failed}, bad {leaked}/{refused}"
    );
    assert_eq!(failed, 0, "good was dropped during the edits ({passed} passed)");
    assert_eq!(leaked, 0, "bad got through during the edits ({refused} refused)");
}
