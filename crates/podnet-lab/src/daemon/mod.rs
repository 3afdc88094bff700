//! The lab daemon: the process that owns a running lab.
//!
//! `podnet lab up` starts it in the background and returns once it reports the lab ready; it
//! keeps the lab alive afterwards, playing the roles a cluster spreads over many processes: the
//! API server and controllers (the [`Cluster`] store, [`controlplane`]), and on every node the
//! container runtime and kubelet ([`kubelet`], sandboxes, CNI calls). This module orchestrates;
//! [`socket`] serves commands and watches on the lab's Unix socket.

mod socket;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use podnet_cni::runtime::Runtime;
use podnet_model::{Event, Kind, Object, ObjectKey};
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::containers::{Container, ContainerSpec, Namespaces, OnChange, Readiness, RestartPolicy};
use crate::controlplane::{self, scheduler};
use crate::failures::Failures;
use crate::kubelet;
use crate::paths::LabPaths;
use crate::protocol::{ExecTarget, LabStatus, NodeRow, PodRow, Request, Response, ServiceRow};
use crate::reaper;
use crate::resolv::ClusterDns;
use crate::sandbox::{self, Sandbox};
use crate::spec::{LabFile, LabSpec};
use crate::topology::{self, NodeRuntime};

/// How long an apply waits for new pods to start before reporting them as they are.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How many watch events a slow watcher may fall behind before it is disconnected (it then
/// reconnects and lists again).
const WATCH_BACKLOG: usize = 1 << 20;
/// The grace period of everything when the lab goes down: none.
const NO_GRACE: Duration = Duration::ZERO;

/// A pod running on this host: its sandbox and containers. It stays while it terminates.
struct RunningPod {
    uid: Option<String>,
    node: String,
    sandbox: Option<Arc<Sandbox>>,
    containers: Vec<Container>,
    /// Why the sandbox could not be created.
    error: Option<String>,
}

/// What the lab's pods tell the daemon.
enum PodEvent {
    /// A container's status changed.
    Changed(ObjectKey),
    /// A deleted pod has stopped and its sandbox is gone.
    Terminated {
        key: ObjectKey,
        uid: Option<String>,
        failures: Failures,
    },
}

/// The lab's whole state.
pub struct Lab {
    paths: LabPaths,
    spec: Option<LabSpec>,
    runtime: Runtime,
    cluster: Cluster,
    nodes: BTreeMap<String, NodeRuntime>,
    pods: BTreeMap<ObjectKey, RunningPod>,
    /// Pods deleted gracefully whose containers are still stopping (they are still in `pods`).
    terminating: HashSet<ObjectKey>,
    /// The internet's web and DNS servers, once the fabric exists.
    internet: Vec<Container>,
    /// Every change of the cluster, for watchers.
    hub: socket::WatchHub,
    pod_events: mpsc::UnboundedSender<PodEvent>,
    pod_events_in: mpsc::UnboundedReceiver<PodEvent>,
}

impl Lab {
    /// An empty lab that will live under `paths`.
    pub fn new(paths: LabPaths) -> Self {
        let runtime = Runtime::new(topology::cni_bin_dirs(&paths));
        let (pod_events, pod_events_in) = mpsc::unbounded_channel();
        Lab {
            paths,
            spec: None,
            runtime,
            cluster: Cluster::default(),
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            terminating: HashSet::new(),
            internet: Vec::new(),
            hub: socket::WatchHub::new(WATCH_BACKLOG),
            pod_events,
            pod_events_in,
        }
    }

    /// Tells every watcher about `events`.
    fn publish(&self, events: Vec<Event>) {
        self.hub.publish(events);
    }

