//! The lab daemon: the process that owns a running lab.
//!
//! `podnet lab up` starts it in the background and returns once it reports the lab ready; it
//! keeps the lab alive afterwards, playing the roles a cluster spreads over many processes:
//! the control plane (via [`controlplane`]), and on every node the container runtime and
//! kubelet (sandboxes, CNI calls, container processes and their restarts). Commands reach it on
//! its Unix socket ([`protocol`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container as ContainerObject, Pod};
use podnet_cni::runtime::Runtime;
use podnet_model::{ClusterState, ObjectKey};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::containers::{Container, ContainerSpec, Namespaces, RestartPolicy};
use crate::controlplane;
use crate::paths::LabPaths;
use crate::protocol::{ExecTarget, LabStatus, NodeStatus, PodStatus, Request, Response};
use crate::reaper;
use crate::sandbox::{self, Sandbox};
use crate::spec::{self, LabFile, LabSpec};
use crate::topology::{self, NodeRuntime};
use crate::workload::{Builtin, Program};

/// How long an apply waits for new pods to start before reporting them as they are.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running pod.
struct RunningPod {
    pod: Pod,
    node: String,
    sandbox: Option<Sandbox>,
    containers: Vec<Container>,
    /// Why the sandbox could not be created.
    error: Option<String>,
}

/// The lab's whole state.
pub struct Lab {
    paths: LabPaths,
    spec: Option<LabSpec>,
    runtime: Runtime,
    cluster: ClusterState,
    nodes: BTreeMap<String, NodeRuntime>,
    pods: BTreeMap<ObjectKey, RunningPod>,
    fabric: bool,
}

impl Lab {
    /// An empty lab that will live under `paths`.
    pub fn new(paths: LabPaths) -> Self {
        let runtime = Runtime::new(topology::cni_bin_dirs(&paths));
        Lab {
            paths,
            spec: None,
            runtime,
            cluster: ClusterState::default(),
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            fabric: false,
        }
    }

