//! Routing: the node's pod bridge, the routes to every other node's pod subnet (VXLAN or
//! host-gw), and the node's CNI configuration. A pure [`plan`] from the Node objects, a thin
//! [`apply`] into the kernel.

pub mod apply;
pub mod cniconf;
pub mod plan;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use podnet_model::{Backend, Event, Kind, Mirror, Object};

use crate::controller::{Controller, Reconciled};
use apply::Applier;
use cniconf::CniTarget;

/// The routing controller of one node.
pub struct Routing {
    node: String,
    backend: Backend,
    cni: Option<CniTarget>,
    nodes: Mirror<Node>,
    applier: Option<Applier>,
}

impl Routing {
    /// The routing controller of node `node`, wiring `backend` and writing the CNI
    /// configuration to `cni` when given.
    pub fn new(node: &str, backend: Backend, cni: Option<CniTarget>) -> Self {
        Routing {
            node: node.to_owned(),
            backend,
            cni,
            nodes: Mirror::new(Kind::Node),
            applier: None,
        }
    }
}

impl Controller for Routing {
    fn name(&self) -> &'static str {
        "routing"
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Node]
    }

    fn observe(&mut self, event: &Event) {
        self.nodes.apply(event, |object| match object {
            Object::Node(node) => Some((**node).clone()),
            _ => None,
        });
    }

    fn reconcile(&mut self) -> Result<Reconciled, String> {
        let nodes: BTreeMap<String, Node> = self
            .nodes
            .objects()
            .iter()
            .map(|(key, node)| (key.name.clone(), node.clone()))
            .collect();
        let (address, _) = plan::own_identity(&self.node, &nodes).map_err(|err| err.to_string())?;
        if self.applier.is_none() {
            self.applier = Some(Applier::new().map_err(|err| err.to_string())?);
        }
        let applier = self.applier.as_mut().expect("connected above");
        let facts = applier.facts(address).map_err(|err| err.to_string())?;
        let plan = plan::plan(&self.node, self.backend, &nodes, &facts).map_err(|err| err.to_string())?;
        let changes = applier
            .apply(&plan, self.cni.as_ref())
            .map_err(|err| err.to_string())?;
        let mut warnings = plan.skipped_peers;
        warnings.extend(changes.conflicts);
        Ok(Reconciled {
            changes: changes.lines,
            warnings,
        })
    }
}