    /// Stores `object` and tells the watchers, with the EndpointSlices it changes.
    fn put_pod(&mut self, key: &ObjectKey, pod: Pod) {
        let mut events: Vec<Event> = self
            .cluster
            .put(Object::Pod(Box::new(pod.clone())))
            .into_iter()
            .collect();
        if !events.is_empty() {
            let services = controlplane::services_selecting(&self.cluster, key, &pod);
            events.extend(controlplane::slices_for(&mut self.cluster, Some(&services)));
        }
        self.publish(events);
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
                ("spec.serviceCIDR", current.service_cidr != file.spec.service_cidr),
                (
                    "spec.serviceNodePortRange",
                    current.node_ports != file.spec.node_ports,
                ),
                (
                    "spec.loadBalancerPool",
                    current.load_balancer_pool != file.spec.load_balancer_pool,
                ),
                (
                    "spec.clusterDomain",
                    current.cluster_domain != file.spec.cluster_domain,
                ),
                ("spec.clusterDNS", current.cluster_dns != file.spec.cluster_dns),
            ];
            if let Some((field, _)) = fixed.iter().find(|(_, changed)| *changed) {
                return Err(format!(
                    "{field} of a running lab cannot change; run `podnet lab down` first"
                ));
            }
        }
        let file = controlplane::addons::install(file, self.paths.name()).map_err(|err| err.to_string())?;
        let desired = controlplane::plan(&file, &self.cluster, &self.paths).map_err(|err| err.to_string())?;
        let mut changes = Vec::new();
        let mut report = |line: String| {
            progress(&line);
            changes.push(line);
        };

        // Pods that are gone or replaced: deleted gracefully, at once on nodes that go.
        let leaving: Vec<(ObjectKey, bool)> = self
            .cluster
            .pods
            .iter()
            .filter(|(key, pod)| {
                pod.metadata.deletion_timestamp.is_none()
                    && desired
                        .pods
                        .get(*key)
                        .is_none_or(|wanted| wanted.metadata.uid != pod.metadata.uid)
            })
            .map(|(key, pod)| {
                let node_goes =
                    podnet_model::pod_node(pod).is_some_and(|node| !desired.nodes.contains_key(node));
                (key.clone(), node_goes)
            })
            .collect();
        for (key, node_goes) in &leaving {
            self.delete_pod(key, (*node_goes).then_some(NO_GRACE));
            report(format!("pod {key} deleted"));
        }
        // Nodes that go: their pods first (stopped at once), then the node.
        let leaving_nodes: Vec<String> = self
            .nodes
            .keys()
            .filter(|name| !desired.nodes.contains_key(*name))
            .cloned()
            .collect();
        if !leaving_nodes.is_empty() {
            let on_leaving_nodes: Vec<ObjectKey> = self
                .terminating
                .iter()
                .filter(|key| {
                    self.cluster
                        .pods
                        .get(*key)
                        .and_then(podnet_model::pod_node)
                        .is_some_and(|node| leaving_nodes.iter().any(|leaving| leaving == node))
                })
                .cloned()
                .collect();
            self.wait_terminated(&on_leaving_nodes).await;
        }
        for name in leaving_nodes {
            self.nodes.remove(&name);
            let (paths, leaving) = (self.paths.clone(), name.clone());
            let failures = blocking(move || topology::delete_node(&paths, &leaving)).await;
            report(format!("node {name} removed{}", describe_failures(&failures)));
        }

        // New nodes, on the underlay.
        if self.internet.is_empty() {
            let paths = self.paths.clone();
            let external = blocking(move || topology::create_fabric(&paths))
                .await
                .map_err(|err| err.to_string())?;
            self.internet = internet_servers(&self.paths, &external);
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

        // The objects: watchers (node agents) see the new nodes, services and network policies
        // before the pods are wired. Pods still terminating stay until they are gone.
        let mut events = self.cluster.replace(
            &desired,
            &[Kind::Node, Kind::Namespace, Kind::Service, Kind::NetworkPolicy],
        );
        for line in events.iter().filter_map(change_line) {
            report(line);
        }
        let stale_slices: Vec<ObjectKey> = self
            .cluster
            .endpoint_slices
            .iter()
            .filter(|(key, slice)| {
                !controlplane::endpointslices::managed(slice) && !desired.endpoint_slices.contains_key(*key)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale_slices {
            events.extend(self.cluster.remove(Kind::EndpointSlice, &key));
        }
        for slice in desired.endpoint_slices.values() {
            events.extend(self.cluster.put(Object::EndpointSlice(Box::new(slice.clone()))));
        }
        // New pods; the ones kept are stored already, with a fresher status than the plan's
        // (relabelled ones get their new labels on that).
        for (key, pod) in &desired.pods {
            if self.terminating.contains(key) {
                continue;
            }
            let update = match self.cluster.pods.get(key) {
                Some(stored) if stored.metadata.uid == pod.metadata.uid => {
                    (stored.metadata.labels != pod.metadata.labels).then(|| {
                        report(format!("pod {key} relabelled"));
                        let mut relabelled = stored.clone();
                        relabelled.metadata.labels = pod.metadata.labels.clone();
                        relabelled
                    })
                }
                _ => Some(pod.clone()),
            };
            if let Some(pod) = update {
                events.extend(self.cluster.put(Object::Pod(Box::new(pod))));
            }
        }
        events.extend(controlplane::slices_for(&mut self.cluster, None));
        tracing::info!("apply: {} object changes published", events.len());
        self.publish(events);
        self.spec = Some(file.spec.clone());
        for (key, pod) in &desired.pods {
            if let Some(reason) = scheduler::pending_reason(pod) {
                report(format!("pod {key} pending: {reason}"));
            }
        }

        // A pod replacing one of the same name appears once the old one is gone.
        let replacing: Vec<ObjectKey> = desired
            .pods
            .keys()
            .filter(|key| self.terminating.contains(*key))
            .cloned()
            .collect();
        self.wait_terminated(&replacing).await;
        for key in &replacing {
            self.put_pod(key, desired.pods[key].clone());
        }

        // New pods: each node wires its pods one after the other in start order (its agent
        // first, then the file's order, so addresses are handed out in that order); nodes in
        // parallel.
        let mut arriving: BTreeMap<String, Vec<(ObjectKey, Pod)>> = BTreeMap::new();
        for key in controlplane::start_order(&desired, &file, &self.paths) {
            let pod = &desired.pods[&key];
            let started = self
                .pods
                .get(&key)
                .is_some_and(|running| running.uid == pod.metadata.uid);
            if let (false, Some(node)) = (started, podnet_model::pod_node(pod)) {
                arriving
                    .entry(node.to_owned())
                    .or_default()
                    .push((key, pod.clone()));
            }
        }
        let (sender, mut wired) = mpsc::unbounded_channel();
        let dns = ClusterDns {
            domain: file.spec.cluster_domain.clone(),
            server: file.spec.cluster_dns,
        };
        for (node_name, pods) in arriving {
            let (node, paths, runtime, sender, dns) = (
                self.nodes[&node_name].clone(),
                self.paths.clone(),
                self.runtime.clone(),
                sender.clone(),
                dns.clone(),
            );
            tokio::task::spawn_blocking(move || {
                for (key, pod) in pods {
                    let outcome = sandbox::create(&paths, &node, &runtime, &key, &pod, &dns)
                        .map_err(|err| err.to_string());
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
                uid: pod.metadata.uid.clone(),
                node: node.clone(),
                sandbox: None,
                containers: Vec::new(),
                error: None,
            };
            match outcome {
                Ok(sandbox) => {
                    let ips: Vec<String> = sandbox.ips.iter().map(ToString::to_string).collect();
                    let sandbox = Arc::new(sandbox);
                    running.containers =
                        kubelet::start_containers(&self.paths, &key, &pod, &sandbox, self.on_change(&key));
                    running.sandbox = Some(sandbox);
                    report(format!("pod {key} on {node}: {}", ips.join(", ")));
                    started.push(key.clone());
                }
                Err(err) => {
                    report(format!("pod {key} on {node}: sandbox failed: {err}"));
                    running.error = Some(err);
                }
            }
            self.pods.insert(key.clone(), running);
            self.refresh_status(&key);
        }
        self.wait_settled(&started).await;
        Ok(changes)
    }

    /// A callback telling the daemon that a container of pod `key` changed.
    fn on_change(&self, key: &ObjectKey) -> OnChange {
        let (sender, key) = (self.pod_events.clone(), key.clone());
        Arc::new(move || {
            let _ = sender.send(PodEvent::Changed(key.clone()));
        })
    }

    /// Writes the status kubelet would report for pod `key` from its sandbox and containers.
    fn refresh_status(&mut self, key: &ObjectKey) {
        let (Some(running), Some(pod)) = (self.pods.get(key), self.cluster.pods.get(key)) else {
            return;
        };
        if running.uid != pod.metadata.uid {
            return;
        }
        let (Some(sandbox), Some(node)) = (&running.sandbox, self.nodes.get(&running.node)) else {
            return;
        };
        let statuses: Vec<_> = running.containers.iter().map(Container::status).collect();
        let mut pod = pod.clone();
        pod.status = Some(kubelet::pod_status(&pod, sandbox, node, &statuses));
        self.put_pod(key, pod);
    }

    /// Deletes pod `key` as the API server and kubelet do: it is marked terminating at once
    /// (its endpoints say so), its containers get `grace` (the pod's own period when `None`)
    /// to stop, then its sandbox goes and the object with it.
    fn delete_pod(&mut self, key: &ObjectKey, grace: Option<Duration>) {
        let Some(mut pod) = self.cluster.pods.get(key).cloned() else {
            return;
        };
        let grace = grace.unwrap_or_else(|| kubelet::grace_period(&pod));
        let Some(running) = self.pods.get(key) else {
            // Never started (pending): nothing to stop.
            self.remove_pod(key, &pod);
            return;
        };
        pod.metadata.deletion_timestamp = Some(now());
        pod.metadata.deletion_grace_period_seconds = Some(grace.as_secs() as i64);
        let (paths, runtime, sender, key) = (
            self.paths.clone(),
            self.runtime.clone(),
            self.pod_events.clone(),
            key.clone(),
        );
        let (containers, sandbox, uid) = (
            running.containers.clone(),
            running.sandbox.clone(),
            running.uid.clone(),
        );
        let node = self.nodes.get(&running.node).cloned();
        self.put_pod(&key, pod.clone());
        self.terminating.insert(key.clone());
        // Whatever happens, the daemon hears that the pod is gone.
        tokio::spawn(async move {
            kubelet::stop(containers, grace).await;
            let failures = match (sandbox, node) {
                (Some(sandbox), Some(node)) => {
                    let key = key.clone();
                    tokio::task::spawn_blocking(move || {
                        sandbox::destroy(&paths, &node, &runtime, &key, &pod, &sandbox)
                    })
                    .await
                    .unwrap_or_else(|err| Failures::one(format!("removing the sandbox failed: {err}")))
                }
                _ => Failures::new(),
            };
            let _ = sender.send(PodEvent::Terminated { key, uid, failures });
        });
    }

    /// Handles what a pod reports.
    fn handle_pod_event(&mut self, event: PodEvent) {
        match event {
            PodEvent::Changed(key) => self.refresh_status(&key),
            PodEvent::Terminated { key, uid, failures } => {
                self.terminating.remove(&key);
                if self.pods.get(&key).is_some_and(|running| running.uid == uid) {
                    self.pods.remove(&key);
                }
                if !failures.is_empty() {
                    tracing::warn!("pod {key} removed with cleanup problems: {failures}");
                }
                if let Some(pod) = self
                    .cluster
                    .pods
                    .get(&key)
                    .filter(|pod| pod.metadata.uid == uid)
                    .cloned()
                {
                    self.remove_pod(&key, &pod);
                }
            }
        }
    }

    /// Removes pod `key` from the cluster, and from the EndpointSlices that listed it.
    fn remove_pod(&mut self, key: &ObjectKey, pod: &Pod) {
        let services = controlplane::services_selecting(&self.cluster, key, pod);
        let mut events: Vec<Event> = self.cluster.remove(Kind::Pod, key).into_iter().collect();
        events.extend(controlplane::slices_for(&mut self.cluster, Some(&services)));
        self.publish(events);
    }

    /// Waits until the pods `keys` have terminated, handling pod events meanwhile.
    async fn wait_terminated(&mut self, keys: &[ObjectKey]) {
        while keys.iter().any(|key| self.terminating.contains(key)) {
            match self.pod_events_in.recv().await {
                Some(event) => self.handle_pod_event(event),
                None => return,
            }
        }
    }

    /// Waits until every container of `keys` is ready or has failed once, or the timeout,
    /// handling pod events meanwhile.
    async fn wait_settled(&mut self, keys: &[ObjectKey]) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let settled = keys.iter().all(|key| {
                self.pods
                    .get(key)
                    .is_none_or(|pod| pod.containers.iter().all(|container| container.status().settled))
            });
            if settled || Instant::now() > deadline {
                return;
            }
            tokio::select! {
                event = self.pod_events_in.recv() => match event {
                    Some(event) => self.handle_pod_event(event),
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline.into()) => return,
            }
        }
    }

    /// Stops every container (terminating ones too: their grace period is over) and removes
    /// every namespace and file of the lab.
    pub async fn down(&mut self) -> Failures {
        let containers: Vec<Container> = self
            .pods
            .values_mut()
            .flat_map(|pod| std::mem::take(&mut pod.containers))
            .chain(std::mem::take(&mut self.internet))
            .collect();
        kubelet::stop(containers, NO_GRACE).await;
        let terminating: Vec<ObjectKey> = self.terminating.iter().cloned().collect();
        self.wait_terminated(&terminating).await;
        self.pods.clear();
        self.nodes.clear();
        let paths = self.paths.clone();
        blocking(move || reaper::sweep(&paths)).await
    }

    /// The lab's nodes, pods and services.
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
                .map(|node| NodeRow {
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
                .cluster
                .pods
                .iter()
                .map(|(key, pod)| self.pod_row(key, pod))
                .collect(),
            services: self
                .cluster
                .services
                .iter()
                .map(|(key, service)| service_row(key, service))
                .collect(),
        }
    }

    fn pod_row(&self, key: &ObjectKey, pod: &Pod) -> PodRow {
        let running = self.pods.get(key);
        let containers: Vec<_> = running
            .map(|running| running.containers.iter().map(Container::status).collect())
            .unwrap_or_default();
        let pending = scheduler::pending_reason(pod);
        let error = running.and_then(|running| running.error.clone());
        let phase = if pod.metadata.deletion_timestamp.is_some() {
            "Terminating".to_owned()
        } else if pending.is_some() {
            "Pending".to_owned()
        } else if error.is_some() {
            "Failed".to_owned()
        } else {
            containers
                .iter()
                .find_map(|container| {
                    (container.state != "Running").then(|| {
                        container
                            .reason
                            .clone()
                            .unwrap_or_else(|| container.state.clone())
                    })
                })
                .unwrap_or_else(|| {
                    if running.is_some() {
                        "Running"
                    } else {
                        "ContainerCreating"
                    }
                    .to_owned()
                })
        };
        PodRow {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            node: podnet_model::pod_node(pod).unwrap_or_default().to_owned(),
            ips: podnet_model::pod_ips(pod)
                .iter()
                .map(ToString::to_string)
                .collect(),
            netns: running
                .and_then(|running| running.sandbox.as_ref())
                .map(|sandbox| sandbox.netns.path().display().to_string())
                .unwrap_or_default(),
            containers,
            phase,
            message: pending.or(error),
        }
    }

    /// Where to exec in a pod's container.
    fn exec_target(&self, key: &ObjectKey, container: Option<&str>) -> Result<ExecTarget, String> {
        let running = self.pods.get(key).ok_or_else(|| {
            match self.cluster.pods.get(key).and_then(scheduler::pending_reason) {
                Some(reason) => format!("pod {key} is pending: {reason}"),
                None => format!("pod {key} not found"),
            }
        })?;
        let sandbox = running.sandbox.as_ref().ok_or_else(|| {
            format!(
                "pod {key} has no sandbox: {}",
                running.error.clone().unwrap_or_default()
            )
        })?;
        let pod = self
            .cluster
            .pods
            .get(key)
            .ok_or_else(|| format!("pod {key} not found"))?;
        let spec = pod.spec.as_ref().expect("validated");
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
        let uts = if podnet_model::pod_host_network(pod) {
            self.paths.node_dir(&running.node).join("uts")
        } else {
            self.paths.pod_dir(key).join("uts")
        };
        Ok(ExecTarget {
            netns: sandbox.netns.path().display().to_string(),
            uts: uts.display().to_string(),
            files: sandbox.files.clone(),
            env: kubelet::container_env(key, pod, object),
        })
    }
}

/// A service's row in `lab status`.
fn service_row(key: &ObjectKey, service: &k8s_openapi::api::core::v1::Service) -> ServiceRow {
    let spec = service.spec.clone().unwrap_or_default();
    let kind = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let mut external: Vec<String> = service
        .status
        .iter()
        .flat_map(|status| status.load_balancer.iter())
        .flat_map(|balancer| balancer.ingress.iter().flatten())
        .filter_map(|ingress| ingress.ip.clone())
        .collect();
    external.extend(spec.external_ips.iter().flatten().cloned());
    if let Some(name) = &spec.external_name {
        external.push(name.clone());
    }
    let external = match (external.is_empty(), kind.as_str()) {
        (true, "LoadBalancer") => "<pending>".to_owned(),
        (true, _) => "<none>".to_owned(),
        (false, _) => external.join(","),
    };
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|port| {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            match port.node_port {
                Some(node_port) => format!("{}:{node_port}/{protocol}", port.port),
                None => format!("{}/{protocol}", port.port),
            }
        })
        .collect();
    ServiceRow {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        kind,
        cluster_ip: spec.cluster_ip.unwrap_or_else(|| "<none>".into()),
        external,
        ports: if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(",")
        },
    }
}

