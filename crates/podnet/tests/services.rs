//! Services end to end, in multi-node labs: the lab's control plane allocates and computes
//! EndpointSlices, every node's agent programs nftables, and traffic goes through the real
//! kernel. Seed 004's `clusterip-dnat` and `nodeport-dnat`, then kube-proxy's semantics one by
//! one.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const SEED_004: &str = include_str!("../../../examples/seed-004-cross-node.yaml");

fn header(nodes: usize) -> String {
    format!("apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\nspec:\n  nodes: {nodes}\n")
}

/// A pod running `image` (whoami, agnhost netexec with HTTP on 80 and UDP on 81, or a client).
fn pod(name: &str, node: &str, labels: &str, kind: &str) -> String {
    let container = match kind {
        "whoami" => "  - {name: whoami, image: traefik/whoami}\n".to_owned(),
        "agnhost" => "  - name: agnhost\n    image: registry.k8s.io/e2e-test-images/agnhost:2.52\n    args: [netexec, --http-port=80, --udp-port=81]\n    ports:\n    - {name: http, containerPort: 80}\n    - {name: dns, containerPort: 81, protocol: UDP}\n".to_owned(),
        _ => "  - {name: c, image: busybox, command: [sleep, infinity]}\n".to_owned(),
    };
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  nodeName: {node}\n  containers:\n{container}"
    )
}

fn service(name: &str, spec: &str) -> String {
    format!("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn field(answer: &str, name: &str) -> String {
    answer
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {answer:?}"))
        .to_owned()
}

fn remote_ip(answer: &str) -> String {
    field(answer, "RemoteAddr").rsplit_once(':').unwrap().0.to_owned()
}

/// curl from inside a pod: the body, or the exit code.
fn curl(lab: &Lab, pod: &str, url: &str) -> Result<String, i32> {
    let output = lab.exec_output(pod, None, &["curl", "-sS", "--max-time", "2", url]);
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(output.status.code().unwrap_or(-1))
    }
}

/// curl from one of the lab's namespaces (`external`, `node1`).
fn curl_from(lab: &Lab, netns: &str, url: &str, seconds: u32) -> Result<String, i32> {
    let output = Command::new("ip")
        .args(["netns", "exec", &format!("{}_{netns}", lab.name)])
        .args(["curl", "-sS", "--max-time", &seconds.to_string(), url])
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(output.status.code().unwrap_or(-1))
    }
}

