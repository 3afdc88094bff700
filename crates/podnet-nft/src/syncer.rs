//! Keeping one of podnet's tables equal to a desired state, by deltas.
//!
//! The [`Syncer`] remembers what it last applied: the table's sets and chains, and every element
//! with the *groups* that want it (a group is whatever the caller plans as a unit, say one
//! service port). A caller changes the desired state group by group and commits; the commit
//! sends only the difference, as one atomic transaction: element changes alone go over netlink
//! (fast, see [`crate::elements`]), anything touching chains or sets as an nft script. Nothing
//! is read back from the kernel on this path. The first commit, and any commit after a failure
//! or after the table vanished, replaces the whole table in one transaction instead: the rules
//! change atomically and connections already established (whose NAT lives in conntrack) never
//! notice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use podnet_netlink::NfNetlink;
use podnet_netlink::nfnetlink::{Attributes, Message, Subsystem};

use crate::Error;
use crate::elements::{self, Operation};
use crate::model::{Chain, Data, Datum, Element, Set, Table};
use crate::script::Script;

/// Where transactions go: the kernel, or a recorder in tests.
pub trait Backend {
    /// Applies an nft script as one transaction.
    fn apply_script(&mut self, script: &Script) -> Result<(), Error>;
    /// Applies element changes to `table` as one transaction.
    fn apply_elements(&mut self, table: &Table, changes: &[ElementChange<'_>]) -> Result<(), Error>;
    /// Whether `table` exists.
    fn table_exists(&mut self, table: &Table) -> Result<bool, Error>;
}

/// One element added to or deleted from a set.
#[derive(Debug, Clone, Copy)]
pub struct ElementChange<'a> {
    /// The set or map.
    pub set: &'a str,
    /// Add or delete.
    pub operation: Operation,
    /// The element.
    pub element: &'a Element,
}

/// The kernel of the calling thread's network namespace: scripts through `nft -f`, elements
/// over a netlink socket kept open for the syncer's life.
#[derive(Default)]
pub struct Kernel {
    netlink: Option<NfNetlink>,
}

impl Kernel {
    /// The kernel backend; the netlink socket is opened on first use, in the namespace of the
    /// thread using it then.
    pub fn new() -> Self {
        Self::default()
    }

    fn netlink(&mut self) -> Result<&mut NfNetlink, Error> {
        if self.netlink.is_none() {
            self.netlink = Some(NfNetlink::connect().map_err(Error::Netlink)?);
        }
        Ok(self.netlink.as_mut().expect("connected above"))
    }
}

impl Backend for Kernel {
    fn apply_script(&mut self, script: &Script) -> Result<(), Error> {
        script.apply()
    }

    fn apply_elements(&mut self, table: &Table, changes: &[ElementChange<'_>]) -> Result<(), Error> {
        let mut messages = Vec::new();
        // Deletions first: an element whose data changes is deleted, then added again.
        for operation in [Operation::Delete, Operation::Add] {
            let mut by_set: BTreeMap<&str, Vec<&Element>> = BTreeMap::new();
            for change in changes.iter().filter(|change| change.operation == operation) {
                by_set.entry(change.set).or_default().push(change.element);
            }
            for (set, list) in by_set {
                messages.extend(elements::messages(table, set, operation, &list));
            }
        }
        let count = changes.len();
        self.netlink()?
            .transaction(Subsystem::Nftables, &messages, || {
                format!("change {count} elements of table {}", table.reference())
            })
            .map_err(Error::Netlink)
    }

    fn table_exists(&mut self, table: &Table) -> Result<bool, Error> {
        const NFT_MSG_GETTABLE: u8 = 1;
        const NFTA_TABLE_NAME: u16 = 1;
        let mut attributes = Attributes::new();
        attributes.string(NFTA_TABLE_NAME, table.name);
        let request = Message {
            subsystem: Subsystem::Nftables,
            kind: NFT_MSG_GETTABLE,
            flags: 0,
            family: table.family.nfproto(),
            attributes,
        };
        match self
            .netlink()?
            .request(&request, || format!("look up table {}", table.reference()))
        {
            Ok(()) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(Error::Netlink(err)),
        }
    }
}

/// A backend that records transactions instead of applying them, for unit tests.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Every transaction, as text: scripts verbatim, element changes one `add`/`delete` line
    /// each.
    pub transactions: Vec<String>,
    /// Whether the table exists, as [`Backend::table_exists`] reports it.
    pub table_present: bool,
    /// Fail the next transaction (as the kernel does when somebody changed the table).
    pub fail_next: bool,
}

impl Recorder {
    fn outcome(&mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.fail_next) {
            return Err(Error::Rejected {
                stderr: "recorded failure".into(),
            });
        }
        self.table_present = true;
        Ok(())
    }
}

