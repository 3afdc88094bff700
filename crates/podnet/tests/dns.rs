//! Cluster DNS end to end: the lab runs podnet's DNS server as pods behind the `kube-dns`
//! ClusterIP, every pod's resolv.conf points at it, and `dig`, `getent` and `curl` inside pods
//! resolve services, pods and the lab's internet (through the stub DNS server in the external
//! namespace). Seed 004's CoreDNS examples, then the Kubernetes DNS specification's records.

mod support;

use support::*;

fn header(nodes: usize) -> String {
    format!("apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: NAME\nspec:\n  nodes: {nodes}\n")
}

fn document(text: &str) -> String {
    format!("---\n{text}")
}

/// `dig` inside `pod`, against its resolv.conf's nameserver unless `args` names one: the
/// output lines, trimmed.
fn dig(lab: &Lab, pod: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["dig", "+time=2", "+tries=2"];
    argv.extend(args);
    lab.exec(pod, None, &argv)
        .lines()
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// The answer's response code (`NOERROR`, `NXDOMAIN`, ...) of a `dig` in `pod`.
fn rcode(lab: &Lab, pod: &str, args: &[&str]) -> String {
    let mut argv = vec!["+noall", "+comments"];
    argv.extend(args);
    let comments = dig(lab, pod, &argv).join("\n");
    comments
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in {comments}"))
        .to_owned()
}

fn client() -> String {
    document(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: dns-query\nspec:\n  containers:\n  - {name: c, image: busybox, command: [sleep, infinity]}\n",
    )
}

#[test]
fn seed_004_pods_find_services_pods_and_the_internet_by_name() {
    let mut file = header(2);
    file.push_str(&document(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: coredns-example\n  labels: {name: coredns-example}\nspec:\n  containers:\n  - name: coredns-example\n    image: nginx\n    ports:\n    - containerPort: 80\n",
    ));
    file.push_str(&document(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: coredns-example\nspec:\n  selector: {name: coredns-example}\n  ports:\n  - {port: 80, targetPort: 80}\n",
    ));
    file.push_str(&client());
    let lab = Lab::up(&file);

    // The DNS is a service like any other, in kube-system, in front of pods.
    assert_eq!(
        lab.get("services", Some("kube-dns"))["items"][0]["spec"]["clusterIP"],
        "10.96.0.10"
    );
    let resolv = lab.exec("dns-query", None, &["cat", "/etc/resolv.conf"]);
    assert_eq!(
        resolv,
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );

    // A service by its short name (the search path) and by its full name.
    let page = lab.exec("dns-query", None, &["curl", "-s", "http://coredns-example"]);
    assert!(page.contains("Welcome to nginx!"), "{page}");
    let service_ip = lab.service_ip("coredns-example");
    assert_eq!(
        dig(
            &lab,
            "dns-query",
            &["+short", "coredns-example.default.svc.cluster.local"]
        ),
        [service_ip.as_str()]
    );
    let hosts = lab.exec("dns-query", None, &["getent", "hosts", "coredns-example"]);
    assert!(hosts.starts_with(&service_ip), "{hosts}");

    // A pod by its dashed address.
    let pod_ip = lab.pod_ip("coredns-example");
    let page = lab.exec(
        "dns-query",
        None,
        &[
            "curl",
            "-s",
            &format!("http://{}.default.pod.cluster.local", pod_ip.replace('.', "-")),
        ],
    );
    assert!(page.contains("Welcome to nginx!"), "{page}");

    // The internet's names, forwarded to the internet's DNS server.
    assert_eq!(
        dig(&lab, "dns-query", &["+short", "www.example.com"]),
        ["192.0.2.10"]
    );
    let page = lab.exec("dns-query", None, &["curl", "-s", "http://web.example.net"]);
    assert!(page.contains("Hostname: internet"), "{page}");

    // Reverse lookups of the service's address.
    assert_eq!(
        dig(&lab, "dns-query", &["+short", "-x", &service_ip]),
        ["coredns-example.default.svc.cluster.local."]
    );
}

#[test]
fn the_specification_s_records_over_udp_and_tcp() {
    let mut file = header(2);
    file.push_str(&client());
    for index in 0..2 {
        file.push_str(&document(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-{index}\n  labels: {{app: db}}\nspec:\n  hostname: db-{index}\n  subdomain: db\n  containers:\n  - {{name: whoami, image: traefik/whoami}}\n"
        )));
    }
    file.push_str(&document(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - {name: whoami, image: traefik/whoami}\n",
    ));
    for service in [
        "metadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80}\n",
        "metadata:\n  name: db\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports:\n  - {name: postgres, port: 5432, targetPort: 80}\n",
        "metadata:\n  name: nobody\nspec:\n  clusterIP: None\n  selector: {app: nobody}\n  ports:\n  - {port: 80}\n",
        "metadata:\n  name: ext\nspec:\n  type: ExternalName\n  externalName: www.example.com\n",
    ] {
        file.push_str(&document(&format!("apiVersion: v1\nkind: Service\n{service}")));
    }
    let lab = Lab::up(&file);
    let web = lab.service_ip("web");
    let db: Vec<String> = ["db-0", "db-1"].iter().map(|pod| lab.pod_ip(pod)).collect();

    for transport in ["+notcp", "+tcp"] {
        let query = |args: &[&str]| {
            let mut all = vec![transport, "+short"];
            all.extend(args);
            dig(&lab, "dns-query", &all)
        };
        // A ClusterIP service: its address; no AAAA, but the name exists.
        assert_eq!(
            query(&["web.default.svc.cluster.local"]),
            [web.as_str()],
            "{transport}"
        );
        assert_eq!(
            rcode(
                &lab,
                "dns-query",
                &[transport, "AAAA", "web.default.svc.cluster.local"]
            ),
            "NOERROR"
        );
        assert!(query(&["AAAA", "web.default.svc.cluster.local"]).is_empty());
        // Its named port.
        let srv = query(&["SRV", "_http._tcp.web.default.svc.cluster.local"]);
        assert_eq!(srv.len(), 1, "{srv:?}");
        assert!(srv[0].ends_with(" 80 web.default.svc.cluster.local."), "{srv:?}");

        // A headless service: its ready endpoints, each also by its hostname.
        let mut addresses = query(&["db.default.svc.cluster.local"]);
        addresses.sort();
        let mut expected = db.clone();
        expected.sort();
        assert_eq!(addresses, expected, "{transport}");
        assert_eq!(query(&["db-1.db.default.svc.cluster.local"]), [db[1].as_str()]);
        let mut srv = query(&["SRV", "_postgres._tcp.db.default.svc.cluster.local"]);
        srv.sort();
        assert_eq!(srv.len(), 2, "{srv:?}");
        assert!(
            srv[0].ends_with(" 80 db-0.db.default.svc.cluster.local."),
            "{srv:?}"
        );
        assert!(
            srv[1].ends_with(" 80 db-1.db.default.svc.cluster.local."),
            "{srv:?}"
        );
        // Without a ready endpoint, the headless name does not exist.
        assert_eq!(
            rcode(
                &lab,
                "dns-query",
                &[transport, "nobody.default.svc.cluster.local"]
            ),
            "NXDOMAIN"
        );

        // ExternalName: the CNAME, and its target's address with it.
        assert_eq!(
            query(&["ext.default.svc.cluster.local"]),
            ["www.example.com.", "192.0.2.10"],
            "{transport}"
        );
        // The schema version, names that do not exist, reverse lookups of endpoints.
        assert_eq!(query(&["TXT", "dns-version.cluster.local"]), ["\"1.1.0\""]);
        for missing in [
            "nope.default.svc.cluster.local",
            "web.no-such-namespace.svc.cluster.local",
            "_nope._tcp.web.default.svc.cluster.local",
        ] {
            assert_eq!(
                rcode(&lab, "dns-query", &[transport, missing]),
                "NXDOMAIN",
                "{missing}"
            );
        }
        assert_eq!(
            query(&["-x", &db[0]]),
            ["db-0.db.default.svc.cluster.local."],
            "{transport}"
        );
    }
}