/// `agnhost connect` over UDP from a pod: the answering pod's name.
fn udp_hostname(lab: &Lab, pod: &str, destination: &str) -> Result<String, String> {
    let podnet = podnet().to_str().unwrap().to_owned();
    let output = lab.exec_output(
        pod,
        None,
        &[
            &podnet,
            "workload",
            "agnhost",
            "connect",
            destination,
            "--protocol=udp",
            "--timeout=1s",
        ],
    );
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The agent's proxy table on `node`.
fn proxy_table(lab: &Lab, node: &str) -> String {
    lab.netns_exec(node, &["nft", "list", "table", "ip", "podnet-proxy"])
}

#[test]
fn seed_004_clusterip_and_nodeport_dnat_as_the_seed_shows() {
    let lab = Lab::up(&SEED_004.replace("name: seed004", "name: NAME"));
    let (whoami, client) = (lab.pod_ip("clusterip-dnat"), lab.pod_ip("client"));
    let cluster_ip = lab.service_ip("clusterip-dnat");
    assert!(cluster_ip.starts_with("10.96."), "{cluster_ip}");
    // ClusterIP: the destination becomes the pod's own IP (DNAT); the client is seen as itself.
    let answer = curl(&lab, "client", &format!("http://{cluster_ip}")).unwrap();
    assert_eq!(field(&answer, "Hostname"), "clusterip-dnat");
    assert!(answer.contains(&format!("IP: {whoami}\n")), "{answer}");
    assert_eq!(remote_ip(&answer), client, "{answer}");
    assert_eq!(field(&answer, "Host"), cluster_ip);

    // NodePort, from outside the cluster, on every node: DNAT to the pod on k8s-w1, and SNAT
    // to the node that took the connection (its tunnel address when the pod is elsewhere).
    for (node, own_addresses) in [
        ("192.168.10.11", ["10.244.0.1", "192.168.10.11"]),
        ("192.168.10.12", ["10.244.1.0", "192.168.10.12"]),
        ("192.168.10.13", ["10.244.2.0", "192.168.10.13"]),
    ] {
        let answer = curl_from(&lab, "external", &format!("http://{node}:31010"), 2).unwrap();
        assert_eq!(field(&answer, "Hostname"), "nodeport-dnat");
        let remote = remote_ip(&answer);
        assert!(
            own_addresses.contains(&remote.as_str()),
            "via {node}: RemoteAddr {remote}\n{answer}"
        );
        assert_eq!(field(&answer, "Host"), format!("{node}:31010"));
    }

    // The nginx Deployments behind their Services, as in the seed.
    let nginx = curl(
        &lab,
        "client",
        &format!("http://{}", lab.service_ip("nginx-test")),
    )
    .unwrap();
    assert!(nginx.contains("<title>Welcome to nginx!</title>"), "{nginx}");
    let nodeport = curl_from(&lab, "external", "http://192.168.10.13:31000", 2).unwrap();
    assert!(nodeport.contains("Welcome to nginx!"), "{nodeport}");
    let status = lab.status();
    assert!(status.contains("nodeport-dnat         NodePort"), "{status}");
    assert!(status.contains("80:31010/TCP"), "{status}");
}

#[test]
fn traffic_is_spread_over_endpoints_of_several_ports_and_sticks_with_client_ip_affinity() {
    let mut file = header(2);
    for (name, node) in [("a1", "node1"), ("a2", "node2"), ("a3", "node2")] {
        file.push_str(&pod(name, node, "app: echo", "agnhost"));
    }
    file.push_str(&pod("client", "node1", "role: client", "client"));
    file.push_str(&service(
        "echo",
        "  selector: {app: echo}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: dns, port: 53, targetPort: dns, protocol: UDP}\n",
    ));
    file.push_str(&service(
        "sticky",
        "  selector: {app: echo}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports:\n  - {port: 80}\n",
    ));
    let lab = Lab::up(&file);
    let echo = lab.service_ip("echo");
    assert!(
        eventually(5, || curl(&lab, "client", &format!("http://{echo}/hostname"))
            .ok())
        .is_some()
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        seen.insert(curl(&lab, "client", &format!("http://{echo}/hostname")).unwrap());
    }
    assert_eq!(seen.len(), 3, "every endpoint takes a share: {seen:?}");
    // The UDP port of the same service, to the named target port 81.
    let answer = udp_hostname(&lab, "client", &format!("{echo}:53")).unwrap();
    assert!(["a1", "a2", "a3"].contains(&answer.as_str()), "{answer}");
    // ClientIP affinity: one client, one endpoint.
    let sticky = lab.service_ip("sticky");
    let chosen: std::collections::BTreeSet<String> = (0..15)
        .map(|_| curl(&lab, "client", &format!("http://{sticky}/hostname")).unwrap())
        .collect();
    assert_eq!(chosen.len(), 1, "{chosen:?}");
    let table = proxy_table(&lab, "node1");
    assert!(
        table.contains("flags dynamic,timeout") && table.contains("timeout 1m"),
        "{table}"
    );
}

#[test]
fn a_service_without_endpoints_refuses_at_once() {
    let mut file = header(1);
    file.push_str(&pod("client", "node1", "role: client", "client"));
    file.push_str(&pod("web", "node1", "app: web", "whoami"));
    file.push_str(&service(
        "empty",
        "  selector: {app: nothing}\n  ports:\n  - {name: http, port: 80}\n  - {name: dns, port: 53, protocol: UDP}\n",
    ));
    file.push_str(&service(
        "web",
        "  type: NodePort\n  selector: {app: web}\n  ports:\n  - {port: 80}\n",
    ));
    file.push_str(&service(
        "empty-nodeport",
        "  type: NodePort\n  selector: {app: nothing}\n  ports:\n  - {port: 80, nodePort: 30999}\n",
    ));
    let labelled = "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: elsewhere\n  labels: {service.kubernetes.io/service-proxy-name: foo-bar}\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80}\n";
    file.push_str(labelled);
    let lab = Lab::up(&file);
    let empty = lab.service_ip("empty");
    let started = Instant::now();
    assert_eq!(
        curl(&lab, "client", &format!("http://{empty}")),
        Err(7),
        "curl: connection refused"
    );
    let refused = udp_hostname(&lab, "client", &format!("{empty}:53")).unwrap_err();
    assert!(refused.to_lowercase().contains("refused"), "{refused}");
    // Another port of a ClusterIP that has endpoints is refused too.
    let web = lab.service_ip("web");
    assert_eq!(curl(&lab, "client", &format!("http://{web}:8080")), Err(7));
    assert_eq!(
        curl_from(&lab, "external", "http://192.168.10.11:30999", 2),
        Err(7)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusals must not wait for a timeout"
    );
    // What works still works.
    assert!(curl(&lab, "client", &format!("http://{web}")).is_ok());

    // A service another proxy serves (as kube-proxy, podnet leaves it alone) until the label goes.
    let elsewhere = format!("http://{}", lab.service_ip("elsewhere"));
    assert!(curl(&lab, "client", &elsewhere).is_err());
    lab.apply(&file.replace(
        "  labels: {service.kubernetes.io/service-proxy-name: foo-bar}\n",
        "",
    ));
    let served = eventually(5, || curl(&lab, "client", &elsewhere).ok());
    assert!(served.is_some_and(|answer| answer.contains("Hostname: web")));
}

#[test]
fn load_balancers_are_announced_and_local_policy_keeps_the_client_address() {
    let mut file = header(2);
    file.push_str(&pod("web", "node1", "app: web", "whoami"));
    file.push_str(&service(
        "local",
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {app: web}\n  ports:\n  - {port: 80}\n",
    ));
    file.push_str(&service(
        "cluster",
        "  type: LoadBalancer\n  selector: {app: web}\n  ports:\n  - {port: 8080, targetPort: 80}\n",
    ));
    let lab = Lab::up(&file);
    let services = lab.get("services", None);
    let find = |name: &str| -> Value {
        services["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["metadata"]["name"] == name)
            .cloned()
            .unwrap()
    };
    let (local, cluster) = (find("local"), find("cluster"));
    let local_ip = local["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap()
        .to_owned();
    let cluster_ip = cluster["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        local_ip.starts_with("192.168.10.2") && cluster_ip.starts_with("192.168.10.2"),
        "{services}"
    );
    assert_ne!(local_ip, cluster_ip);
    let node_port = local["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let health_port = local["spec"]["healthCheckNodePort"].as_u64().unwrap();
    assert!(lab.status().contains(&local_ip));

    // Local policy: the load balancer's address reaches the pod with the client's own address.
    let answer = eventually(5, || {
        curl_from(&lab, "external", &format!("http://{local_ip}"), 1).ok()
    })
    .unwrap();
    assert_eq!(remote_ip(&answer), "192.168.10.254", "{answer}");
    let direct = curl_from(&lab, "external", &format!("http://192.168.10.11:{node_port}"), 2).unwrap();
    assert_eq!(remote_ip(&direct), "192.168.10.254");
    // node2 has no local endpoint: its node port drops (a timeout, not a refusal) ...
    assert_eq!(
        curl_from(&lab, "external", &format!("http://192.168.10.12:{node_port}"), 1),
        Err(28)
    );
    // ... and its health check says so, as kube-proxy's does.
    let healthy = curl_from(
        &lab,
        "external",
        &format!("http://192.168.10.11:{health_port}"),
        2,
    )
    .unwrap();
    assert!(healthy.contains("\"localEndpoints\":1"), "{healthy}");
    let output = Command::new("ip")
        .args(["netns", "exec", &format!("{}_external", lab.name)])
        .args([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://192.168.10.12:{health_port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "503");

    // Cluster policy: any node takes it and masquerades.
    let answer = eventually(5, || {
        curl_from(&lab, "external", &format!("http://{cluster_ip}:8080"), 1).ok()
    })
    .unwrap();
    assert_ne!(remote_ip(&answer), "192.168.10.254", "{answer}");
    // Exactly one node holds (and answers ARP for) each address; for the Local policy, the
    // node with the endpoint.
    let holding = |ip: &str| -> Vec<&str> {
        ["node1", "node2"]
            .into_iter()
            .filter(|node| {
                lab.netns_exec(node, &["ip", "-o", "addr", "show", "dev", "lo"])
                    .contains(&format!("{ip}/32"))
            })
            .collect()
    };
    assert_eq!(holding(&cluster_ip).len(), 1);
    assert_eq!(holding(&local_ip), ["node1"]);
}

#[test]
fn internal_local_policy_external_ips_and_hairpin() {
    let mut file = header(2);
    file.push_str(&pod("web", "node1", "app: web", "whoami"));
    file.push_str(&pod("near", "node1", "role: client", "client"));
    file.push_str(&pod("far", "node2", "role: client", "client"));
    file.push_str(&service(
        "local",
        "  internalTrafficPolicy: Local\n  selector: {app: web}\n  ports:\n  - {port: 80}\n",
    ));
    file.push_str(&service(
        "public",
        "  selector: {app: web}\n  externalIPs: [192.168.10.11]\n  ports:\n  - {port: 8080, targetPort: 80}\n",
    ));
    let lab = Lab::up(&file);
    let local = lab.service_ip("local");
    assert!(curl(&lab, "near", &format!("http://{local}")).is_ok());
    assert_eq!(
        curl(&lab, "far", &format!("http://{local}")),
        Err(28),
        "no local endpoint: dropped"
    );
    // externalIPs: traffic arriving for them is the service's.
    let answer = curl_from(&lab, "external", "http://192.168.10.11:8080", 2).unwrap();
    assert_eq!(field(&answer, "Hostname"), "web");
    // Hairpin: the pod reaches itself through its service.
    let public = lab.service_ip("public");
    let answer = lab.exec(
        "web",
        None,
        &["curl", "-sS", "--max-time", "2", &format!("http://{public}:8080")],
    );
    assert_eq!(field(&answer, "Hostname"), "web");
    assert_ne!(
        remote_ip(&answer),
        lab.pod_ip("web"),
        "hairpin traffic is masqueraded"
    );
}

#[test]
fn terminating_endpoints_serve_only_while_no_ready_one_exists() {
    let slow = |name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: web}}\nspec:\n  nodeName: node1\n  terminationGracePeriodSeconds: 20\n  containers:\n  - name: whoami\n    image: traefik/whoami\n    lifecycle:\n      preStop:\n        sleep: {{seconds: 8}}\n"
        )
    };
    let svc = service("web", "  selector: {app: web}\n  ports:\n  - {port: 80}\n");
    let mut file = header(1);
    file.push_str(&pod("client", "node1", "role: client", "client"));
    file.push_str(&slow("old"));
    file.push_str(&slow("new"));
    file.push_str(&svc);
    let lab = Lab::up(&file);
    let ip = lab.service_ip("web");
    // `old` goes: terminating while its preStop hook runs; `new` is ready, so only it serves.
    let mut without_old = header(1);
    without_old.push_str(&pod("client", "node1", "role: client", "client"));
    without_old.push_str(&slow("new"));
    without_old.push_str(&svc);
    lab.apply(&without_old);
    let slices = lab.get("endpointslices", None).to_string();
    assert!(slices.contains("\"terminating\":true"), "{slices}");
    for _ in 0..10 {
        let answer = curl(&lab, "client", &format!("http://{ip}")).unwrap();
        assert_eq!(field(&answer, "Hostname"), "new");
    }
    assert!(lab.status().contains("Terminating"), "{}", lab.status());
    // Now `new` goes too, and nothing ready is left: the terminating pod still serves.
    let mut only_client = header(1);
    only_client.push_str(&pod("client", "node1", "role: client", "client"));
    only_client.push_str(&svc);
    lab.apply(&only_client);
    let answer = curl(&lab, "client", &format!("http://{ip}")).unwrap();
    assert!(
        ["old", "new"].contains(&field(&answer, "Hostname").as_str()),
        "{answer}"
    );
    // Once they are gone, the service refuses.
    let refused = eventually(25, || {
        (curl(&lab, "client", &format!("http://{ip}")) == Err(7)).then_some(())
    });
    assert!(refused.is_some(), "{}", lab.status());
}

#[test]
fn udp_clients_leave_a_removed_endpoint_and_established_tcp_survives_changes() {
    let mut file = header(2);
    file.push_str(&pod("client", "node1", "role: client", "client"));
    file.push_str(&pod("first", "node2", "app: echo", "agnhost"));
    let svc = service(
        "echo",
        "  selector: {app: echo}\n  ports:\n  - {name: http, port: 80}\n  - {name: dns, port: 53, targetPort: 81, protocol: UDP}\n",
    );
    file.push_str(&svc);
    let lab = Lab::up(&file);
    let ip = lab.service_ip("echo");
    let dir = TestDir::new("steps");
    // One UDP flow (fixed source port) and one TCP connection, both kept across changes.
    let script = format!(
        r#"
import socket, os, time, http.client
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 40053))
    s.settimeout(1)
    s.sendto(b"hostname", ("{ip}", 53))
    try:
        return s.recvfrom(100)[0].decode()
    except OSError as err:
        return "timeout"
    finally:
        s.close()
tcp = http.client.HTTPConnection("{ip}", 80, timeout=2)
def get():
    tcp.request("GET", "/hostname")
    return tcp.getresponse().read().decode()
out = open("{out}", "w")
out.write("udp1 " + udp() + "\n"); out.write("tcp1 " + get() + "\n"); out.flush()
while not os.path.exists("{go}"): time.sleep(0.05)
out.write("udp2 " + udp() + "\n"); out.write("tcp2 " + get() + "\n"); out.flush()
out.write("done\n"); out.close()
"#,
        out = dir.join("out").display(),
        go = dir.join("go").display(),
    );
    std::fs::write(dir.join("client.py"), script).unwrap();
    let netns = format!("{}_default_client", lab.name);
    let _client = Background::start_in_named(&netns, "python3", &[dir.join("client.py").to_str().unwrap()]);
    let read = || std::fs::read_to_string(dir.join("out")).unwrap_or_default();
    assert!(
        eventually(10, || read().contains("tcp1").then_some(())).is_some(),
        "{}",
        read()
    );
    assert!(read().contains("udp1 first"), "{}", read());

    // The UDP port's target moves from 81 to 82: `first:81` is no endpoint any more, while the
    // TCP port keeps `first:80`; another service comes meanwhile.
    let mut changed = header(2);
    changed.push_str(&pod("client", "node1", "role: client", "client"));
    changed.push_str(&pod("first", "node2", "app: echo", "agnhost"));
    changed.push_str(&pod("second", "node1", "app: echo2", "agnhost"));
    changed.push_str(&service(
        "echo",
        "  selector: {app: echo}\n  ports:\n  - {name: http, port: 80}\n  - {name: dns, port: 53, targetPort: 82, protocol: UDP}\n",
    ));
    changed.push_str(&service(
        "echo2",
        "  selector: {app: echo2}\n  ports:\n  - {port: 80}\n",
    ));
    lab.apply(&changed);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.join("go"), "").unwrap();
    assert!(
        eventually(10, || read().contains("done").then_some(())).is_some(),
        "{}",
        read()
    );
    let out = read();
    // The UDP flow's endpoint (first:81) is no endpoint any more: its conntrack entry went, and
    // the same flow met the rules again (nothing listens on 82: no answer, but no stale DNAT).
    assert!(out.contains("udp2 timeout"), "{out}");
    // The established TCP connection to `first` went on untouched.
    assert!(out.contains("tcp2 first"), "{out}");
    let flows = lab.netns_exec(
        "node1",
        &["conntrack", "-L", "-p", "udp", "--orig-port-src", "40053"],
    );
    assert!(!flows.contains("dport=81 "), "{flows}");
}