impl Backend for Recorder {
    fn apply_script(&mut self, script: &Script) -> Result<(), Error> {
        self.transactions.push(script.text().to_owned());
        self.outcome()
    }

    fn apply_elements(&mut self, _table: &Table, changes: &[ElementChange<'_>]) -> Result<(), Error> {
        let mut lines: Vec<String> = changes
            .iter()
            .map(|change| match change.operation {
                Operation::Add => format!("add {} {}", change.set, change.element.text()),
                Operation::Delete => format!("delete {} {}", change.set, change.element.key_text()),
            })
            .collect();
        lines.sort_by_key(|line| !line.starts_with("delete"));
        self.transactions.push(lines.join("\n") + "\n");
        self.outcome()
    }

    fn table_exists(&mut self, _table: &Table) -> Result<bool, Error> {
        Ok(self.table_present)
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// The whole table was replaced.
    pub rebuilt: bool,
    /// Elements added.
    pub added: usize,
    /// Elements deleted.
    pub deleted: usize,
    /// Chains and sets created, changed or deleted.
    pub structural: usize,
}

impl Committed {
    /// Whether the commit changed anything.
    pub fn is_empty(&self) -> bool {
        !self.rebuilt && self.added == 0 && self.deleted == 0 && self.structural == 0
    }
}

/// An element's key, shared by its slot and the groups that want it.
type Key = Arc<[Datum]>;
/// An element's identity: its set (by index) and key.
type ElementId = (u16, Key);

/// What the kernel holds of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Live {
    /// Nothing.
    Absent,
    /// The element with the data wanted now.
    Wanted,
    /// The element with other data.
    Other(Option<Data>),
}

/// What the syncer knows of one element.
struct Slot {
    /// How many groups want it; none means it should go.
    owners: u32,
    /// The data the last group to ask for it wants.
    wanted: Option<Data>,
    /// What the kernel holds.
    live: Live,
}

/// Keeps one table equal to the desired state, sending deltas. `G` names element groups.
pub struct Syncer<G, B = Kernel> {
    table: Table,
    backend: B,
    sets: BTreeMap<String, Set>,
    applied_sets: BTreeMap<String, Set>,
    chains: BTreeMap<String, Chain>,
    applied_chains: BTreeMap<String, Chain>,
    set_names: Vec<String>,
    set_ids: HashMap<String, u16>,
    /// Elements by set, then key.
    elements: Vec<HashMap<Key, Slot>>,
    /// How many elements some group wants.
    wanted: usize,
    groups: HashMap<G, Box<[ElementId]>>,
    dirty: HashSet<ElementId>,
    /// Sets and chains put or removed since the last commit (only those are compared).
    touched_sets: BTreeSet<String>,
    touched_chains: BTreeSet<String>,
    built: bool,
}

impl<G: Hash + Eq, B: Backend> Syncer<G, B> {
    /// A syncer for `table` that has applied nothing yet: its first commit replaces the table.
    pub fn new(table: Table, backend: B) -> Self {
        Syncer {
            table,
            backend,
            sets: BTreeMap::new(),
            applied_sets: BTreeMap::new(),
            chains: BTreeMap::new(),
            applied_chains: BTreeMap::new(),
            set_names: Vec::new(),
            set_ids: HashMap::new(),
            elements: Vec::new(),
            wanted: 0,
            groups: HashMap::new(),
            dirty: HashSet::new(),
            touched_sets: BTreeSet::new(),
            touched_chains: BTreeSet::new(),
            built: false,
        }
    }

