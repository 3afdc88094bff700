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
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container as ContainerObject, Pod, PodIP, PodStatus as PodStatusObject};
use podnet_cni::runtime::Runtime;
use podnet_model::{ClusterState, ObjectKey};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

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
/// How long a watcher lets changes accumulate before sending the state: wiring 100 pods
/// publishes 100 states, and agents only need the last.
const WATCH_COALESCE: Duration = Duration::from_millis(20);

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
    /// The internet's web server, once the fabric exists.
    internet: Option<Container>,
    /// The source seam's lab side: every component watching the lab gets each new state.
    publisher: watch::Sender<Arc<ClusterState>>,
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
            internet: None,
            publisher: watch::channel(Arc::new(ClusterState::default())).0,
        }
    }

    /// Sends the current cluster state to every watcher.
    fn publish(&self) {
        self.publisher.send_replace(Arc::new(self.cluster.clone()));
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
        let desired = controlplane::plan(&file, &self.cluster, &self.paths).map_err(|err| err.to_string())?;
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
            let failures = self.remove_pod(&key, running).await;
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
            let (paths, leaving) = (self.paths.clone(), name.clone());
            let failures = blocking(move || {
                topology::delete_node(&paths, &leaving)
                    .into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
            })
            .await;
            report(format!("node {name} removed{}", describe_failures(&failures)));
        }

        // New nodes, on the underlay.
        if self.internet.is_none() {
            let paths = self.paths.clone();
            let external = blocking(move || topology::create_fabric(&paths))
                .await
                .map_err(|err| err.to_string())?;
            self.internet = Some(internet_server(&self.paths, external));
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

        // Watchers (the node agents) see the new nodes before the pods are wired.
        let order = controlplane::start_order(&file, &self.paths);
        self.cluster = desired;
        self.spec = Some(file.spec);
        self.publish();

        // New pods: each node wires its pods one after the other in start order (its agent
        // first, then the file's order, so addresses are handed out in that order); nodes in
        // parallel. A pod's containers start as soon as its sandbox is ready: the agent must
        // run before the node's other pods can be wired.
        let mut arriving: BTreeMap<String, Vec<(ObjectKey, Pod)>> = BTreeMap::new();
        for key in order {
            if let Some(pod) = self
                .cluster
                .pods
                .get(&key)
                .filter(|_| !self.pods.contains_key(&key))
            {
                let node = podnet_model::pod_node(pod).expect("scheduled").to_owned();
                arriving.entry(node).or_default().push((key, pod.clone()));
            }
        }
        let (sender, mut wired) = mpsc::unbounded_channel();
        for (node_name, pods) in arriving {
            let (node, paths, runtime, sender) = (
                self.nodes[&node_name].clone(),
                self.paths.clone(),
                self.runtime.clone(),
                sender.clone(),
            );
            tokio::task::spawn_blocking(move || {
                for (key, pod) in pods {
                    let outcome =
                        sandbox::create(&paths, &node, &runtime, &key, &pod).map_err(|err| err.to_string());
                    if sender.send((key, pod, node_name.clone(), outcome)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(sender);
        let mut started = Vec::new();
        while let Some((key, pod, node, outcome)) = wired.recv().await {
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
                    if let Some(object) = self.cluster.pods.get_mut(&key) {
                        object.status = Some(pod_status(&sandbox, &self.nodes[&node]));
                    }
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
            self.publish();
        }
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

    async fn remove_pod(&self, key: &ObjectKey, running: RunningPod) -> Vec<String> {
        stop_all(running.containers).await;
        let Some(sandbox) = running.sandbox else {
            return Vec::new();
        };
        let Some(node) = self.nodes.get(&running.node).cloned() else {
            return Vec::new();
        };
        let (paths, runtime, key, pod) = (self.paths.clone(), self.runtime.clone(), key.clone(), running.pod);
        blocking(move || sandbox::destroy(&paths, &node, &runtime, &key, &pod, sandbox)).await
    }

    /// Stops every container and removes every namespace and file of the lab.
    pub async fn down(&mut self) -> Vec<String> {
        let containers: Vec<Container> = self
            .pods
            .values_mut()
            .flat_map(|pod| std::mem::take(&mut pod.containers))
            .collect();
        stop_all(containers.into_iter().chain(self.internet.take()).collect()).await;
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
            backend: match &self.spec {
                Some(spec) if spec.cni.is_some() => "custom CNI configuration".into(),
                Some(spec) => spec.backend.name().into(),
                None => String::new(),
            },
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
    ContainerSpec {
        name: container.name.clone(),
        argv,
        env: container_env(key, pod, container),
        ready_port,
        restart,
    }
}

/// "The internet": a whoami server on every documentation address of the external namespace,
/// so a pod's request out of the cluster shows which address it arrived from.
fn internet_server(paths: &LabPaths, external: topology::External) -> Container {
    let spec = ContainerSpec {
        name: "internet".into(),
        argv: vec![
            current_exe(),
            "workload".into(),
            "whoami".into(),
            "--name".into(),
            "internet".into(),
        ],
        env: vec![("PATH".into(), host_path())],
        ready_port: Some(80),
        restart: RestartPolicy::Always,
    };
    let namespaces = Namespaces {
        netns: external.netns,
        uts: external.uts,
    };
    Container::start(spec, namespaces, paths.internet_log())
}

fn current_exe() -> String {
    std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "podnet".into())
}

/// A pod's status once its sandbox is wired, as kubelet reports it.
fn pod_status(sandbox: &Sandbox, node: &NodeRuntime) -> PodStatusObject {
    PodStatusObject {
        phase: Some("Running".into()),
        pod_ip: sandbox.ips.first().map(ToString::to_string),
        pod_ips: Some(
            sandbox
                .ips
                .iter()
                .map(|ip| PodIP { ip: ip.to_string() })
                .collect(),
        ),
        host_ip: Some(node.address.to_string()),
        ..PodStatusObject::default()
    }
}

/// The port a built-in server listens on.
fn builtin_port(builtin: Builtin, args: &[String], container: &ContainerObject) -> Option<u16> {
    match builtin {
        Builtin::Pause | Builtin::Podnet => None,
        Builtin::Nginx => Some(80),
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

/// The host's PATH, which the lab's containers use to find their commands.
fn host_path() -> String {
    std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
}

/// A container's environment: the host's PATH, Kubernetes' HOSTNAME, the container's `env`.
fn container_env(key: &ObjectKey, pod: &Pod, container: &ContainerObject) -> Vec<(String, String)> {
    let hostname = if podnet_model::pod_host_network(pod) {
        podnet_model::pod_node(pod).unwrap_or_default().to_owned()
    } else {
        key.name.clone()
    };
    let mut env = vec![
        ("PATH".to_owned(), host_path()),
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

/// Runs the daemon of lab `name`, whose file the CLI left at `LAB_DIR/lab.yaml`. Progress lines,
/// then `ready`, go to `report` (the pipe `lab up` reads); a failure is returned, and the command
/// reports it on the same pipe as `error ...`.
pub async fn run(name: &str, mut report: impl Write + Send) -> Result<(), String> {
    let paths = LabPaths::new(name);
    let text = std::fs::read_to_string(lab_file(&paths))
        .map_err(|err| format!("cannot read the lab file: {err}"))?;
    let file = spec::parse(&text).map_err(|err| err.to_string())?;
    crate::install_cni_plugins(&paths).map_err(|err| format!("cannot install the CNI plugins: {err}"))?;
    let mut lab = Lab::new(paths.clone());
    // The socket serves watchers (the node agents) while the lab is being built.
    let listener = UnixListener::bind(paths.socket())
        .map_err(|err| format!("cannot listen on {}: {err}", paths.socket().display()))?;
    let (requests, mut incoming) = mpsc::channel(16);
    let acceptor = tokio::spawn(accept(listener, lab.publisher.subscribe(), requests));
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
        acceptor.abort();
        lab.down().await;
        return Err(err);
    }
    let _ = writeln!(report, "ready");
    let _ = report.flush();
    drop(report);
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).expect("signal handler");
    loop {
        let (request, mut client): (Request, OwnedWriteHalf) = tokio::select! {
            received = incoming.recv() => match received {
                Some(received) => received,
                None => break,
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let (response, done) = lab.handle(request).await;
        // Answered from here, so the answer to Down is out before the process exits.
        let mut answer = serde_json::to_vec(&response).expect("responses serialize");
        answer.push(b'\n');
        let _ = client.write_all(&answer).await;
        if done {
            acceptor.abort();
            return Ok(());
        }
    }
    acceptor.abort();
    lab.down().await;
    Ok(())
}

/// The copy of the lab file the daemon runs from.
pub fn lab_file(paths: &LabPaths) -> PathBuf {
    paths.root().join("lab.yaml")
}

impl Lab {
    /// Answers one request; true when the lab is gone afterwards.
    async fn handle(&mut self, request: Request) -> (Response, bool) {
        match request {
            Request::Status => (Response::Status(self.status()), false),
            Request::Apply { file } => match spec::parse(&file) {
                Err(err) => (Response::Error(err.to_string()), false),
                Ok(parsed) => match self.apply(parsed, &|_| {}).await {
                    Ok(changes) => {
                        let _ = std::fs::write(lab_file(&self.paths), &file);
                        (Response::Applied(changes), false)
                    }
                    Err(err) => (Response::Error(err), false),
                },
            },
            Request::Exec {
                namespace,
                pod,
                container,
            } => {
                let key = ObjectKey { namespace, name: pod };
                match self.exec_target(&key, container.as_deref()) {
                    Ok(target) => (Response::Exec(target), false),
                    Err(err) => (Response::Error(err), false),
                }
            }
            Request::Down => {
                let failures = self.down().await;
                if failures.is_empty() {
                    (Response::Ok, true)
                } else {
                    (
                        Response::Error(format!("teardown incomplete: {}", failures.join("; "))),
                        true,
                    )
                }
            }
            Request::Watch => (
                Response::Error("watch requests are served by the acceptor".into()),
                false,
            ),
        }
    }
}

/// Accepts connections: watches are served here, from the published states; every other
/// request goes, with the connection to answer on, to the lab's owner, one at a time.
async fn accept(
    listener: UnixListener,
    states: watch::Receiver<Arc<ClusterState>>,
    requests: mpsc::Sender<(Request, OwnedWriteHalf)>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let (states, requests) = (states.clone(), requests.clone());
        tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(reader).read_line(&mut line).await.is_err() {
                return;
            }
            match serde_json::from_str::<Request>(&line) {
                Ok(Request::Watch) => watch_stream(states, writer).await,
                Ok(request) => {
                    let _ = requests.send((request, writer)).await;
                }
                Err(err) => {
                    let mut answer = serde_json::to_vec(&Response::Error(format!("bad request: {err}")))
                        .expect("serializes");
                    answer.push(b'\n');
                    let _ = writer.write_all(&answer).await;
                }
            }
        });
    }
}

/// Streams the cluster state to a watcher: now, then after every change (coalesced).
async fn watch_stream(mut states: watch::Receiver<Arc<ClusterState>>, mut writer: OwnedWriteHalf) {
    loop {
        let state = states.borrow_and_update().clone();
        let mut line = serde_json::to_vec(&*state).expect("states serialize");
        line.push(b'\n');
        if writer.write_all(&line).await.is_err() || states.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(WATCH_COALESCE).await;
    }
}

/// Keeps a lab's cluster state up to date from its daemon: the lab's implementation of the
/// source seam, used by node agents running in the lab.
pub struct LabSource {
    states: watch::Receiver<Arc<ClusterState>>,
}

impl LabSource {
    /// Watches lab `name`, reconnecting while the daemon is unreachable. Must be called
    /// inside a tokio runtime.
    pub fn watch(name: &str) -> Self {
        let socket = LabPaths::new(name).socket();
        let (sender, states) = watch::channel(Arc::new(ClusterState::default()));
        tokio::spawn(async move {
            while !sender.is_closed() {
                if let Ok(stream) = UnixStream::connect(&socket).await {
                    let (reader, mut writer) = stream.into_split();
                    let mut request = serde_json::to_vec(&Request::Watch).expect("requests serialize");
                    request.push(b'\n');
                    if writer.write_all(&request).await.is_ok() {
                        let mut lines = BufReader::new(reader).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            match serde_json::from_str::<ClusterState>(&line) {
                                Ok(state) => {
                                    sender.send_replace(Arc::new(state));
                                }
                                Err(err) => tracing::warn!("bad state from the lab daemon: {err}"),
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        LabSource { states }
    }
}

impl podnet_model::ClusterSource for LabSource {
    fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.states.clone()
    }
}
