//! The podnet node agent: one per node, the program a cluster runs as a DaemonSet.
//!
//! It watches cluster objects through the source seam and runs independent controllers, each
//! a pure plan and a thin apply on a thread of its own ([`controller`]): [`routing`] (the pod
//! bridge, routes to every other node's pod subnet over VXLAN or host-gw, the CNI
//! configuration), [`egress`] (masquerading for traffic leaving the cluster), [`proxy`]
//! (Services, kube-proxy's job) and [`policy`] (NetworkPolicy). One failing does not stop the others. They act on every change
//! and re-check the kernel every minute; between the two they sleep.

pub mod cli;
pub mod controller;
pub mod egress;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod routing;

use std::sync::Arc;

use podnet_model::{ClusterSource, Kind};

pub use cli::{AgentArgs, ControllerName};
pub use routing::cniconf::CniTarget;

/// The kinds the agent's controllers watch (its RBAC must allow `get`, `list` and `watch` on
/// each).
pub fn watched_kinds(args: &AgentArgs) -> Vec<Kind> {
    let mut kinds = vec![Kind::Node];
    if args.runs(ControllerName::Proxy) {
        kinds.extend([Kind::Service, Kind::EndpointSlice]);
    }
    if args.runs(ControllerName::Policy) {
        kinds.extend([Kind::Pod, Kind::Namespace, Kind::NetworkPolicy]);
    }
    kinds
}

/// Runs the agent described by `args` until the source closes.
pub async fn run(args: &AgentArgs, source: &dyn ClusterSource) -> Result<(), String> {
    let metrics = Arc::new(metrics::Metrics::default());
    let mut handles = Vec::new();
    if args.runs(ControllerName::Routing) {
        let routing = routing::Routing::new(&args.node, args.backend(), args.cni_target());
        handles.push(controller::spawn(routing));
    }
    if args.runs(ControllerName::Egress) {
        handles.push(controller::spawn(egress::Egress::new(&args.node)));
    }
    if args.runs(ControllerName::Policy) {
        let admissions = Arc::new(policy::admission::Admissions::default());
        let handle = controller::spawn(policy::Policy::new(
            &args.node,
            metrics.clone(),
            admissions.clone(),
        ));
        // Listening before the routing controller writes the CNI configuration: no pod is
        // wired before a plugin can find us.
        policy::admission::serve(admissions, handle.waker()).map_err(|err| {
            format!(
                "listen on the pod admission socket @{} ({err}): is another podnet agent running on this node?",
                podnet_cni::admission::SOCKET
            )
        })?;
        handles.push(handle);
    }
    let mut servers = Vec::new();
    if args.runs(ControllerName::Proxy) {
        handles.push(controller::spawn(proxy::Proxy::new(
            &args.node,
            args.cluster_cidr.clone(),
            metrics.clone(),
        )));
        let health = metrics.clone();
        servers.push(
            podnet_http::Server::start(
                args.healthz_address,
                Arc::new(move |path: &str| health.healthz(path)),
            )
            .map_err(|err| format!("serve /healthz on {}: {err}", args.healthz_address))?,
        );
    }
    let exported = metrics.clone();
    servers.push(
        podnet_http::Server::start(
            args.metrics_address,
            Arc::new(move |path: &str| exported.metrics(path)),
        )
        .map_err(|err| format!("serve /metrics on {}: {err}", args.metrics_address))?,
    );
    let mut events = source.watch(&watched_kinds(args));
    while let Some(event) = events.recv().await {
        let event = Arc::new(event);
        for handle in &handles {
            handle.offer(&event).await;
        }
    }
    drop(servers);
    Err("the cluster source closed".into())
}