    /// The backend (the recorder, in tests).
    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Wants `set` to exist with this definition.
    pub fn put_set(&mut self, set: Set) {
        self.set_id(&set.name);
        if self.sets.get(&set.name) != Some(&set) {
            self.touched_sets.insert(set.name.clone());
            self.sets.insert(set.name.clone(), set);
        }
    }

    /// Wants set `name` gone, with its elements.
    pub fn remove_set(&mut self, name: &str) {
        if self.sets.remove(name).is_some() {
            self.touched_sets.insert(name.to_owned());
        }
    }

    /// Wants `chain` to exist with exactly its rules.
    pub fn put_chain(&mut self, chain: Chain) {
        if self.chains.get(&chain.name) != Some(&chain) {
            self.touched_chains.insert(chain.name.clone());
            self.chains.insert(chain.name.clone(), chain);
        }
    }

    /// Wants chain `name` gone.
    pub fn remove_chain(&mut self, name: &str) {
        if self.chains.remove(name).is_some() {
            self.touched_chains.insert(name.to_owned());
        }
    }

    /// Makes `elements` (set name and element each) what group `group` wants, replacing what it
    /// wanted before. An element another group holds with other data keeps that data (the
    /// first holder wins); such elements are returned, as nft writes them, to be reported.
    pub fn put_group<S: AsRef<str>>(
        &mut self,
        group: G,
        elements: impl IntoIterator<Item = (S, Element)>,
    ) -> Vec<String> {
        // What the group held before goes first, so that its own elements changing data are no
        // conflict (an element wanted by nobody stays until the commit settles it).
        if let Some(previous) = self.groups.remove(&group) {
            self.release(&previous);
        }
        let mut conflicts = Vec::new();
        let mut members = Vec::new();
        for (set, element) in elements {
            let set = self.set_id(set.as_ref());
            let slots = &mut self.elements[set as usize];
            let key = match slots.get_key_value(&element.key[..]) {
                Some((key, _)) => key.clone(),
                None => {
                    let key: Key = Arc::from(&element.key[..]);
                    slots.insert(
                        key.clone(),
                        Slot {
                            owners: 0,
                            wanted: None,
                            live: Live::Absent,
                        },
                    );
                    key
                }
            };
            let slot = slots.get_mut(&key).expect("inserted above");
            if slot.owners > 0 && slot.wanted != element.data {
                conflicts.push(element.text());
            } else if slot.wanted != element.data {
                let previous = std::mem::replace(&mut slot.wanted, element.data);
                if slot.live == Live::Wanted {
                    slot.live = Live::Other(previous);
                }
            }
            if slot.owners == 0 {
                self.wanted += 1;
            }
            slot.owners += 1;
            self.dirty.insert((set, key.clone()));
            members.push((set, key));
        }
        self.groups.insert(group, members.into());
        conflicts
    }

    /// Forgets group `group`: the elements only it wanted go at the next commit.
    pub fn remove_group(&mut self, group: &G) {
        if let Some(previous) = self.groups.remove(group) {
            self.release(&previous);
        }
    }

    fn release(&mut self, members: &[ElementId]) {
        for (set, key) in members {
            if let Some(slot) = self.elements[*set as usize].get_mut(key) {
                slot.owners -= 1;
                if slot.owners == 0 {
                    self.wanted -= 1;
                }
                self.dirty.insert((*set, key.clone()));
            }
        }
    }

    fn set_id(&mut self, name: &str) -> u16 {
        if let Some(id) = self.set_ids.get(name) {
            return *id;
        }
        let id = self.set_names.len() as u16;
        self.set_names.push(name.to_owned());
        self.set_ids.insert(name.to_owned(), id);
        self.elements.push(HashMap::new());
        id
    }

    /// How many elements are wanted now.
    pub fn element_count(&self) -> usize {
        self.wanted
    }

