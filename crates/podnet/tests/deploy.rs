//! The manifests in deploy/: they parse as the Kubernetes objects they claim to be, the
//! DaemonSet's arguments are ones the agent accepts, and its RBAC allows watching every kind
//! the agent watches. (A DaemonSet cannot be run here; this is what can be checked.)

use clap::Parser;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::rbac::v1::ClusterRole;
use podnet_agent::AgentArgs;
use podnet_model::Kind;
use serde_json::Value;

const AGENT: &str = include_str!("../../../deploy/podnet-agent.yaml");

#[derive(Parser)]
struct Agent {
    #[command(flatten)]
    args: AgentArgs,
}

fn documents() -> Vec<Value> {
    serde_saphyr::from_multiple(AGENT).expect("deploy/podnet-agent.yaml is YAML")
}

fn of_kind<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let document = documents()
        .into_iter()
        .find(|document| document["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    serde_json::from_value(document).unwrap_or_else(|err| panic!("{kind}: {err}"))
}

/// The API group and resource of a kind, as RBAC names them.
fn resource(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Node => ("", "nodes"),
        Kind::Namespace => ("", "namespaces"),
        Kind::Pod => ("", "pods"),
        Kind::Service => ("", "services"),
        Kind::EndpointSlice => ("discovery.k8s.io", "endpointslices"),
    }
}

#[test]
fn the_daemonset_runs_the_agent_with_arguments_it_accepts() {
    let daemonset: DaemonSet = of_kind("DaemonSet");
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
    assert_eq!(
        probe.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(parsed.healthz_address.port().into())
    );
    let init = &spec.init_containers.unwrap()[0];
    assert_eq!(
        init.args.as_ref().unwrap()[..2],
        ["cni".to_owned(), "install".to_owned()]
    );
}

#[test]
fn the_cluster_role_lets_the_agent_watch_what_it_watches() {
    let role: ClusterRole = of_kind("ClusterRole");
    let rules = role.rules.unwrap();
    let args = AgentArgs::for_node("n");
    for kind in podnet_agent::watched_kinds(&args) {
        let (group, name) = resource(kind);
        for verb in ["get", "list", "watch"] {
            let allowed = rules.iter().any(|rule| {
                rule.api_groups.iter().flatten().any(|g| g == group)
                    && rule.resources.iter().flatten().any(|r| r == name)
                    && rule.verbs.iter().any(|v| v == verb)
            });
            assert!(allowed, "{verb} {group}/{name} is not allowed");
        }
    }
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = of_kind("ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, "podnet-agent");
    assert_eq!(binding.subjects.unwrap()[0].name, "podnet-agent");
}