/// "The internet": a whoami server on every documentation address of the external namespace,
/// so a pod's request out of the cluster shows which address it arrived from; and its DNS
/// server, authoritative for a few names under the documentation domains and forwarding
/// nowhere, so that nothing a lab resolves leaves the host.
fn internet_servers(paths: &LabPaths, external: &topology::External) -> Vec<Container> {
    let mut dns = podnet_dns::DnsArgs::new(None);
    dns.no_cluster = true;
    dns.no_forward = true;
    dns.listen = (std::net::Ipv4Addr::UNSPECIFIED, 53).into();
    dns.static_records = topology::INTERNET_NAMES
        .iter()
        .map(|(name, address)| format!("{name}={address}").parse().expect("valid names"))
        .collect();
    let servers = [
        (
            "internet",
            ["workload", "whoami", "--name", "internet"]
                .map(String::from)
                .to_vec(),
            80,
        ),
        (
            "internet-dns",
            std::iter::once("dns".to_owned()).chain(dns.to_argv()).collect(),
            53,
        ),
    ];
    servers
        .into_iter()
        .map(|(name, args, port)| {
            let spec = ContainerSpec {
                name: name.into(),
                argv: std::iter::once(kubelet::current_exe()).chain(args).collect(),
                env: vec![("PATH".into(), kubelet::host_path())],
                readiness: Readiness::Listening(port),
                pre_stop: None,
                restart: RestartPolicy::Always,
            };
            let namespaces = Namespaces {
                netns: external.netns.clone(),
                uts: external.uts.clone(),
                files: Vec::new(),
            };
            Container::start(spec, namespaces, paths.internet_log(), Arc::new(|| {}))
        })
        .collect()
}