    /// Checks that the table is still there (somebody may have flushed the ruleset); when it is
    /// not, the next commit rebuilds it. One netlink round trip.
    pub fn verify(&mut self) -> Result<(), Error> {
        if self.built && !self.backend.table_exists(&self.table)? {
            self.built = false;
        }
        Ok(())
    }

    /// Sends what changed since the last commit as one transaction.
    pub fn commit(&mut self) -> Result<Committed, Error> {
        if self.built {
            match self.commit_delta() {
                Ok(committed) => return Ok(committed),
                Err(err) => {
                    // Our picture of the kernel may be wrong (somebody changed the table): start
                    // over from the desired state.
                    tracing::warn!(
                        "nftables table {}: delta refused ({err}); replacing the table",
                        self.table.reference()
                    );
                    self.built = false;
                }
            }
        }
        self.rebuild()
    }

    /// Replaces the whole table with the desired state.
    fn rebuild(&mut self) -> Result<Committed, Error> {
        let mut script = Script::new();
        script.replace_table(&self.table);
        for set in self.sets.values() {
            script.add_set(&self.table, set);
        }
        for chain in self.chains.values() {
            script.add_chain(&self.table, chain);
        }
        for chain in self.chains.values() {
            script.add_rules(&self.table, chain);
        }
        let mut added = 0;
        for (set, slots) in self.elements.iter().enumerate() {
            let name = &self.set_names[set];
            if !self.sets.contains_key(name) {
                continue;
            }
            // An element leading to a chain that is not wanted (two groups disputed it, and
            // the one that won is gone) would fail the whole table: it is left out, and said so.
            let chains = &self.chains;
            let list = slots
                .iter()
                .filter(|(_, slot)| slot.owners > 0)
                .filter(|(key, slot)| match &slot.wanted {
                    Some(Data::Verdict(verdict))
                        if verdict.chain().is_some_and(|chain| !chains.contains_key(chain)) =>
                    {
                        tracing::warn!(
                            "table {}: {name} element {:?} leads to chain {verdict}, which is gone; left out",
                            self.table.reference(),
                            &key[..]
                        );
                        false
                    }
                    _ => true,
                })
                .map(|(key, slot)| (&key[..], slot.wanted.as_ref()));
            script.element_parts(&self.table, name, Operation::Add, list);
            added += slots.values().filter(|slot| slot.owners > 0).count();
        }
        self.backend.apply_script(&script)?;
        for (set, slots) in self.elements.iter_mut().enumerate() {
            let present = self.sets.contains_key(&self.set_names[set]);
            slots.retain(|_, slot| slot.owners > 0);
            for slot in slots.values_mut() {
                slot.live = if present { Live::Wanted } else { Live::Absent };
            }
        }
        // A new set, not a cleared one: iterating a set costs its capacity, which the first
        // (large) commit grew.
        self.dirty = HashSet::new();
        self.applied_sets = self.sets.clone();
        self.applied_chains = self.chains.clone();
        self.touched_sets.clear();
        self.touched_chains.clear();
        self.built = true;
        Ok(Committed {
            rebuilt: true,
            added,
            deleted: 0,
            structural: self.sets.len() + self.chains.len(),
        })
    }

