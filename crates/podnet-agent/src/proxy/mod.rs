//! The service proxy: kube-proxy's job, on nftables.
//!
//! It watches Services, EndpointSlices and Nodes, keeps what the data path needs of them
//! ([`model`]), plans each changed service ([`plan`]) into the elements and chains of its
//! table ([`table`]), and sends the difference as one transaction ([`podnet_nft::Syncer`]).
//! Around the table: UDP flows to removed endpoints are forgotten ([`conntrack`]), load-balancer
//! addresses are announced on the segment ([`announce`]), and the health-check node ports of
//! `externalTrafficPolicy: Local` load balancers are answered, as kube-proxy answers them.

pub mod announce;
pub mod conntrack;
pub mod model;
pub mod plan;
pub mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use podnet_http::{Answer, Server};
use podnet_model::{Event, Kind, Mirror, Object, ObjectKey};
use podnet_netlink::{Netlink, NfNetlink};
use podnet_nft::registry::{PROXY_TABLE, ROUTE_PROTOCOL};
use podnet_nft::{Datum, Element, Kernel, Syncer};
use serde_json::json;

use crate::controller::{Controller, Reconciled};
use crate::metrics::{Metrics, SyncReport};
use model::{ServiceInfo, SliceInfo, UDP};
use plan::{PlannedPort, ServicePlan};
use table::Shared;

/// The element group of the cluster's pod subnets (no service has an empty key).
fn pod_cidrs_group() -> ObjectKey {
    ObjectKey::cluster("")
}

/// What the proxy knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeInfo {
    pod_cidr: Option<Ipv4Net>,
    /// Its `Ready` condition (a node without conditions, as the lab's, counts as ready).
    ready: bool,
}

/// What was programmed for one service.
#[derive(Debug, Default)]
struct Programmed {
    shared: Vec<Shared>,
    chains: Vec<String>,
    sets: Vec<String>,
    ports: Vec<PlannedPort>,
    health_check: Option<(u16, usize)>,
    announce: Vec<(Ipv4Addr, Option<BTreeSet<Box<str>>>)>,
}

/// The service proxy controller of one node.
pub struct Proxy {
    node: String,
    services: Mirror<ServiceInfo>,
    slices: Mirror<SliceInfo>,
    nodes: Mirror<NodeInfo>,
    /// The slices of each service.
    slices_of: HashMap<ObjectKey, Vec<ObjectKey>>,
    /// Services to plan again.
    dirty: HashSet<ObjectKey>,
    nodes_changed: bool,
    programmed: HashMap<ObjectKey, Programmed>,
    /// The services with load-balancer addresses or health checks (few among many).
    balanced: BTreeSet<ObjectKey>,
    /// How many services use each shared chain.
    shared_users: BTreeMap<Shared, usize>,
    syncer: Syncer<ObjectKey, Kernel>,
    started: bool,
    conntrack: Option<NfNetlink>,
    routes: Option<Netlink>,
    /// The load-balancer addresses held, once read from the kernel.
    announced: Option<BTreeSet<IpNet>>,
    /// Service ports changed (UDP ones, before and after) whose stale flows are still to go.
    pending_flows: Vec<(Option<Vec<PlannedPort>>, Vec<PlannedPort>)>,
    /// The cluster's pod network, when given (else every node's pod subnet).
    cluster_cidrs: Vec<Ipv4Net>,
    /// Whether any pod subnet is known (without, every client looks like a node's).
    pod_network_known: bool,
    health_checks: HealthChecks,
    metrics: Arc<Metrics>,
    /// Service ports and endpoints programmed, for the metrics.
    totals: (usize, usize),
}

impl Proxy {
    /// The proxy of node `node`, reporting to `metrics`. Traffic from `cluster_cidrs` (when
    /// empty: from every node's pod subnet) is pod traffic, which keeps its source address.
    pub fn new(node: &str, cluster_cidrs: Vec<Ipv4Net>, metrics: Arc<Metrics>) -> Self {
        Proxy {
            node: node.to_owned(),
            services: Mirror::new(Kind::Service),
            slices: Mirror::new(Kind::EndpointSlice),
            nodes: Mirror::new(Kind::Node),
            slices_of: HashMap::new(),
            dirty: HashSet::new(),
            nodes_changed: false,
            programmed: HashMap::new(),
            balanced: BTreeSet::new(),
            shared_users: BTreeMap::new(),
            syncer: Syncer::new(PROXY_TABLE, Kernel::new()),
            started: false,
            conntrack: None,
            routes: None,
            announced: None,
            pending_flows: Vec::new(),
            cluster_cidrs,
            pod_network_known: false,
            health_checks: HealthChecks::default(),
            metrics,
            totals: (0, 0),
        }
    }