#[test]
fn headless_external_name_and_sctp_services() {
    let mut file = header(1);
    file.push_str(&pod("web", "node1", "app: web", "whoami"));
    file.push_str(&service(
        "headless",
        "  clusterIP: None\n  selector: {app: web}\n  ports:\n  - {port: 80}\n",
    ));
    file.push_str(&service(
        "external",
        "  type: ExternalName\n  externalName: example.org\n",
    ));
    file.push_str(&service(
        "sctp",
        "  selector: {app: web}\n  ports:\n  - {port: 9999, protocol: SCTP}\n",
    ));
    let lab = Lab::up(&file);
    let status = lab.status();
    assert!(
        status
            .lines()
            .any(|line| line.contains("headless") && line.contains(" None ")),
        "{status}"
    );
    assert!(status.contains("example.org"), "{status}");
    // Headless services have endpoints (for DNS) but no rules; ExternalName ones neither.
    let slices = lab.get("endpointslices", None).to_string();
    assert!(
        slices.contains("\"kubernetes.io/service-name\":\"headless\""),
        "{slices}"
    );
    let table = eventually(5, || {
        let table = proxy_table(&lab, "node1");
        table.contains("sctp . 9999").then_some(table)
    })
    .expect("the SCTP service is programmed");
    let sctp_ip = lab.service_ip("sctp");
    assert!(
        table.contains(&format!("{sctp_ip} . sctp . 9999 : goto cluster-1")),
        "{table}"
    );
    let elements = table.matches(" : goto ").count();
    assert_eq!(
        elements,
        1 + 3,
        "only the SCTP service and kube-dns's three ports have a verdict:\n{table}"
    );
}

