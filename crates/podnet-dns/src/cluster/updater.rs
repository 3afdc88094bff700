//! Keeping the cluster zone current: watch events in, changed names out.
//!
//! The updater keeps compact copies of Services, EndpointSlices and Namespaces ([`Mirror`]s),
//! notes which services each event touches, and on [`ZoneUpdater::publish`] rebuilds only
//! those services' records and swaps the names and addresses that changed into the zone, in
//! one batch. The work a change costs is proportional to the service it changes, not to the
//! cluster.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Name;
use podnet_model::{Event, Kind, Mirror, Object, ObjectKey};

use super::model::{ServiceInfo, SliceInfo, service_info, slice_info};
use super::records::ServiceRecords;
use super::zone::{ClusterZone, Owner};
use crate::names::is_label;

/// The kinds the cluster zone is made of (the DNS server's RBAC must allow `get`, `list` and
/// `watch` on each).
pub const KINDS: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Namespace];

/// What one service put in the zone, to take back when it changes.
struct Published {
    /// Its names, as keys of the zone's name map.
    names: Box<[Arc<str>]>,
    /// The addresses it claims reverse names of.
    addresses: Box<[IpAddr]>,
}

/// A service's claim on an address's reverse name.
struct ReverseClaim {
    /// The service's own name in the zone (`web.default.svc`).
    service: Arc<str>,
    /// What the PTR points at.
    target: Name,
    /// Whether the address is the service's virtual address (else one of its endpoints').
    cluster_ip: bool,
}

/// Maintains a [`ClusterZone`] from watch events.
pub struct ZoneUpdater {
    zone: Arc<ClusterZone>,
    services: Mirror<ServiceInfo>,
    slices: Mirror<SliceInfo>,
    namespaces: Mirror<()>,
    /// The EndpointSlices of each service.
    slices_of: HashMap<ObjectKey, HashSet<ObjectKey>>,
    /// The service of each EndpointSlice.
    service_of: HashMap<ObjectKey, ObjectKey>,
    /// Services whose records are to be built again.
    dirty: HashSet<ObjectKey>,
    /// Namespace names to add or remove at the next publish.
    namespace_names: Vec<(Arc<str>, Option<Owner>)>,
    published: HashMap<ObjectKey, Published>,
    /// Who claims each address's reverse name.
    reverse: HashMap<IpAddr, Vec<ReverseClaim>>,
    synced: bool,
}

impl ZoneUpdater {
    /// An updater of `zone`, which it assumes empty.
    pub fn new(zone: Arc<ClusterZone>) -> Self {
        ZoneUpdater {
            zone,
            services: Mirror::new(Kind::Service),
            slices: Mirror::new(Kind::EndpointSlice),
            namespaces: Mirror::new(Kind::Namespace),
            slices_of: HashMap::new(),
            service_of: HashMap::new(),
            dirty: HashSet::new(),
            namespace_names: Vec::new(),
            published: HashMap::new(),
            reverse: HashMap::new(),
            synced: false,
        }
    }

    /// Whether every kind has been listed at least once: the zone is complete.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Takes `event` into account; queries see it after the next [`publish`](Self::publish).
    pub fn apply(&mut self, event: &Event) {
        if *event == Event::Synced {
            self.synced = true;
            return;
        }
        let changes = self.services.apply(event, |object| match object {
            Object::Service(service) => service_info(service),
            _ => None,
        });
        self.dirty
            .extend(changes.applied.into_iter().chain(changes.deleted));

        let changes = self.slices.apply(event, |object| match object {
            Object::EndpointSlice(slice) => slice_info(slice),
            _ => None,
        });
        for slice in changes.applied {
            let Some(info) = self.slices.get(&slice) else {
                continue;
            };
            let service = ObjectKey {
                namespace: slice.namespace.clone(),
                name: info.service.to_string(),
            };
            // A slice that moved to another service leaves the first one.
            if let Some(previous) = self.service_of.insert(slice.clone(), service.clone())
                && previous != service
            {
                self.detach(&slice, &previous);
            }
            self.slices_of.entry(service.clone()).or_default().insert(slice);
            self.dirty.insert(service);
        }
        for slice in changes.deleted {
            if let Some(service) = self.service_of.remove(&slice) {
                self.detach(&slice, &service);
            }
        }

        let changes = self.namespaces.apply(event, |object| {
            matches!(object, Object::Namespace(_)).then_some(())
        });
        let namespaces = changes
            .applied
            .iter()
            .map(|key| (key, Some(Owner::Namespace)))
            .chain(changes.deleted.iter().map(|key| (key, None)));
        for (key, owner) in namespaces {
            if is_label(&key.name) {
                for subtree in ["svc", "pod"] {
                    let name: Arc<str> = format!("{}.{subtree}", key.name).into();
                    self.namespace_names.push((name, owner.clone()));
                }
            }
        }
    }