    /// Plans service `key` again and hands its elements and chains to the syncer.
    /// Returns what the syncer could not take (elements another service holds).
    fn replan(&mut self, key: &ObjectKey) -> Vec<String> {
        let plan = match self.services.get(key) {
            Some(service) => {
                let slices: Vec<&SliceInfo> = self
                    .slices_of
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|slice| self.slices.get(slice))
                    .collect();
                plan::plan_service(key, service, &slices, &self.node)
            }
            None => ServicePlan::default(),
        };
        let existed = self.programmed.contains_key(key);
        let old = self.programmed.remove(key).unwrap_or_default();
        let count = |ports: &[PlannedPort]| {
            (
                ports.len(),
                ports.iter().map(|port| port.targets.len()).sum::<usize>(),
            )
        };
        let (old_ports, old_endpoints) = count(&old.ports);
        let (new_ports, new_endpoints) = count(&plan.ports);
        self.totals = (
            self.totals.0 - old_ports + new_ports,
            self.totals.1 - old_endpoints + new_endpoints,
        );
        for chain in &old.shared {
            if let Some(users) = self.shared_users.get_mut(chain) {
                *users -= 1;
            }
        }
        for chain in &plan.shared {
            *self.shared_users.entry(*chain).or_default() += 1;
        }
        let new_chains: Vec<String> = plan.chains.iter().map(|chain| chain.name.clone()).collect();
        let new_sets: Vec<String> = plan.sets.iter().map(|set| set.name.clone()).collect();
        for chain in old.chains.iter().filter(|chain| !new_chains.contains(chain)) {
            self.syncer.remove_chain(chain);
        }
        for set in old.sets.iter().filter(|set| !new_sets.contains(set)) {
            self.syncer.remove_set(set);
        }
        for set in plan.sets {
            self.syncer.put_set(set);
        }
        for chain in plan.chains {
            self.syncer.put_chain(chain);
        }
        let conflicts: Vec<String> = if plan.elements.is_empty() {
            self.syncer.remove_group(key);
            Vec::new()
        } else {
            self.syncer
                .put_group(key.clone(), plan.elements)
                .into_iter()
                .map(|element| {
                    format!("service {key} wants {element}, which another service holds (the first keeps it)")
                })
                .collect()
        };
        // Only UDP flows are ever forgotten: only UDP ports are kept for that.
        let udp = |ports: &[PlannedPort]| -> Vec<PlannedPort> {
            ports
                .iter()
                .filter(|port| port.protocol == UDP)
                .cloned()
                .collect()
        };
        let before = existed.then(|| udp(&old.ports));
        let after = udp(&plan.ports);
        if plan.announce.is_empty() && plan.health_check.is_none() {
            self.balanced.remove(key);
        } else {
            self.balanced.insert(key.clone());
        }
        if self.services.get(key).is_some() {
            self.programmed.insert(
                key.clone(),
                Programmed {
                    shared: plan.shared.into_iter().collect(),
                    chains: new_chains,
                    sets: new_sets,
                    ports: plan.ports,
                    health_check: plan.health_check,
                    announce: plan.announce,
                },
            );
        }
        if before.as_ref().is_some_and(|ports| !ports.is_empty()) || !after.is_empty() {
            self.pending_flows.push((before, after));
        }
        conflicts
    }

    /// Keeps the shared chains some service uses (and those made at start), drops the rest.
    fn shared_chains(&mut self) {
        let preset: BTreeSet<Shared> = Shared::preset().into_iter().collect();
        let mut unused = Vec::new();
        for (chain, users) in &self.shared_users {
            if *users > 0 || preset.contains(chain) {
                self.syncer.put_chain(chain.chain());
            } else {
                self.syncer.remove_chain(&chain.name());
                unused.push(*chain);
            }
        }
        for chain in unused {
            self.shared_users.remove(&chain);
        }
    }

    /// The cluster's pod subnets, for masquerading decisions.
    fn pod_cidrs(&mut self) {
        let cidrs: BTreeSet<Ipv4Net> = if !self.cluster_cidrs.is_empty() {
            self.cluster_cidrs.iter().copied().collect()
        } else {
            self.nodes
                .objects()
                .values()
                .filter_map(|node| node.pod_cidr)
                .collect()
        };
        self.pod_network_known = !cidrs.is_empty();
        let elements: Vec<(&str, Element)> = cidrs
            .into_iter()
            .map(|cidr| (table::POD_CIDRS, Element::key([Datum::Prefix(IpNet::V4(cidr))])))
            .collect();
        if elements.is_empty() {
            self.syncer.remove_group(&pod_cidrs_group());
        } else {
            self.syncer.put_group(pod_cidrs_group(), elements);
        }
    }

    /// Deletes the conntrack entries of UDP flows whose endpoint went away.
    fn forget_stale_flows(&mut self) -> Result<usize, String> {
        // Each UDP port once, before and after; the conntrack table is read only when some
        // endpoint went or a port got its first one.
        let mut ports: Vec<(Option<&PlannedPort>, Option<&PlannedPort>)> = Vec::new();
        for (before, after) in &self.pending_flows {
            let before = before.as_deref().unwrap_or_default();
            let same = |a: &PlannedPort, b: &PlannedPort| a.protocol == b.protocol && a.port == b.port;
            for port in before {
                ports.push((Some(port), after.iter().find(|other| same(other, port))));
            }
            for port in after
                .iter()
                .filter(|port| !before.iter().any(|other| same(other, port)))
            {
                ports.push((None, Some(port)));
            }
        }
        ports.retain(|(before, after)| conntrack::leaves_stale_flows(*before, *after));
        if ports.is_empty() {
            self.pending_flows.clear();
            return Ok(0);
        }
        if self.conntrack.is_none() {
            self.conntrack = Some(NfNetlink::connect().map_err(|err| err.to_string())?);
        }
        let netlink = self.conntrack.as_mut().expect("connected above");
        let flows = netlink.conntrack_flows(UDP).map_err(|err| err.to_string())?;
        let mut stale: Vec<_> = ports
            .iter()
            .flat_map(|(before, after)| conntrack::stale(*before, *after, &flows))
            .collect();
        stale.sort();
        stale.dedup();
        for flow in &stale {
            netlink.delete_conntrack(flow).map_err(|err| err.to_string())?;
        }
        self.pending_flows.clear();
        Ok(stale.len())
    }

    /// Holds the load-balancer addresses this node wins, and only those.
    fn announce(&mut self) -> Result<Vec<String>, String> {
        // Ready nodes take addresses first: a node that stopped reporting hands them over. When
        // no eligible node is ready (a cluster whose kubelets are all silent), an address is
        // still better held by a node than by none.
        let nodes = self.nodes.objects();
        let all: Vec<&str> = nodes.keys().map(|key| key.name.as_str()).collect();
        let ready: Vec<&str> = nodes
            .iter()
            .filter(|(_, node)| node.ready)
            .map(|(key, _)| key.name.as_str())
            .collect();
        let wanted: BTreeSet<IpNet> = self
            .balanced
            .iter()
            .filter_map(|key| self.programmed.get(key))
            .flat_map(|programmed| &programmed.announce)
            .filter(|(ip, eligible)| {
                let eligible = eligible.as_ref();
                announce::winner(*ip, ready.iter().copied(), eligible)
                    .or_else(|| announce::winner(*ip, all.iter().copied(), eligible))
                    == Some(self.node.as_str())
            })
            .map(|(ip, _)| IpNet::V4(Ipv4Net::from(*ip)))
            .collect();
        if self.announced.as_ref() == Some(&wanted) {
            return Ok(Vec::new());
        }
        if self.routes.is_none() {
            self.routes = Some(Netlink::connect().map_err(|err| err.to_string())?);
        }
        let netlink = self.routes.as_mut().expect("connected above");
        let lo = netlink.require_link("lo").map_err(|err| err.to_string())?.index;
        let current: BTreeSet<IpNet> = netlink
            .tagged_addresses(lo, ROUTE_PROTOCOL)
            .map_err(|err| err.to_string())?
            .into_iter()
            .collect();
        let mut changes = Vec::new();
        for address in current.difference(&wanted) {
            netlink
                .delete_address(lo, *address)
                .map_err(|err| err.to_string())?;
            changes.push(format!("no longer announcing {}", address.addr()));
        }
        for address in wanted.difference(&current) {
            netlink
                .add_tagged_address(lo, *address, ROUTE_PROTOCOL)
                .map_err(|err| err.to_string())?;
            changes.push(format!("announcing {} on the segment", address.addr()));
        }
        self.announced = Some(wanted);
        Ok(changes)
    }
}

