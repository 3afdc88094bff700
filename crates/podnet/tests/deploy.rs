//! The manifests in deploy/: they parse as the Kubernetes objects they claim to be, the
//! containers' arguments are ones podnet accepts, probes point where the arguments serve, and
//! the RBAC allows watching every kind each component watches. (A cluster cannot be run here;
//! this is what can be checked.)

use clap::Parser;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_agent::AgentArgs;
use podnet_dns::DnsArgs;
use podnet_model::Kind;
use serde_json::Value;

const AGENT: &str = include_str!("../../../deploy/podnet-agent.yaml");
const DNS: &str = include_str!("../../../deploy/podnet-dns.yaml");

#[derive(Parser)]
struct Agent {
    #[command(flatten)]
    args: AgentArgs,
}

#[derive(Parser)]
struct Dns {
    #[command(flatten)]
    args: DnsArgs,
}

/// The object of `kind` in `manifest`.
fn of_kind<T: serde::de::DeserializeOwned>(manifest: &str, kind: &str) -> T {
    let documents: Vec<Value> = serde_saphyr::from_multiple(manifest).expect("manifests are YAML");
    let document = documents
        .into_iter()
        .find(|document| document["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    serde_json::from_value(document).unwrap_or_else(|err| panic!("{kind}: {err}"))
}

/// Asserts that the manifest's ClusterRole, bound to its ServiceAccount `account`, lets it get,
/// list and watch each of `kinds`.
fn assert_may_watch(manifest: &str, account: &str, kinds: &[Kind]) {
    let role: ClusterRole = of_kind(manifest, "ClusterRole");
    let rules = role.rules.unwrap();
    for kind in kinds {
        let (group, name) = resource(*kind);
        for verb in ["get", "list", "watch"] {
            let allowed = rules.iter().any(|rule| {
                rule.api_groups.iter().flatten().any(|g| g == group)
                    && rule.resources.iter().flatten().any(|r| r == name)
                    && rule.verbs.iter().any(|v| v == verb)
            });
            assert!(allowed, "{account}: {verb} {group}/{name} is not allowed");
        }
    }
    let binding: ClusterRoleBinding = of_kind(manifest, "ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    assert_eq!(binding.subjects.unwrap()[0].name, account);
}

/// The API group and resource of a kind, as RBAC names them.
fn resource(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Node => ("", "nodes"),
        Kind::Namespace => ("", "namespaces"),
        Kind::Pod => ("", "pods"),
        Kind::Service => ("", "services"),
        Kind::EndpointSlice => ("discovery.k8s.io", "endpointslices"),
        Kind::NetworkPolicy => ("networking.k8s.io", "networkpolicies"),
    }
}

#[test]
fn the_daemonset_runs_the_agent_with_arguments_it_accepts() {
    let daemonset: DaemonSet = of_kind(AGENT, "DaemonSet");
    let spec = daemonset.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.service_account_name.as_deref(), Some("podnet-agent"));
    let agent = &spec.containers[0];
    let args = agent.args.clone().unwrap();
    assert_eq!(args[0], "agent");
    // The node name comes from the downward API, as $(NODE_NAME).
    let parsed = Agent::try_parse_from(args.iter().map(|arg| arg.replace("$(NODE_NAME)", "node-a")))
        .unwrap_or_else(|err| panic!("{err}"))
        .args;
    assert_eq!(parsed.node, "node-a");
    assert!(parsed.cni_conf.is_some() && parsed.lab.is_none());
    let env = agent.env.clone().unwrap();
    assert_eq!(
        env[0]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    let probe = agent.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(probe.path.as_deref(), Some("/healthz"));
    assert_eq!(probe.port, IntOrString::Int(parsed.healthz_address.port().into()));
    let init = &spec.init_containers.unwrap()[0];
    assert_eq!(
        init.args.as_ref().unwrap()[..2],
        ["cni".to_owned(), "install".to_owned()]
    );
}

#[test]
fn the_cluster_role_lets_the_agent_watch_what_it_watches() {
    let kinds = podnet_agent::watched_kinds(&AgentArgs::for_node("n"));
    assert_may_watch(AGENT, "podnet-agent", &kinds);
}

#[test]
fn the_dns_deployment_serves_behind_kube_dns_with_arguments_it_accepts() {
    let deployment: Deployment = of_kind(DNS, "Deployment");
    let spec = deployment.spec.unwrap();
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.dns_policy.as_deref(),
        Some("Default"),
        "not itself as upstream"
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("podnet-dns"));
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap();
    assert_eq!(args[0], "dns");
    let parsed = Dns::try_parse_from(&args)
        .unwrap_or_else(|err| panic!("{err}"))
        .args;
    assert!(parsed.lab.is_none() && !parsed.no_cluster);
    let probe_port = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        let http = probe.as_ref().unwrap().http_get.clone().unwrap();
        (http.path.unwrap(), http.port)
    };
    assert_eq!(
        probe_port(&container.liveness_probe),
        (
            "/health".into(),
            IntOrString::Int(parsed.health_address.port().into())
        )
    );
    assert_eq!(
        probe_port(&container.readiness_probe),
        (
            "/ready".into(),
            IntOrString::Int(parsed.ready_address.port().into())
        )
    );

    // The Service selects these pods, on the ports they serve.
    let service: Service = of_kind(DNS, "Service");
    assert_eq!(service.metadata.name.as_deref(), Some("kube-dns"));
    let service = service.spec.unwrap();
    for (key, value) in service.selector.unwrap() {
        assert_eq!(labels.get(&key), Some(&value), "selector {key}");
    }
    let served: Vec<(i32, String)> = container
        .ports
        .iter()
        .flatten()
        .map(|port| (port.container_port, port.protocol.clone().unwrap()))
        .collect();
    for port in service.ports.unwrap() {
        let IntOrString::Int(target) = port.target_port.unwrap() else {
            panic!("numeric target ports");
        };
        assert!(served.contains(&(target, port.protocol.unwrap())), "{target}");
    }
    assert!(served.contains(&(parsed.listen.port().into(), "UDP".into())));
    assert!(served.contains(&(parsed.metrics_address.port().into(), "TCP".into())));
    assert_may_watch(DNS, "podnet-dns", &podnet_dns::cluster::KINDS);
}