#[test]
fn bad_services_are_refused_naming_object_and_field_and_change_nothing() {
    let mut file = header(1);
    file.push_str(&pod("web", "node1", "app: web", "whoami"));
    file.push_str(&service(
        "dns",
        "  clusterIP: 10.96.0.20\n  selector: {app: web}\n  ports:\n  - {port: 53}\n",
    ));
    file.push_str(&service(
        "web",
        "  type: NodePort\n  selector: {app: web}\n  ports:\n  - {port: 80, nodePort: 30080}\n",
    ));
    let lab = Lab::up(&file);
    let before = lab.get("services", None);
    for (extra, expected) in [
        (
            service("other", "  clusterIP: 10.96.0.20\n  ports:\n  - {port: 80}\n"),
            "Service default/other: spec.clusterIP: Invalid value: \"10.96.0.20\": provided IP is already allocated to Service default/dns",
        ),
        (
            service("other", "  clusterIP: 10.96.0.10\n  ports:\n  - {port: 80}\n"),
            "provided IP is already allocated to Service kube-system/kube-dns",
        ),
        (
            service("kube-dns\n  namespace: kube-system", "  ports:\n  - {port: 53}\n"),
            "Service kube-system/kube-dns is the lab's DNS add-on",
        ),
        (
            service(
                "other",
                "  type: NodePort\n  ports:\n  - {port: 80, nodePort: 30080}\n",
            ),
            "Service default/other: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated to Service default/web",
        ),
        (
            service(
                "other",
                "  type: NodePort\n  ports:\n  - {port: 80, nodePort: 3}\n",
            ),
            "Service default/other: spec.ports[0].nodePort: Invalid value: 3",
        ),
        (
            service("other", "  ports:\n  - {name: x}\n"),
            "spec.ports[0].port: Required value",
        ),
        (
            service("other", "  ports:\n  - {port: 80, protocol: ICMP}\n"),
            "spec.ports[0].protocol: Unsupported value: \"ICMP\"",
        ),
        (
            service("other", "  selector: [app]\n  ports:\n  - {port: 80}\n"),
            "spec.selector: invalid type: sequence, expected a map",
        ),
        (
            service("other", "  clusterIP: 10.200.0.1\n  ports:\n  - {port: 80}\n"),
            "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16",
        ),
    ] {
        let error = lab.apply_refused(&format!("{file}{extra}"));
        assert!(error.contains(expected), "{extra}\n=> {error}");
        assert_eq!(
            lab.get("services", None),
            before,
            "a refused file changed the services"
        );
    }
}