#[test]
fn dns_policy_and_dns_config_shape_each_pod_s_resolv_conf() {
    let mut file = header(1);
    file.push_str(&client());
    file.push_str(&document(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: default-policy\nspec:\n  dnsPolicy: Default\n  containers:\n  - {name: c, image: busybox, command: [sleep, infinity]}\n",
    ));
    file.push_str(&document(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: custom\nspec:\n  dnsPolicy: \"None\"\n  dnsConfig:\n    nameservers: [10.96.0.10]\n    searches: [default.svc.cluster.local, my.dns.search.suffix]\n    options:\n    - {name: ndots, value: \"2\"}\n    - {name: edns0}\n  containers:\n  - {name: c, image: busybox, command: [sleep, infinity]}\n",
    ));
    file.push_str(&document(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: host\nspec:\n  hostNetwork: true\n  dnsPolicy: ClusterFirstWithHostNet\n  containers:\n  - {name: c, image: busybox, command: [sleep, infinity]}\n",
    ));
    file.push_str(&document(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: kubernetes-dns-test\nspec:\n  type: ExternalName\n  externalName: api.example.org\n",
    ));
    let lab = Lab::up(&file);
    let resolv = |pod: &str| lab.exec(pod, None, &["cat", "/etc/resolv.conf"]);
    assert_eq!(resolv("default-policy"), "nameserver 192.0.2.53\n", "the node's");
    assert_eq!(
        resolv("custom"),
        "search default.svc.cluster.local my.dns.search.suffix\nnameserver 10.96.0.10\noptions ndots:2 edns0\n"
    );
    assert!(resolv("host").contains("nameserver 10.96.0.10"));
    // Each resolves as its file says: the node's resolver knows the internet, not the cluster.
    assert_eq!(
        dig(&lab, "default-policy", &["+short", "api.example.org"]),
        ["203.0.113.10"]
    );
    assert!(
        dig(
            &lab,
            "default-policy",
            &["+short", "kubernetes-dns-test.default.svc.cluster.local"]
        )
        .is_empty()
    );
    for pod in ["custom", "host", "dns-query"] {
        let hosts = lab.exec(
            pod,
            None,
            &["getent", "hosts", "kubernetes-dns-test.default.svc.cluster.local"],
        );
        assert!(hosts.starts_with("203.0.113.10"), "{pod}: {hosts}");
    }
}