    /// Changes the lab to match `file`: creates what appeared, removes what disappeared, leaves
    /// the rest alone. Returns one line per change.
    pub async fn apply(
        &mut self,
        file: LabFile,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Vec<String>, String> {
        if let Some(current) = &self.spec {
            let fixed = [
                ("metadata.name", current.name != file.spec.name),
                ("spec.podCIDR", current.pod_cidr != file.spec.pod_cidr),
                (
                    "spec.nodeCIDRMaskSize",
                    current.node_cidr_mask_size != file.spec.node_cidr_mask_size,
                ),
                ("spec.cni", current.cni != file.spec.cni),
            ];
            if let Some((field, _)) = fixed.iter().find(|(_, changed)| *changed) {
                return Err(format!(
                    "{field} of a running lab cannot change; run `podnet lab down` first"
                ));
            }
        }
        let desired = controlplane::plan(&file, &self.cluster).map_err(|err| err.to_string())?;
        let mut changes = Vec::new();
        let mut report = |line: String| {
            progress(&line);
            changes.push(line);
        };

        // Pods that are gone or replaced, then nodes that are gone.
        let leaving: Vec<ObjectKey> = self
            .pods
            .iter()
            .filter(|(key, running)| {
                desired
                    .pods
                    .get(*key)
                    .is_none_or(|pod| pod.metadata.uid != running.pod.metadata.uid)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in leaving {
            let running = self.pods.remove(&key).expect("listed above");
            let failures = self.remove_pod(&key, running, true).await;
            report(format!("pod {key} removed{}", describe_failures(&failures)));
        }
        let leaving_nodes: Vec<String> = self
            .nodes
            .keys()
            .filter(|name| !desired.nodes.contains_key(*name))
            .cloned()
            .collect();
        for name in leaving_nodes {
            self.nodes.remove(&name);
            let paths = self.paths.clone();
            let failures = blocking(move || {
                topology::delete_node(&paths, &name)
                    .into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
            })
            .await;
            report(format!("node removed{}", describe_failures(&failures)));
        }

        // New nodes, on the underlay.
        if !self.fabric {
            let paths = self.paths.clone();
            blocking(move || topology::create_fabric(&paths))
                .await
                .map_err(|err| err.to_string())?;
            self.fabric = true;
        }
        for (name, node) in &desired.nodes {
            if self.nodes.contains_key(name) {
                continue;
            }
            let (paths, node, cni) = (self.paths.clone(), node.clone(), file.spec.cni.clone());
            let runtime = blocking(move || topology::create_node(&paths, &node, cni.as_deref()))
                .await
                .map_err(|err| format!("node {name}: {err}"))?;
            report(format!(
                "node {name} up: {} with pod subnet {}",
                runtime.address,
                podnet_model::node_pod_cidrs(&desired.nodes[name])
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ));
            self.nodes.insert(name.clone(), runtime);
        }

        // New pods: each node wires its pods one after the other, in the file's order (so
        // addresses are handed out in that order), nodes in parallel; then the containers.
        let mut arriving: BTreeMap<String, Vec<(ObjectKey, Pod)>> = BTreeMap::new();
        for key in controlplane::file_order(&file) {
            if let Some(pod) = desired.pods.get(&key).filter(|_| !self.pods.contains_key(&key)) {
                let node = podnet_model::pod_node(pod).expect("scheduled").to_owned();
                arriving.entry(node).or_default().push((key, pod.clone()));
            }
        }
        let mut per_node = Vec::new();
        for (node_name, pods) in arriving {
            let (node, paths, runtime) = (
                self.nodes[&node_name].clone(),
                self.paths.clone(),
                self.runtime.clone(),
            );
            per_node.push(tokio::spawn(blocking(move || {
                pods.into_iter()
                    .map(|(key, pod)| {
                        let outcome = sandbox::create(&paths, &node, &runtime, &key, &pod)
                            .map_err(|err| err.to_string());
                        (key, pod, node_name.clone(), outcome)
                    })
                    .collect::<Vec<_>>()
            })));
        }
        let mut wired = Vec::new();
        for handle in per_node {
            wired.extend(handle.await.map_err(|err| format!("wiring pods failed: {err}"))?);
        }
        let mut started = Vec::new();
        for (key, pod, node, outcome) in wired {
            let mut running = RunningPod {
                pod,
                node: node.clone(),
                sandbox: None,
                containers: Vec::new(),
                error: None,
            };
            match outcome {
                Ok(sandbox) => {
                    let ips: Vec<String> = sandbox.ips.iter().map(ToString::to_string).collect();
                    running.containers = self.start_containers(&key, &running.pod, &sandbox);
                    running.sandbox = Some(sandbox);
                    report(format!("pod {key} on {node}: {}", ips.join(", ")));
                    started.push(key.clone());
                }
                Err(err) => {
                    report(format!("pod {key} on {node}: sandbox failed: {err}"));
                    running.error = Some(err);
                }
            }
            self.pods.insert(key, running);
        }
        self.cluster = desired;
        self.spec = Some(file.spec);
        self.wait_settled(&started).await;
        Ok(changes)
    }

    fn start_containers(&self, key: &ObjectKey, pod: &Pod, sandbox: &Sandbox) -> Vec<Container> {
        let spec = pod.spec.as_ref().expect("validated");
        let restart = RestartPolicy::parse(spec.restart_policy.as_deref());
        let namespaces = Namespaces {
            netns: sandbox.netns.clone(),
            uts: sandbox.uts.clone(),
        };
        let log_dir = self.paths.pod_dir(key);
        let _ = std::fs::create_dir_all(&log_dir);
        spec.containers
            .iter()
            .map(|container| {
                let spec = container_spec(key, pod, container, restart);
                Container::start(
                    spec,
                    namespaces.clone(),
                    log_dir.join(format!("{}.log", container.name)),
                )
            })
            .collect()
    }

    /// Waits until every container of `keys` is ready or has failed once, or the timeout.
    async fn wait_settled(&self, keys: &[ObjectKey]) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while Instant::now() < deadline {
            let settled = keys.iter().all(|key| {
                self.pods
                    .get(key)
                    .is_none_or(|pod| pod.containers.iter().all(|container| container.status().settled))
            });
            if settled {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn remove_pod(&self, key: &ObjectKey, running: RunningPod, detach: bool) -> Vec<String> {
        stop_all(running.containers).await;
        let Some(sandbox) = running.sandbox else {
            return Vec::new();
        };
        let Some(node) = self.nodes.get(&running.node).cloned() else {
            return Vec::new();
        };
        let (paths, runtime, key, pod) = (self.paths.clone(), self.runtime.clone(), key.clone(), running.pod);
        blocking(move || sandbox::destroy(&paths, &node, &runtime, &key, &pod, sandbox, detach)).await
    }

    /// Stops every container and removes every namespace and file of the lab.
    pub async fn down(&mut self) -> Vec<String> {
        let containers: Vec<Container> = self
            .pods
            .values_mut()
            .flat_map(|pod| std::mem::take(&mut pod.containers))
            .collect();
        stop_all(containers).await;
        self.pods.clear();
        self.nodes.clear();
        let paths = self.paths.clone();
        blocking(move || reaper::sweep(&paths)).await
    }

    /// The lab's nodes and pods.
    pub fn status(&self) -> LabStatus {
        LabStatus {
            name: self.paths.name().to_owned(),
            pod_cidr: self
                .spec
                .as_ref()
                .map(|spec| spec.pod_cidr.to_string())
                .unwrap_or_default(),
            nodes: self
                .nodes
                .values()
                .map(|node| NodeStatus {
                    name: node.name.clone(),
                    address: node.address.to_string(),
                    pod_cidr: self
                        .cluster
                        .nodes
                        .get(&node.name)
                        .and_then(|object| {
                            podnet_model::node_pod_cidrs(object)
                                .first()
                                .map(ToString::to_string)
                        })
                        .unwrap_or_default(),
                    netns: self.paths.node_netns(&node.name),
                })
                .collect(),
            pods: self
                .pods
                .iter()
                .map(|(key, running)| PodStatus {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    node: running.node.clone(),
                    ips: running
                        .sandbox
                        .iter()
                        .flat_map(|sandbox| sandbox.ips.iter().map(ToString::to_string))
                        .collect(),
                    netns: match &running.sandbox {
                        Some(sandbox) => sandbox.netns.path().display().to_string(),
                        None => String::new(),
                    },
                    containers: running.containers.iter().map(Container::status).collect(),
                    message: running.error.clone(),
                })
                .collect(),
        }
    }

    /// Where to exec in a pod's container.
    fn exec_target(&self, key: &ObjectKey, container: Option<&str>) -> Result<ExecTarget, String> {
        let running = self.pods.get(key).ok_or_else(|| format!("pod {key} not found"))?;
        let sandbox = running.sandbox.as_ref().ok_or_else(|| {
            format!(
                "pod {key} has no sandbox: {}",
                running.error.clone().unwrap_or_default()
            )
        })?;
        let spec = running.pod.spec.as_ref().expect("validated");
        let object = match container {
            Some(name) => spec.containers.iter().find(|c| c.name == name).ok_or_else(|| {
                let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "pod {key} has no container {name:?} (it has {})",
                    names.join(", ")
                )
            })?,
            None => &spec.containers[0],
        };
        let uts = if podnet_model::pod_host_network(&running.pod) {
            self.paths.node_dir(&running.node).join("uts")
        } else {
            self.paths.pod_dir(key).join("uts")
        };
        Ok(ExecTarget {
            netns: sandbox.netns.path().display().to_string(),
            uts: uts.display().to_string(),
            env: container_env(key, &running.pod, object),
        })
    }
}

/// The process of a container: a built-in program or a host command.
fn container_spec(
    key: &ObjectKey,
    pod: &Pod,
    container: &ContainerObject,
    restart: RestartPolicy,
) -> ContainerSpec {
    let program = Program::for_container(container).expect("validated when the file was parsed");
    let (argv, ready_port) = match program {
        Program::Builtin(builtin, args) => {
            let executable = std::env::current_exe()
                .map(|path| path.display().to_string())
                .unwrap_or_else(|_| "podnet".into());
            let port = builtin_port(builtin, &args);
            let mut argv = vec![executable, "workload".into(), builtin.name().into()];
            argv.extend(args);
            (argv, port)
        }
        Program::Command(argv) => (argv, None),
    };
    ContainerSpec {
        name: container.name.clone(),
        argv,
        env: container_env(key, pod, container),
        ready_port,
        restart,
    }
}

/// The port a built-in server listens on.
fn builtin_port(builtin: Builtin, args: &[String]) -> Option<u16> {
    match builtin {
        Builtin::Pause => None,
        Builtin::Nginx => Some(80),
        Builtin::Whoami => Some(crate::builtin::whoami_port(args).unwrap_or(80)),
    }
}

/// A container's environment: the host's PATH, Kubernetes' HOSTNAME, the container's `env`.
fn container_env(key: &ObjectKey, pod: &Pod, container: &ContainerObject) -> Vec<(String, String)> {
    let hostname = if podnet_model::pod_host_network(pod) {
        podnet_model::pod_node(pod).unwrap_or_default().to_owned()
    } else {
        key.name.clone()
    };
    let mut env = vec![
        (
            "PATH".to_owned(),
            std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ),
        ("HOSTNAME".to_owned(), hostname),
    ];
    for variable in container.env.iter().flatten() {
        env.push((variable.name.clone(), variable.value.clone().unwrap_or_default()));
    }
    env
}

async fn stop_all(containers: Vec<Container>) {
    // Signal every container first, so their grace periods run in parallel.
    for container in &containers {
        container.request_stop();
    }
    for container in containers {
        container.stop().await;
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("blocking task panicked")
}

fn describe_failures(failures: &[String]) -> String {
    if failures.is_empty() {
        String::new()
    } else {
        format!(" (cleanup problems: {})", failures.join("; "))
    }
}

/// Runs the daemon of lab `name`, whose file the CLI left at `LAB_DIR/lab.yaml`. Progress, and
/// finally `ready` or `error: ...`, go to `report` (the pipe `lab up` reads).
pub async fn run(name: &str, mut report: impl Write + Send) -> Result<(), String> {
    let paths = LabPaths::new(name);
    let text = std::fs::read_to_string(lab_file(&paths))
        .map_err(|err| format!("cannot read the lab file: {err}"))?;
    let file = spec::parse(&text).map_err(|err| err.to_string())?;
    crate::install_cni_plugins(&paths).map_err(|err| format!("cannot install the CNI plugins: {err}"))?;
    let mut lab = Lab::new(paths.clone());
    let applied = {
        let reporter = std::sync::Mutex::new(&mut report);
        let progress = |line: &str| {
            let mut report = reporter.lock().expect("report lock");
            let _ = writeln!(report, "progress {line}");
            let _ = report.flush();
        };
        lab.apply(file, &progress).await
    };
    if let Err(err) = applied {
        lab.down().await;
        return Err(err);
    }
    let listener = UnixListener::bind(paths.socket())
        .map_err(|err| format!("cannot listen on {}: {err}", paths.socket().display()));
    let listener = match listener {
        Ok(listener) => listener,
        Err(err) => {
            lab.down().await;
            return Err(err);
        }
    };
    let _ = writeln!(report, "ready");
    let _ = report.flush();
    drop(report);
    serve(lab, listener).await;
    Ok(())
}

/// The copy of the lab file the daemon runs from.
pub fn lab_file(paths: &LabPaths) -> PathBuf {
    paths.root().join("lab.yaml")
}

async fn serve(mut lab: Lab, listener: UnixListener) {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).expect("signal handler");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let (reader, mut writer) = stream.into_split();
        let mut line = String::new();
        if BufReader::new(reader).read_line(&mut line).await.is_err() {
            continue;
        }
        let request: Result<Request, _> = serde_json::from_str(&line);
        let (response, done) = match request {
            Err(err) => (Response::Error(format!("bad request: {err}")), false),
            Ok(Request::Status) => (Response::Status(lab.status()), false),
            Ok(Request::Apply { file }) => match spec::parse(&file) {
                Err(err) => (Response::Error(err.to_string()), false),
                Ok(parsed) => match lab.apply(parsed, &|_| {}).await {
                    Ok(changes) => {
                        let _ = std::fs::write(lab_file(&lab.paths), &file);
                        (Response::Applied(changes), false)
                    }
                    Err(err) => (Response::Error(err), false),
                },
            },
            Ok(Request::Exec {
                namespace,
                pod,
                container,
            }) => {
                let key = ObjectKey { namespace, name: pod };
                match lab.exec_target(&key, container.as_deref()) {
                    Ok(target) => (Response::Exec(target), false),
                    Err(err) => (Response::Error(err), false),
                }
            }
            Ok(Request::Down) => {
                let failures = lab.down().await;
                if failures.is_empty() {
                    (Response::Ok, true)
                } else {
                    (
                        Response::Error(format!("teardown incomplete: {}", failures.join("; "))),
                        true,
                    )
                }
            }
        };
        let mut answer = serde_json::to_vec(&response).expect("responses serialize");
        answer.push(b'\n');
        let _ = writer.write_all(&answer).await;
        if done {
            return;
        }
    }
    lab.down().await;
}