    fn commit_delta(&mut self) -> Result<Committed, Error> {
        // Only what was put or removed since the last commit can differ from what is applied.
        let sets = &self.sets;
        let applied_sets = &self.applied_sets;
        let chains = &self.chains;
        let applied_chains = &self.applied_chains;
        // A set or base chain whose definition changed cannot be altered in place.
        let redefined: Vec<&String> = self
            .touched_sets
            .iter()
            .filter(|name| matches!((sets.get(*name), applied_sets.get(*name)), (Some(set), Some(applied)) if set != applied))
            .chain(self.touched_chains.iter().filter(|name| {
                matches!((chains.get(*name), applied_chains.get(*name)), (Some(chain), Some(applied)) if chain.base != applied.base)
            }))
            .collect();
        if !redefined.is_empty() {
            return Err(Error::Rejected {
                stderr: format!("{redefined:?} changed definition, which needs a new table"),
            });
        }
        let new_sets: Vec<&Set> = self
            .touched_sets
            .iter()
            .filter(|name| !applied_sets.contains_key(*name))
            .filter_map(|name| sets.get(name))
            .collect();
        let gone_sets: Vec<&String> = self
            .touched_sets
            .iter()
            .filter(|name| !sets.contains_key(*name) && applied_sets.contains_key(*name))
            .collect();
        let new_chains: Vec<&Chain> = self
            .touched_chains
            .iter()
            .filter(|name| !applied_chains.contains_key(*name))
            .filter_map(|name| chains.get(name))
            .collect();
        let changed_chains: Vec<&Chain> = self
            .touched_chains
            .iter()
            .filter_map(|name| match (chains.get(name), applied_chains.get(name)) {
                (Some(chain), Some(applied)) if chain.rules != applied.rules => Some(chain),
                _ => None,
            })
            .collect();
        let gone_chains: Vec<&String> = self
            .touched_chains
            .iter()
            .filter(|name| !chains.contains_key(*name) && applied_chains.contains_key(*name))
            .collect();
        let structural =
            new_sets.len() + gone_sets.len() + new_chains.len() + changed_chains.len() + gone_chains.len();

        // Element changes: what the kernel holds against what is wanted.
        let mut deletions: Vec<(u16, Element)> = Vec::new();
        let mut additions: Vec<(u16, Element)> = Vec::new();
        for (set, key) in &self.dirty {
            let Some(slot) = self.elements[*set as usize].get(key) else {
                continue;
            };
            let name = &self.set_names[*set as usize];
            let set_wanted = self.sets.contains_key(name);
            // A set deleted in this commit takes its elements with it.
            let set_applied = self.applied_sets.contains_key(name) && set_wanted;
            let wanted = slot.owners > 0 && set_wanted;
            let element = |data: &Option<Data>| Element {
                key: key[..].into(),
                data: data.clone(),
            };
            match (&slot.live, wanted) {
                (Live::Wanted, true) | (Live::Absent, false) => {}
                (Live::Other(live), true) if *live == slot.wanted => {}
                (Live::Absent, true) => additions.push((*set, element(&slot.wanted))),
                (Live::Other(_), true) => {
                    deletions.push((*set, element(&None)));
                    additions.push((*set, element(&slot.wanted)));
                }
                (Live::Wanted | Live::Other(_), false) => {
                    if set_applied {
                        deletions.push((*set, element(&None)));
                    }
                }
            }
        }
        if structural == 0 && deletions.is_empty() && additions.is_empty() {
            self.settle_structure();
            self.settle_elements();
            return Ok(Committed::default());
        }
        let encodable = deletions
            .iter()
            .chain(&additions)
            .all(|(_, element)| element.netlink_encodable());
        if structural == 0 && encodable {
            let changes: Vec<ElementChange<'_>> = deletions
                .iter()
                .map(|(set, element)| (set, Operation::Delete, element))
                .chain(
                    additions
                        .iter()
                        .map(|(set, element)| (set, Operation::Add, element)),
                )
                .map(|(set, operation, element)| ElementChange {
                    set: &self.set_names[*set as usize],
                    operation,
                    element,
                })
                .collect();
            self.backend.apply_elements(&self.table, &changes)?;
        } else {
            let table = &self.table;
            let mut script = Script::new();
            for set in &new_sets {
                script.add_set(table, set);
            }
            for chain in &new_chains {
                script.add_chain(table, chain);
            }
            for chain in &changed_chains {
                script.flush_chain(table, &chain.name);
            }
            for name in &gone_chains {
                script.flush_chain(table, name);
            }
            for (set, list) in group_by_set(&deletions) {
                script.elements(table, &self.set_names[set as usize], Operation::Delete, list);
            }
            for chain in new_chains.iter().chain(&changed_chains) {
                script.add_rules(table, chain);
            }
            for (set, list) in group_by_set(&additions) {
                script.elements(table, &self.set_names[set as usize], Operation::Add, list);
            }
            for name in &gone_sets {
                script.delete_set(table, name);
            }
            for name in &gone_chains {
                script.delete_chain(table, name);
            }
            self.backend.apply_script(&script)?;
        }
        let committed = Committed {
            rebuilt: false,
            added: additions.len(),
            deleted: deletions.len(),
            structural,
        };
        self.settle_structure();
        self.settle_elements();
        Ok(committed)
    }