#[test]
fn records_follow_services_as_they_come_and_go() {
    let mut file = header(1);
    file.push_str(&client());
    file.push_str(&document(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - {name: whoami, image: traefik/whoami}\n",
    ));
    let lab = Lab::up(&file);
    let name = "late.default.svc.cluster.local";
    assert_eq!(rcode(&lab, "dns-query", &[name]), "NXDOMAIN");
    let mut with_service = file.clone();
    with_service.push_str(&document(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: late\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80}\n",
    ));
    lab.apply(&with_service);
    let ip = lab.service_ip("late");
    // The DNS pods hear of the service as the agents do; the negative answer was not cached.
    let answered = eventually(2, || {
        let answer = dig(&lab, "dns-query", &["+short", name]);
        (answer == [ip.as_str()]).then_some(())
    });
    assert!(answered.is_some(), "{name} did not resolve to {ip}");
    lab.apply(&file);
    let gone = eventually(2, || {
        (rcode(&lab, "dns-query", &[name]) == "NXDOMAIN").then_some(())
    });
    assert!(gone.is_some());
}

#[test]
fn a_cluster_whose_dns_is_down_resolves_nothing_until_it_is_back() {
    // Seed 004: "if the coredns pods fail, neither outside names nor pods and services resolve".
    let mut file = header(1);
    file.push_str(&client());
    file.push_str(&document(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - {name: whoami, image: traefik/whoami}\n",
    ));
    file.push_str(&document(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80}\n",
    ));
    let lab = Lab::up(&file);
    let name = "web.default.svc.cluster.local";
    let ip = lab.service_ip("web");
    assert_eq!(dig(&lab, "dns-query", &["+short", name]), [ip.as_str()]);

    let down = file.replace("  nodes: 1\n", "  nodes: 1\n  dnsReplicas: 0\n");
    lab.apply(&down);
    assert!(
        lab.get("pods", None)["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(
                |pod| !pod["metadata"]["name"].as_str().unwrap().starts_with("coredns-")
                    || pod["metadata"]["deletionTimestamp"].is_string()
            ),
        "the DNS pods go"
    );
    // The service has no endpoint left: queries are refused at once, for every kind of name.
    let refused = |name: &str| {
        let output = lab.exec_output("dns-query", None, &["dig", "+time=2", "+tries=1", "+short", name]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (!output.status.success() && text.contains("connection refused")).then_some(text)
    };
    assert!(
        eventually(10, || refused(name)).is_some(),
        "queries still answered"
    );
    for other in ["www.example.com", "kube-dns.kube-system.svc.cluster.local"] {
        assert!(refused(other).is_some(), "{other} answered");
    }
    let curl = lab.exec_output("dns-query", None, &["curl", "-sS", "-m", "5", "http://web"]);
    assert!(
        String::from_utf8_lossy(&curl.stderr).contains("Could not resolve host"),
        "{curl:?}"
    );
    // The service itself still works by address.
    let page = lab.exec(
        "dns-query",
        None,
        &["curl", "-sS", "-m", "5", &format!("http://{ip}")],
    );
    assert!(page.contains("Hostname: web"), "{page}");

    lab.apply(&file);
    let back = eventually(15, || {
        (dig(&lab, "dns-query", &["+short", name]) == [ip.as_str()]).then_some(())
    });
    assert!(back.is_some(), "the DNS did not come back");
}