#[test]
fn the_control_plane_allocates_and_computes_endpoint_slices_like_a_cluster() {
    let mut file = header(2);
    file.push_str(&pod("named", "node1", "app: web", "agnhost"));
    file.push_str(&pod("plain", "node2", "app: web", "whoami"));
    file.push_str(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: unready\n  labels: {app: slow}\nspec:\n  nodeName: node2\n  containers:\n  - name: whoami\n    image: traefik/whoami\n    readinessProbe:\n      exec: {command: [\"false\"]}\n      periodSeconds: 1\n",
    );
    file.push_str(&pod("client", "node1", "role: client", "client"));
    file.push_str(&service("web", "  clusterIP: 10.96.7.7\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n"));
    file.push_str(&service(
        "slow",
        "  selector: {app: slow}\n  ports:\n  - {port: 80}\n",
    ));
    file.push_str(&service(
        "slow-published",
        "  publishNotReadyAddresses: true\n  selector: {app: slow}\n  ports:\n  - {port: 80}\n",
    ));
    file.push_str(&service("manual", "  ports:\n  - {name: http, port: 80}\n"));
    file.push_str(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: manual-1\n  labels: {kubernetes.io/service-name: manual}\naddressType: IPv4\nendpoints:\n- addresses: [PLAIN]\n  nodeName: node2\nports:\n- {name: http, port: 80}\n",
    );
    // The manual slice names `plain`'s address, known once it runs: start without it.
    let lab = Lab::up(&file.replace(
        "- addresses: [PLAIN]\n  nodeName: node2\n",
        "- addresses: [10.244.1.250]\n",
    ));
    lab.apply(&file.replace("PLAIN", &lab.pod_ip("plain")));
    assert_eq!(
        lab.service_ip("web"),
        "10.96.7.7",
        "a fixed clusterIP is honoured"
    );
    for name in ["slow", "manual"] {
        let ip: std::net::Ipv4Addr = lab.service_ip(name).parse().unwrap();
        assert!(
            ip.octets()[..2] == [10, 96] && ip != std::net::Ipv4Addr::new(10, 96, 0, 1),
            "{ip}"
        );
    }
    let slices = lab.get("endpointslices", None);
    let of = |service: &str| -> Vec<Value> {
        slices["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|slice| slice["metadata"]["labels"]["kubernetes.io/service-name"] == service)
            .cloned()
            .collect()
    };
    // `web`'s named target port: `named` (agnhost) has it, `plain` (whoami) does not, so only
    // `named` is an endpoint of that port.
    let web = of("web");
    let with_port: Vec<&Value> = web.iter().filter(|slice| slice["ports"].is_array()).collect();
    assert_eq!(with_port.len(), 1, "{web:?}");
    assert_eq!(with_port[0]["ports"][0]["port"], 80);
    assert_eq!(with_port[0]["endpoints"].as_array().unwrap().len(), 1);
    assert_eq!(with_port[0]["endpoints"][0]["nodeName"], "node1");
    assert_eq!(with_port[0]["endpoints"][0]["targetRef"]["name"], "named");
    assert_eq!(
        with_port[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    // A pod that is not ready: an endpoint, not ready, unless the service publishes it anyway.
    let ready = |service: &str| of(service)[0]["endpoints"][0]["conditions"]["ready"].clone();
    assert_eq!(ready("slow"), false);
    assert_eq!(ready("slow-published"), true);
    // Traffic follows: `web` reaches `named`, `slow` refuses, `manual` reaches `plain`.
    let client_curl = |service: &str| {
        curl(
            &lab,
            "client",
            &format!("http://{}/hostname", lab.service_ip(service)),
        )
    };
    assert_eq!(client_curl("web").unwrap(), "named");
    assert_eq!(client_curl("slow"), Err(7));
    assert!(client_curl("manual").unwrap().contains("Hostname: plain"));
}

#[test]
fn node_selectors_pending_pods_and_replicas_replaced_with_new_names() {
    let nodes = "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\nspec:\n  nodes:\n  - {name: k8s-w0, labels: {disk: ssd}}\n  - {name: k8s-w1}\n  - {name: k8s-w2}\n";
    let deployment = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      nodeSelector: {kubernetes.io/hostname: k8s-w1}\n      containers:\n      - {name: whoami, image: traefik/whoami}\n";
    let nowhere = "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: nowhere\nspec:\n  nodeSelector: {disk: nvme}\n  containers:\n  - {name: c, image: busybox, command: [sleep, infinity]}\n";
    let fast = "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: fast\nspec:\n  nodeSelector: {disk: ssd}\n  containers:\n  - {name: c, image: busybox, command: [sleep, infinity]}\n";
    let lab = Lab::up(&format!("{nodes}{deployment}{nowhere}{fast}"));
    let status = lab.status();
    let replicas: Vec<&str> = status.lines().filter(|line| line.contains(" web-")).collect();
    assert_eq!(replicas.len(), 3, "{status}");
    assert!(replicas.iter().all(|line| line.ends_with("k8s-w1")), "{status}");
    assert!(lab.pod_line("fast").ends_with("k8s-w0"), "{status}");
    assert!(lab.pod_line("nowhere").contains("Pending"), "{status}");
    assert!(
        status.contains("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."),
        "{status}"
    );
    // The Deployment now wants k8s-w2 and k8s-w1 goes: its replicas come back elsewhere, as new
    // pods with new names.
    let old: Vec<String> = replicas
        .iter()
        .map(|line| line.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    let moved = deployment.replace("k8s-w1", "k8s-w2");
    let without_w1 = nodes.replace("  - {name: k8s-w1}\n", "");
    lab.apply(&format!("{without_w1}{moved}{nowhere}{fast}"));
    let status = lab.status();
    let replicas: Vec<&str> = status
        .lines()
        .filter(|line| line.contains(" web-") && line.contains("Running"))
        .collect();
    assert_eq!(replicas.len(), 3, "{status}");
    for line in replicas {
        let name = line.split_whitespace().nth(1).unwrap();
        assert!(!old.contains(&name.to_owned()), "{name} kept its name\n{status}");
        assert!(line.ends_with("k8s-w2"), "{status}");
    }
}

#[test]
fn the_proxy_serves_healthz_and_metrics_and_survives_its_own_restart() {
    let mut file = header(1);
    file.push_str(&pod("web", "node1", "app: web", "whoami"));
    file.push_str(&pod("client", "node1", "role: client", "client"));
    file.push_str(&service(
        "web",
        "  selector: {app: web}\n  ports:\n  - {port: 80}\n",
    ));
    let lab = Lab::up(&file);
    let healthz = eventually(5, || {
        curl_from(&lab, "node1", "http://127.0.0.1:10256/healthz", 1).ok()
    })
    .unwrap();
    assert!(healthz.contains("lastUpdated"), "{healthz}");
    let metrics = curl_from(&lab, "node1", "http://127.0.0.1:10249/metrics", 1).unwrap();
    assert!(
        metrics.contains("podnet_proxy_sync_duration_seconds_bucket{le="),
        "{metrics}"
    );
    // web's port and kube-dns's three, with one endpoint and two.
    assert!(metrics.contains("podnet_proxy_services 4"), "{metrics}");
    assert!(metrics.contains("podnet_proxy_endpoints 7"), "{metrics}");

    // The agent is killed; the lab restarts it; the table is rebuilt and traffic goes on.
    let ip = lab.service_ip("web");
    let agents = run_ok("ip", &["netns", "pids", &format!("{}_node1", lab.name)]);
    for pid in agents.split_whitespace() {
        if std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.contains("agent"))
        {
            run_ok("kill", &["-9", pid]);
        }
    }
    assert!(
        curl(&lab, "client", &format!("http://{ip}")).is_ok(),
        "the table outlives the agent"
    );
    let restarted = eventually(15, || {
        let line = lab.pod_line("podnet-agent-node1");
        let columns: Vec<&str> = line.split_whitespace().collect();
        (columns.get(3) == Some(&"Running") && columns.get(4) == Some(&"1")).then_some(())
    });
    assert!(restarted.is_some(), "{}", lab.status());
    assert!(eventually(5, || curl(&lab, "client", &format!("http://{ip}")).ok()).is_some());
}