    /// After a successful commit: the kernel holds the sets and chains wanted.
    fn settle_structure(&mut self) {
        for name in std::mem::take(&mut self.touched_sets) {
            match self.sets.get(&name) {
                Some(set) => self.applied_sets.insert(name, set.clone()),
                None => self.applied_sets.remove(&name),
            };
        }
        for name in std::mem::take(&mut self.touched_chains) {
            match self.chains.get(&name) {
                Some(chain) => self.applied_chains.insert(name, chain.clone()),
                None => self.applied_chains.remove(&name),
            };
        }
    }

    /// After a successful commit: the kernel holds what was wanted.
    fn settle_elements(&mut self) {
        for (set, key) in std::mem::take(&mut self.dirty) {
            let present = self.sets.contains_key(&self.set_names[set as usize]);
            let slots = &mut self.elements[set as usize];
            match slots.get_mut(&key) {
                Some(slot) if slot.owners > 0 => {
                    slot.live = if present { Live::Wanted } else { Live::Absent };
                }
                Some(_) => {
                    slots.remove(&key);
                }
                None => {}
            }
        }
    }
}

fn group_by_set(elements: &[(u16, Element)]) -> BTreeMap<u16, Vec<&Element>> {
    let mut by_set: BTreeMap<u16, Vec<&Element>> = BTreeMap::new();
    for (set, element) in elements {
        by_set.entry(*set).or_default().push(element);
    }
    by_set
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{ChainType, Datum, Family, Hook, Verdict};

    const TABLE: Table = Table {
        family: Family::Ip,
        name: "t",
        comment: "test",
    };

    fn syncer() -> Syncer<&'static str, Recorder> {
        let mut syncer = Syncer::new(TABLE, Recorder::default());
        syncer.put_set(Set::map("services", "type ipv4_addr . inet_service", "verdict"));
        syncer.put_chain(Chain::base(
            "prerouting",
            ChainType::Nat,
            Hook::Prerouting,
            -100,
            vec!["ip daddr . th dport vmap @services".into()],
        ));
        syncer.put_chain(Chain::regular("pick-1", vec!["dnat to 10.244.0.2".into()]));
        syncer
    }

    fn service(address: [u8; 4], port: u16, chain: &str) -> (&'static str, Element) {
        (
            "services",
            Element::verdict(
                [Datum::Ipv4(Ipv4Addr::from(address)), Datum::Port(port)],
                Verdict::Goto(chain.into()),
            ),
        )
    }

    fn last(syncer: &mut Syncer<&'static str, Recorder>) -> String {
        syncer.backend().transactions.last().cloned().unwrap_or_default()
    }

    #[test]
    fn the_first_commit_replaces_the_table_then_only_deltas_travel() {
        let mut syncer = syncer();
        syncer.put_group("a", vec![service([10, 96, 0, 1], 80, "pick-1")]);
        let first = syncer.commit().unwrap();
        assert!(first.rebuilt);
        let script = last(&mut syncer);
        assert!(
            script.starts_with("add table ip t\ndelete table ip t\n"),
            "{script}"
        );
        assert!(script.contains("add element ip t services { 10.96.0.1 . 80 : goto pick-1 }"));

        // One more element: one netlink add, nothing else.
        syncer.put_group("b", vec![service([10, 96, 0, 2], 53, "pick-1")]);
        let second = syncer.commit().unwrap();
        assert_eq!((second.added, second.deleted, second.structural), (1, 0, 0));
        assert_eq!(last(&mut syncer), "add services 10.96.0.2 . 53 : goto pick-1\n");

        // A changed verdict is a delete and an add in one transaction.
        syncer.put_chain(Chain::regular("pick-2", vec!["dnat to 10.244.0.3".into()]));
        syncer.put_group("b", vec![service([10, 96, 0, 2], 53, "pick-2")]);
        let third = syncer.commit().unwrap();
        assert_eq!((third.added, third.deleted, third.structural), (1, 1, 1));
        let script = last(&mut syncer);
        let order: Vec<usize> = [
            "add chain ip t pick-2",
            "delete element ip t services { 10.96.0.2 . 53 }",
            "add rule ip t pick-2 dnat to 10.244.0.3",
            "add element ip t services { 10.96.0.2 . 53 : goto pick-2 }",
        ]
        .iter()
        .map(|line| {
            script
                .find(line)
                .unwrap_or_else(|| panic!("{line} missing:\n{script}"))
        })
        .collect();
        assert!(order.is_sorted(), "{script}");

        // Nothing changed: nothing sent.
        let count = syncer.backend().transactions.len();
        syncer.put_group("b", vec![service([10, 96, 0, 2], 53, "pick-2")]);
        assert!(syncer.commit().unwrap().is_empty());
        assert_eq!(syncer.backend().transactions.len(), count);
    }