/// The current time, as the API server stamps objects.
fn now() -> Time {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let timestamp =
        k8s_openapi::jiff::Timestamp::new(elapsed.as_secs() as i64, elapsed.subsec_nanos() as i32)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    Time(timestamp)
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("blocking task panicked")
}

fn describe_failures(failures: &Failures) -> String {
    if failures.is_empty() {
        String::new()
    } else {
        format!(" (cleanup problems: {failures})")
    }
}

/// Runs the daemon of lab `name`, whose file the CLI left at `LAB_DIR/lab.yaml`. Progress lines,
/// then `ready`, go to `report` (the pipe `lab up` reads); a failure is returned, and the command
/// reports it on the same pipe as `error ...`.
pub async fn run(name: &str, mut report: impl Write + Send) -> Result<(), String> {
    let paths = LabPaths::new(name);
    let text = std::fs::read_to_string(lab_file(&paths))
        .map_err(|err| format!("cannot read the lab file: {err}"))?;
    let file = crate::spec::parse(&text).map_err(|err| err.to_string())?;
    crate::install_cni_plugins(&paths).map_err(|err| format!("cannot install the CNI plugins: {err}"))?;
    let mut lab = Lab::new(paths.clone());
    // Watches (the node agents) are served while the lab is being built; commands wait.
    let mut requests = socket::listen(&paths, lab.hub.clone())?;
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
    let _ = writeln!(report, "ready");
    let _ = report.flush();
    drop(report);
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).expect("signal handler");
    loop {
        tokio::select! {
            received = requests.recv() => match received {
                Some((request, mut writer)) => {
                    let (response, done) = lab.handle(request).await;
                    // Answered from here, so the answer to Down is out before the process exits.
                    socket::respond(&mut writer, &response).await;
                    if done {
                        return Ok(());
                    }
                }
                None => break,
            },
            Some(event) = lab.pod_events_in.recv() => lab.handle_pod_event(event),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    lab.down().await;
    Ok(())
}

impl Lab {
    /// Answers one command; true when the lab is gone afterwards.
    async fn handle(&mut self, request: Request) -> (Response, bool) {
        match request {
            Request::Status => (Response::Status(self.status()), false),
            Request::Apply { file } => match crate::spec::parse(&file) {
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
            Request::Get {
                kind,
                namespace,
                name,
            } => {
                let objects: Vec<Object> = self
                    .cluster
                    .list(kind)
                    .into_iter()
                    .filter(|object| {
                        let key = object.key();
                        namespace
                            .as_ref()
                            .is_none_or(|namespace| !kind.namespaced() || key.namespace == *namespace)
                            && name.as_ref().is_none_or(|name| key.name == *name)
                    })
                    .collect();
                if let (Some(name), true) = (&name, objects.is_empty()) {
                    return (Response::Error(format!("{kind:?} {name:?} not found")), false);
                }
                (Response::Objects(objects), false)
            }
            Request::Down => {
                let failures = self.down().await;
                if failures.is_empty() {
                    (Response::Ok, true)
                } else {
                    (Response::Error(format!("teardown incomplete: {failures}")), true)
                }
            }
            Request::Watch { .. } => (Response::Error("watches are served by the socket".into()), false),
        }
    }
}

/// The line `lab apply` prints for a change of a Service or a NetworkPolicy (other kinds have
/// lines of their own, or none).
fn change_line(event: &Event) -> Option<String> {
    let (kind, key, change) = match event {
        Event::Applied(object) => (object.kind(), object.key(), "configured"),
        Event::Deleted(kind, key) => (*kind, key.clone(), "deleted"),
        _ => return None,
    };
    let kind = match kind {
        Kind::Service => "service",
        Kind::NetworkPolicy => "networkpolicy",
        _ => return None,
    };
    Some(format!("{kind} {key} {change}"))
}

/// The copy of the lab file the daemon runs from.
pub fn lab_file(paths: &LabPaths) -> PathBuf {
    paths.root().join("lab.yaml")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn services_and_network_policies_are_reported_as_they_change() {
        let key = ObjectKey {
            namespace: "shop".into(),
            name: "deny".into(),
        };
        let events = [
            Event::Applied(Object::Service(Box::new(Service {
                metadata: meta("web"),
                ..Service::default()
            }))),
            Event::Applied(Object::NetworkPolicy(Box::new(NetworkPolicy {
                metadata: meta("deny"),
                ..NetworkPolicy::default()
            }))),
            Event::Deleted(Kind::NetworkPolicy, key.clone()),
            Event::Deleted(Kind::Service, key),
            Event::Deleted(Kind::Node, ObjectKey::cluster("node1")),
            Event::Synced,
        ];
        let lines: Vec<String> = events.iter().filter_map(change_line).collect();
        assert_eq!(
            lines,
            [
                "service shop/web configured",
                "networkpolicy shop/deny configured",
                "networkpolicy shop/deny deleted",
                "service shop/deny deleted",
            ]
        );
    }
}
