//! The kubelet's part of the lab: running a pod's containers in its sandbox, reporting its
//! status (IPs, phase, readiness) the way kubelet writes it to the API server, and deleting it
//! gracefully: `preStop` hooks, SIGTERM, `terminationGracePeriodSeconds`, SIGKILL.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container as ContainerObject, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as ContainerStatusObject, LifecycleHandler, Pod, PodCondition,
    PodIP, PodStatus, Probe as ProbeObject,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_model::ObjectKey;

use crate::containers::{
    Action, Container, ContainerSpec, ContainerStatus, Namespaces, OnChange, Probe, Readiness, RestartPolicy,
};
use crate::paths::LabPaths;
use crate::sandbox::Sandbox;
use crate::topology::NodeRuntime;
use crate::workload::{Builtin, Program};

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// Starts every container of `pod` in its sandbox; `on_change` hears of every status change.
pub fn start_containers(
    paths: &LabPaths,
    key: &ObjectKey,
    pod: &Pod,
    sandbox: &Sandbox,
    on_change: OnChange,
) -> Vec<Container> {
    let spec = pod.spec.as_ref().expect("validated");
    let restart = RestartPolicy::parse(spec.restart_policy.as_deref());
    let namespaces = Namespaces {
        netns: sandbox.netns.clone(),
        uts: sandbox.uts.clone(),
        files: sandbox.files.clone(),
    };
    let log_dir = paths.pod_dir(key);
    let _ = std::fs::create_dir_all(&log_dir);
    spec.containers
        .iter()
        .map(|container| {
            Container::start(
                container_spec(key, pod, container, restart),
                namespaces.clone(),
                log_dir.join(format!("{}.log", container.name)),
                on_change.clone(),
            )
        })
        .collect()
}

/// How long a deleted pod has to stop.
pub fn grace_period(pod: &Pod) -> Duration {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.termination_grace_period_seconds)
        .map_or(DEFAULT_GRACE_PERIOD, |seconds| {
            Duration::from_secs(seconds.max(0) as u64)
        })
}

/// Stops `containers` within `grace` and waits for them: every container's grace period runs
/// at the same time, as kubelet's do.
pub async fn stop(containers: Vec<Container>, grace: Duration) {
    for container in &containers {
        container.request_stop(grace);
    }
    for container in containers {
        container.stopped().await;
    }
}

/// The status kubelet reports for a pod: its IPs, phase, readiness and containers.
pub fn pod_status(
    pod: &Pod,
    sandbox: &Sandbox,
    node: &NodeRuntime,
    containers: &[ContainerStatus],
) -> PodStatus {
    let all_ready = !containers.is_empty() && containers.iter().all(|container| container.ready);
    let all_done =
        !containers.is_empty() && containers.iter().all(|container| container.state == "Terminated");
    let restart = RestartPolicy::parse(pod.spec.as_ref().and_then(|spec| spec.restart_policy.as_deref()));
    let phase = if all_done && restart != RestartPolicy::Always {
        if containers.iter().all(|container| container.exit_code == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Running"
    };
    let condition = |kind: &str, status: bool| PodCondition {
        type_: kind.into(),
        status: if status { "True" } else { "False" }.into(),
        ..PodCondition::default()
    };
    let images: Vec<Option<String>> = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .map(|container| container.image.clone())
        .collect();
    PodStatus {
        phase: Some(phase.into()),
        pod_ip: sandbox.ips.first().map(ToString::to_string),
        pod_ips: Some(
            sandbox
                .ips
                .iter()
                .map(|ip| PodIP { ip: ip.to_string() })
                .collect(),
        ),
        host_ip: Some(node.address.to_string()),
        conditions: Some(vec![
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", all_ready),
            condition("Ready", all_ready),
        ]),
        container_statuses: Some(
            containers
                .iter()
                .zip(images)
                .map(|(container, image)| container_status(container, image))
                .collect(),
        ),
        ..PodStatus::default()
    }
}

fn container_status(status: &ContainerStatus, image: Option<String>) -> ContainerStatusObject {
    let state = match status.state.as_str() {
        "Running" => ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        },
        "Terminated" => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: status.exit_code.unwrap_or_default(),
                reason: status.reason.clone(),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        },
        _ => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: status.reason.clone(),
                ..ContainerStateWaiting::default()
            }),
            ..ContainerState::default()
        },
    };
    ContainerStatusObject {
        name: status.name.clone(),
        ready: status.ready,
        restart_count: status.restarts as i32,
        started: Some(status.state == "Running"),
        state: Some(state),
        image: image.unwrap_or_default(),
        ..ContainerStatusObject::default()
    }
}