    #[test]
    fn shared_elements_stay_until_their_last_group_goes() {
        let mut syncer = syncer();
        syncer.put_group("a", vec![service([10, 96, 0, 1], 80, "pick-1")]);
        syncer.put_group("b", vec![service([10, 96, 0, 1], 80, "pick-1")]);
        syncer.commit().unwrap();
        syncer.remove_group(&"a");
        assert!(syncer.commit().unwrap().is_empty());
        syncer.remove_group(&"b");
        let committed = syncer.commit().unwrap();
        assert_eq!(committed.deleted, 1);
        assert_eq!(last(&mut syncer), "delete services 10.96.0.1 . 80\n");
        assert_eq!(syncer.element_count(), 0);
    }

    #[test]
    fn a_refused_delta_or_a_vanished_table_rebuilds_everything() {
        let mut syncer = syncer();
        syncer.put_group("a", vec![service([10, 96, 0, 1], 80, "pick-1")]);
        syncer.commit().unwrap();
        syncer.put_group("b", vec![service([10, 96, 0, 2], 80, "pick-1")]);
        syncer.backend().fail_next = true;
        let committed = syncer.commit().unwrap();
        assert!(committed.rebuilt);
        let script = last(&mut syncer);
        assert!(script.contains("10.96.0.1 . 80 : goto pick-1") && script.contains("10.96.0.2 . 80"));

        syncer.backend().table_present = false;
        syncer.verify().unwrap();
        assert!(syncer.commit().unwrap().rebuilt);
    }

    #[test]
    fn removed_chains_are_emptied_before_they_are_deleted() {
        let mut syncer = syncer();
        syncer.commit().unwrap();
        syncer.remove_chain("pick-1");
        syncer.commit().unwrap();
        let script = last(&mut syncer);
        assert!(
            script.find("flush chain ip t pick-1").unwrap()
                < script.find("delete chain ip t pick-1").unwrap(),
            "{script}"
        );
    }

    #[test]
    fn a_group_changes_its_own_elements_and_the_first_holder_of_a_disputed_one_wins() {
        let mut syncer = syncer();
        syncer.put_chain(Chain::regular("pick-2", vec!["dnat to 10.244.0.3".into()]));
        assert!(
            syncer
                .put_group("a", vec![service([10, 96, 0, 1], 80, "pick-1")])
                .is_empty()
        );
        syncer.commit().unwrap();
        // Its own element, new data: no dispute.
        assert!(
            syncer
                .put_group("a", vec![service([10, 96, 0, 1], 80, "pick-2")])
                .is_empty()
        );
        syncer.commit().unwrap();
        assert_eq!(
            last(&mut syncer),
            "delete services 10.96.0.1 . 80\nadd services 10.96.0.1 . 80 : goto pick-2\n"
        );
        // Another group wants the same key with other data: refused, reported, nothing sent.
        let disputed = syncer.put_group("b", vec![service([10, 96, 0, 1], 80, "pick-1")]);
        assert_eq!(disputed, ["10.96.0.1 . 80 : goto pick-1"]);
        assert!(syncer.commit().unwrap().is_empty());
    }
}