impl Controller for Proxy {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Node, Kind::Service, Kind::EndpointSlice]
    }

    fn observe(&mut self, event: &Event) {
        match event {
            Event::Relisting(Kind::Service)
            | Event::Listed(Kind::Service)
            | Event::Applied(Object::Service(_))
            | Event::Deleted(Kind::Service, _) => {
                let changes = self.services.apply(event, |object| match object {
                    Object::Service(service) => model::proxied(service).then(|| model::service_info(service)),
                    _ => None,
                });
                self.dirty
                    .extend(changes.applied.into_iter().chain(changes.deleted));
            }
            Event::Relisting(Kind::EndpointSlice)
            | Event::Listed(Kind::EndpointSlice)
            | Event::Applied(Object::EndpointSlice(_))
            | Event::Deleted(Kind::EndpointSlice, _) => {
                // The slice's service before and after the change both need planning again.
                let previous: HashMap<ObjectKey, ObjectKey> = match event {
                    Event::Applied(object) => self
                        .slices
                        .get(&object.key())
                        .map(|slice| (object.key(), slice.service.clone()))
                        .into_iter()
                        .collect(),
                    Event::Deleted(_, key) => self
                        .slices
                        .get(key)
                        .map(|slice| (key.clone(), slice.service.clone()))
                        .into_iter()
                        .collect(),
                    _ => self
                        .slices
                        .objects()
                        .iter()
                        .map(|(key, slice)| (key.clone(), slice.service.clone()))
                        .collect(),
                };
                let changes = self.slices.apply(event, |object| match object {
                    Object::EndpointSlice(slice) => model::slice_info(&object.key(), slice),
                    _ => None,
                });
                for key in changes.deleted.iter().chain(&changes.applied) {
                    if let Some(service) = previous.get(key) {
                        if let Some(slices) = self.slices_of.get_mut(service) {
                            slices.retain(|slice| slice != key);
                            if slices.is_empty() {
                                self.slices_of.remove(service);
                            }
                        }
                        self.dirty.insert(service.clone());
                    }
                }
                for key in &changes.applied {
                    if let Some(slice) = self.slices.get(key) {
                        self.slices_of
                            .entry(slice.service.clone())
                            .or_default()
                            .push(key.clone());
                        self.dirty.insert(slice.service.clone());
                    }
                }
            }
            Event::Relisting(Kind::Node)
            | Event::Listed(Kind::Node)
            | Event::Applied(Object::Node(_))
            | Event::Deleted(Kind::Node, _) => {
                let changes = self.nodes.apply(event, |object| match object {
                    Object::Node(node) => Some(NodeInfo {
                        ready: node
                            .status
                            .as_ref()
                            .and_then(|status| status.conditions.as_ref())
                            .and_then(|conditions| {
                                conditions.iter().find(|condition| condition.type_ == "Ready")
                            })
                            .is_none_or(|condition| condition.status == "True"),
                        pod_cidr: podnet_model::node_pod_cidrs(node).into_iter().find_map(
                            |cidr| match cidr {
                                IpNet::V4(v4) => Some(v4.trunc()),
                                IpNet::V6(_) => None,
                            },
                        ),
                    }),
                    _ => None,
                });
                self.nodes_changed |= !changes.is_empty();
            }
            _ => {}
        }
    }

    fn reconcile(&mut self) -> Result<Reconciled, String> {
        let started = Instant::now();
        if !self.started {
            for set in table::sets() {
                self.syncer.put_set(set);
            }
            for chain in table::fixed_chains() {
                self.syncer.put_chain(chain);
            }
            for chain in Shared::preset() {
                self.shared_users.entry(chain).or_default();
            }
            self.nodes_changed = true;
            self.started = true;
        }
        let periodic = self.dirty.is_empty() && !self.nodes_changed;
        if self.nodes_changed {
            self.pod_cidrs();
        }
        // Taken, not drained: a set keeps its capacity, and iterating it costs that capacity
        // (100,000 services listed once would make every later sync walk as many buckets).
        let dirty: Vec<ObjectKey> = std::mem::take(&mut self.dirty).into_iter().collect();
        let conflicts: Vec<String> = dirty.iter().flat_map(|key| self.replan(key)).collect();
        self.shared_chains();
        if periodic {
            // Nothing changed: only check that nobody removed the table.
            self.syncer.verify().map_err(|err| err.to_string())?;
        }
        let planned = started.elapsed();
        let committed = self.syncer.commit().map_err(|err| {
            let message = format!("table {}: {err}", PROXY_TABLE.reference());
            self.metrics.proxy_failed(&message);
            message
        })?;
        self.nodes_changed = false;
        let mut lines = Vec::new();
        if !committed.is_empty() {
            lines.push(format!(
                "{} services planned: {} elements added, {} deleted, {} chains and sets changed{} in {:.1} ms (planning {:.1} ms)",
                dirty.len(),
                committed.added,
                committed.deleted,
                committed.structural,
                if committed.rebuilt { " (table rebuilt)" } else { "" },
                started.elapsed().as_secs_f64() * 1000.0,
                planned.as_secs_f64() * 1000.0
            ));
        }
        let report = SyncReport {
            duration: started.elapsed(),
            services: self.totals.0,
            endpoints: self.totals.1,
            elements: self.syncer.element_count(),
        };
        self.metrics.proxy_synced(report);
        let mut warnings = conflicts;
        if !self.pod_network_known {
            warnings.push(
                "no pod network known (no node has a podCIDR and --cluster-cidr is not given): every client counts as a node and is masqueraded".into(),
            );
        }
        match self.forget_stale_flows() {
            Ok(0) => {}
            Ok(count) => lines.push(format!("{count} UDP flows to removed endpoints forgotten")),
            Err(err) => warnings.push(format!("conntrack: {err}")),
        }
        match self.announce() {
            Ok(changes) => lines.extend(changes),
            Err(err) => warnings.push(format!("load-balancer announcements: {err}")),
        }
        let health: BTreeMap<u16, (ObjectKey, usize)> = self
            .balanced
            .iter()
            .filter_map(|key| {
                let (port, count) = self.programmed.get(key)?.health_check?;
                Some((port, (key.clone(), count)))
            })
            .collect();
        warnings.extend(self.health_checks.update(health));
        Ok(Reconciled {
            changes: lines,
            warnings,
        })
    }
}