/// The process of a container: a built-in program or a host command, with its readiness and
/// preStop hook.
fn container_spec(
    key: &ObjectKey,
    pod: &Pod,
    container: &ContainerObject,
    restart: RestartPolicy,
) -> ContainerSpec {
    let program = Program::for_container(container).expect("validated when the file was parsed");
    let (argv, listening) = match program {
        Program::Builtin(Builtin::Podnet, args) => {
            (std::iter::once(current_exe()).chain(args).collect(), None)
        }
        Program::Builtin(builtin, args) => {
            let port = builtin_port(builtin, &args, container);
            let mut argv = vec![current_exe(), "workload".into(), builtin.name().into()];
            argv.extend(args);
            (argv, port)
        }
        Program::Command(argv) => (argv, None),
    };
    let readiness = match (&container.readiness_probe, listening) {
        (Some(probe), _) => Readiness::Probe(probe_of(probe, container)),
        (None, Some(port)) => Readiness::Listening(port),
        (None, None) => Readiness::Running,
    };
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
        .and_then(|handler| action_of(handler, container));
    ContainerSpec {
        name: container.name.clone(),
        argv,
        env: container_env(key, pod, container),
        readiness,
        pre_stop,
        restart,
    }
}

fn probe_of(probe: &ProbeObject, container: &ContainerObject) -> Probe {
    let seconds =
        |value: Option<i32>, default: i32| Duration::from_secs(value.unwrap_or(default).max(0) as u64);
    let action = if let Some(exec) = &probe.exec {
        Action::Exec(exec.command.clone().unwrap_or_default())
    } else if let Some(tcp) = &probe.tcp_socket {
        Action::Tcp(port_of(&tcp.port, container))
    } else if let Some(http) = &probe.http_get {
        Action::Http {
            port: port_of(&http.port, container),
            path: http.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else {
        Action::Exec(vec!["true".into()])
    };
    Probe {
        action,
        initial_delay: seconds(probe.initial_delay_seconds, 0),
        period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

fn action_of(handler: &LifecycleHandler, container: &ContainerObject) -> Option<Action> {
    if let Some(exec) = &handler.exec {
        return Some(Action::Exec(exec.command.clone().unwrap_or_default()));
    }
    if let Some(sleep) = &handler.sleep {
        return Some(Action::Sleep(Duration::from_secs(sleep.seconds.max(0) as u64)));
    }
    if let Some(http) = &handler.http_get {
        return Some(Action::Http {
            port: port_of(&http.port, container),
            path: http.path.clone().unwrap_or_else(|| "/".into()),
        });
    }
    handler
        .tcp_socket
        .as_ref()
        .map(|tcp| Action::Tcp(port_of(&tcp.port, container)))
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port_of(port: &IntOrString, container: &ContainerObject) -> u16 {
    match port {
        IntOrString::Int(number) => *number as u16,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|port| port.name.as_deref() == Some(name.as_str()))
            .map_or(0, |port| port.container_port as u16),
    }
}

/// The port a built-in server listens on.
fn builtin_port(builtin: Builtin, args: &[String], container: &ContainerObject) -> Option<u16> {
    match builtin {
        Builtin::Pause | Builtin::Podnet => None,
        Builtin::Nginx => Some(80),
        Builtin::Agnhost => crate::agnhost::http_port(args),
        Builtin::Whoami => Some(crate::builtin::whoami_port(args, |key| {
            container
                .env
                .iter()
                .flatten()
                .find(|var| var.name == key)
                .and_then(|var| var.value.clone())
        })),
    }
}

/// The running podnet executable, which the lab runs for built-in images.
pub fn current_exe() -> String {
    std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "podnet".into())
}

/// The host's PATH, which the lab's containers use to find their commands.
pub fn host_path() -> String {
    std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
}

/// A pod's hostname, as kubelet sets it: the node's for a hostNetwork pod, else `spec.hostname`
/// or the pod's name cut to the 63 characters a hostname may have (without a trailing '-' or
/// '.').
pub fn pod_hostname(key: &ObjectKey, pod: &Pod) -> String {
    if podnet_model::pod_host_network(pod) {
        return podnet_model::pod_node(pod).unwrap_or_default().to_owned();
    }
    if let Some(hostname) = pod.spec.as_ref().and_then(|spec| spec.hostname.clone()) {
        return hostname;
    }
    let name = &key.name[..key.name.len().min(63)];
    name.trim_end_matches(['-', '.']).to_owned()
}

/// A container's environment: the host's PATH, Kubernetes' HOSTNAME, the container's `env`.
pub fn container_env(key: &ObjectKey, pod: &Pod, container: &ContainerObject) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), host_path()),
        ("HOSTNAME".to_owned(), pod_hostname(key, pod)),
    ];
    for variable in container.env.iter().flatten() {
        env.push((variable.name.clone(), variable.value.clone().unwrap_or_default()));
    }
    env
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;

    use super::*;

    #[test]
    fn hostnames_are_cut_to_63_characters_like_kubelet_does() {
        let pod = |hostname: Option<&str>| Pod {
            spec: Some(PodSpec {
                hostname: hostname.map(str::to_owned),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let key = |name: &str| ObjectKey {
            namespace: "default".into(),
            name: name.into(),
        };
        assert_eq!(pod_hostname(&key("web"), &pod(None)), "web");
        assert_eq!(pod_hostname(&key("web"), &pod(Some("db-0"))), "db-0");
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        assert_eq!(pod_hostname(&key(&long), &pod(None)), "a".repeat(62));
    }
}