    fn detach(&mut self, slice: &ObjectKey, service: &ObjectKey) {
        if let Some(slices) = self.slices_of.get_mut(service) {
            slices.remove(slice);
            if slices.is_empty() {
                self.slices_of.remove(service);
            }
        }
        self.dirty.insert(service.clone());
    }

    /// Makes every change applied so far visible to queries, in one batch.
    pub fn publish(&mut self) {
        if self.dirty.is_empty() && self.namespace_names.is_empty() {
            return;
        }
        let mut names = std::mem::take(&mut self.namespace_names);
        let mut touched: HashSet<IpAddr> = HashSet::new();
        for key in std::mem::take(&mut self.dirty) {
            self.republish(&key, &mut names, &mut touched);
        }
        let addresses = touched
            .into_iter()
            .map(|address| (address, self.ptr_targets(address)))
            .collect();
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as u32);
        self.zone.apply(names, addresses, serial);
    }

    /// Builds the records of service `key` again, and notes the names and the addresses that
    /// change.
    fn republish(
        &mut self,
        key: &ObjectKey,
        names: &mut Vec<(Arc<str>, Option<Owner>)>,
        touched: &mut HashSet<IpAddr>,
    ) {
        let base = format!("{}.{}.svc", key.name, key.namespace);
        let records = self.services.get(key).and_then(|info| {
            let slices = self.slices_of.get(key).into_iter().flatten();
            let slices = slices.filter_map(|slice| self.slices.get(slice));
            ServiceRecords::build(self.zone.domain(), &key.namespace, &key.name, info, slices)
        });
        let records = records.map(Arc::new);
        let new_names = records
            .as_ref()
            .map(|records| records.names(&base))
            .unwrap_or_default();
        let service: Arc<str> = base.into();

        if let Some(old) = self.published.remove(key) {
            let kept: HashSet<&str> = new_names.iter().map(|(name, _)| name.as_str()).collect();
            for name in old.names.iter().filter(|name| !kept.contains(&***name)) {
                names.push((name.clone(), None));
            }
            for address in old.addresses.iter() {
                if let Some(claims) = self.reverse.get_mut(address) {
                    claims.retain(|claim| claim.service != service);
                }
                touched.insert(*address);
            }
        }
        let Some(records) = records else { return };

        let mut published_names = Vec::with_capacity(new_names.len());
        for (name, role) in new_names {
            let name: Arc<str> = name.into();
            names.push((name.clone(), Some(Owner::Service(records.clone(), role))));
            published_names.push(name);
        }
        let mut addresses = Vec::new();
        for (address, target, cluster_ip) in records.reverse() {
            self.reverse.entry(address).or_default().push(ReverseClaim {
                service: service.clone(),
                target: target.clone(),
                cluster_ip,
            });
            touched.insert(address);
            addresses.push(address);
        }
        self.published.insert(
            key.clone(),
            Published {
                names: published_names.into(),
                addresses: addresses.into(),
            },
        );
    }

    /// What the reverse name of `address` points at now: the service whose virtual address it
    /// is, else every endpoint name it has (CoreDNS's order); `None` when nothing claims it.
    fn ptr_targets(&mut self, address: IpAddr) -> Option<Arc<[Name]>> {
        let claims = self.reverse.get(&address)?;
        let targets: Vec<Name> = match claims.iter().find(|claim| claim.cluster_ip) {
            Some(service) => vec![service.target.clone()],
            None => {
                let mut targets: Vec<Name> = Vec::with_capacity(claims.len());
                for claim in claims {
                    if !targets.contains(&claim.target) {
                        targets.push(claim.target.clone());
                    }
                }
                targets
            }
        };
        if targets.is_empty() {
            self.reverse.remove(&address);
            return None;
        }
        Some(targets.into())
    }
}
