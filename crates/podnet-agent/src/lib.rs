//! The podnet node agent: one per node, the program a cluster runs as a DaemonSet.
//!
//! It reads Node objects through the source seam, plans the node's network from them (the
//! pod bridge, routes to every other node's pod subnet over VXLAN or host-gw, masquerading for
//! traffic leaving the cluster, the node's CNI configuration) and applies the plan. It acts on
//! every change of the cluster and re-checks the kernel every minute; between the two it sleeps.

pub mod apply;
pub mod cniconf;
pub mod egress;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use podnet_model::{ClusterSource, ClusterState};

pub use apply::{Applier, ApplyError, ROUTE_PROTOCOL};
pub use cniconf::CniTarget;
pub use plan::{Backend, NodePlan};

/// How often the agent re-applies its plan without any change, repairing drift.
const RESYNC: Duration = Duration::from_secs(60);

/// What the agent is told at start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node it runs on (the name of its Node object).
    pub node: String,
    /// How pod traffic crosses between nodes.
    pub backend: Backend,
    /// Where to write the node's CNI configuration, if the agent manages it.
    pub cni: Option<CniTarget>,
}

/// Runs the agent until the source closes.
pub async fn run(config: AgentConfig, source: &dyn ClusterSource) -> Result<(), String> {
    let mut states = source.subscribe();
    let mut applier = Some(Applier::new().map_err(|err| err.to_string())?);
    let mut last_error = None;
    let mut last_warnings = Vec::new();
    loop {
        let state: Arc<ClusterState> = states.borrow_and_update().clone();
        let config_now = config.clone();
        let mut owned = applier.take().expect("the applier is put back after each round");
        let (returned, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = reconcile(&config_now, &state, &mut owned);
            (owned, outcome)
        })
        .await
        .map_err(|err| err.to_string())?;
        applier = Some(returned);
        match outcome {
            Ok(Reconciled { changes, warnings }) => {
                for line in changes {
                    tracing::info!("{line}");
                }
                // Warnings are said once, until they change.
                if warnings != last_warnings {
                    for line in &warnings {
                        tracing::warn!("{line}");
                    }
                    last_warnings = warnings;
                }
                last_error = None;
            }
            Err(err) => {
                // Repeated failures are logged once until something changes.
                if last_error.as_ref() != Some(&err) {
                    tracing::warn!("{err}");
                }
                last_error = Some(err);
            }
        }
        tokio::select! {
            changed = states.changed() => if changed.is_err() {
                return Err("the cluster source closed".into());
            },
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// What one round found: the changes made, and what could not be done (peers the plan left
/// out, routes somebody else holds).
struct Reconciled {
    changes: Vec<String>,
    warnings: Vec<String>,
}

fn reconcile(
    config: &AgentConfig,
    state: &ClusterState,
    applier: &mut Applier,
) -> Result<Reconciled, String> {
    let (address, _) = plan::own_identity(&config.node, state).map_err(|err| err.to_string())?;
    let facts = applier.facts(address).map_err(|err| err.to_string())?;
    let plan = plan::plan(&config.node, config.backend, state, &facts).map_err(|err| err.to_string())?;
    let changes = applier
        .apply(&plan, config.cni.as_ref())
        .map_err(|err| err.to_string())?;
    let mut warnings = plan.skipped_peers;
    warnings.extend(changes.conflicts);
    Ok(Reconciled {
        changes: changes.lines,
        warnings,
    })
}