/// The health-check node ports of `externalTrafficPolicy: Local` load balancers: 200 with the
/// number of local endpoints where the service has some, 503 where it has none, so a load
/// balancer sends traffic only to nodes that keep it.
#[derive(Default)]
struct HealthChecks {
    servers: BTreeMap<u16, Server>,
    state: Arc<Mutex<BTreeMap<u16, (ObjectKey, usize)>>>,
}

impl HealthChecks {
    /// Serves exactly `wanted`; returns the ports that could not be opened.
    fn update(&mut self, wanted: BTreeMap<u16, (ObjectKey, usize)>) -> Vec<String> {
        *self.state.lock().expect("health lock") = wanted.clone();
        self.servers.retain(|port, _| wanted.contains_key(port));
        let mut warnings = Vec::new();
        for port in wanted.keys() {
            if self.servers.contains_key(port) {
                continue;
            }
            let state = self.state.clone();
            let port_number = *port;
            let handler = Arc::new(move |_: &str| {
                let state = state.lock().expect("health lock");
                match state.get(&port_number) {
                    Some((service, count)) => Answer {
                        status: if *count > 0 { 200 } else { 503 },
                        content_type: "application/json",
                        body: json!({
                            "service": {"namespace": service.namespace, "name": service.name},
                            "localEndpoints": count,
                            "serviceProxyHealthy": true,
                        })
                        .to_string(),
                    },
                    None => podnet_http::not_found(),
                }
            });
            match Server::start(([0, 0, 0, 0], *port).into(), handler) {
                Ok(server) => {
                    self.servers.insert(*port, server);
                }
                Err(err) => warnings.push(format!("health-check node port {port}: {err}")),
            }
        }
        warnings
    }
}
