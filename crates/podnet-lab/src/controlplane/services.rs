//! Services as the API server stores them: defaults filled in, a ClusterIP from the service
//! CIDR (the first address stays reserved, as a cluster keeps it for `kubernetes`), NodePorts
//! from the node-port range, a health-check port for `externalTrafficPolicy: Local` load
//! balancers, and a load-balancer address from the lab's pool (MetalLB's job), written to
//! `status.loadBalancer.ingress`. What a running service holds, it keeps; what the file fixes
//! is honoured, or refused with the service that holds it already.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServiceSpec, ServiceStatus,
    SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_model::ObjectKey;

use super::PlanError;
use super::workloads::new_uid;
use crate::cluster::Cluster;
use crate::spec::LabSpec;
use podnet_model::stable_hash::fnv1a;

/// kube-proxy's default ClientIP affinity timeout: three hours.
const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;

/// What is taken, and by whom.
#[derive(Default)]
struct Taken {
    cluster_ips: HashMap<Ipv4Addr, ObjectKey>,
    node_ports: HashMap<u16, ObjectKey>,
    load_balancer_ips: HashMap<Ipv4Addr, ObjectKey>,
}

/// Takes `value` for `key`, unless another service holds it: then that service.
fn claim<T: Hash + Eq>(
    taken: &mut HashMap<T, ObjectKey>,
    value: T,
    key: &ObjectKey,
) -> Result<(), ObjectKey> {
    match taken.get(&value) {
        Some(holder) if holder != key => Err(holder.clone()),
        _ => {
            taken.insert(value, key.clone());
            Ok(())
        }
    }
}

/// The services of the file, allocated. `services` are the file's, validated.
pub fn plan(
    spec: &LabSpec,
    services: &[Service],
    running: &Cluster,
) -> Result<BTreeMap<ObjectKey, Service>, PlanError> {
    let mut planned: BTreeMap<ObjectKey, Service> = services
        .iter()
        .map(|service| {
            let key = ObjectKey::of(&service.metadata);
            let mut service = service.clone();
            service.metadata.namespace = Some(key.namespace.clone());
            // Status is the cluster's to write, not the file's.
            service.status = None;
            fill_defaults(service.spec.get_or_insert_with(ServiceSpec::default));
            (key, service)
        })
        .collect();
    let mut taken = Taken::default();

    // 1. What running services hold and the file leaves open, they keep: nothing can take it
    //    from them.
    for (key, service) in planned.iter_mut() {
        let Some(previous) = running.services.get(key) else {
            continue;
        };
        service.metadata.uid = previous.metadata.uid.clone();
        let old = previous.spec.as_ref().expect("stored with a spec");
        let spec = service.spec.as_mut().expect("defaults filled");
        if wants_cluster_ip(spec)
            && spec.cluster_ip.as_deref().unwrap_or_default().is_empty()
            && let Some(ip) = fixed_cluster_ip(old)
        {
            taken.cluster_ips.insert(ip, key.clone());
            spec.cluster_ip = Some(ip.to_string());
        }
        if exposed(spec) {
            for port in spec.ports.iter_mut().flatten() {
                if port.node_port.is_some() {
                    continue;
                }
                let same = old
                    .ports
                    .iter()
                    .flatten()
                    .find(|old_port| old_port.port == port.port && old_port.protocol == port.protocol);
                if let Some(node_port) = same.and_then(|old_port| old_port.node_port) {
                    taken.node_ports.insert(node_port as u16, key.clone());
                    port.node_port = Some(node_port);
                }
            }
            if needs_health_check_port(spec)
                && spec.health_check_node_port.is_none()
                && let Some(port) = old.health_check_node_port
            {
                taken.node_ports.insert(port as u16, key.clone());
                spec.health_check_node_port = Some(port);
            }
        }
        if spec.type_.as_deref() == Some("LoadBalancer")
            && spec.load_balancer_ip.is_none()
            && let Some(ip) = ingress_ip(previous)
        {
            taken.load_balancer_ips.insert(ip, key.clone());
            service.status = Some(load_balancer_status(ip));
        }
    }

    // 2. What the file fixes: running services first, so that a new service asking for what
    //    another holds is the one refused.
    let refuse = |key: &ObjectKey, field: &str, value: String, holder: &ObjectKey| {
        PlanError(format!(
            "Service {key}: {field}: Invalid value: {value}: provided {} is already allocated to Service {holder}",
            if field.contains("IP") { "IP" } else { "port" }
        ))
    };
    let mut order: Vec<&ObjectKey> = planned.keys().collect();
    order.sort_by_key(|key| (!running.services.contains_key(*key), *key));
    for key in order {
        let service = &planned[key];
        let spec = service.spec.as_ref().expect("defaults filled");
        if let Some(ip) = fixed_cluster_ip(spec) {
            claim(&mut taken.cluster_ips, ip, key)
                .map_err(|holder| refuse(key, "spec.clusterIP", format!("\"{ip}\""), &holder))?;
        }
        for (index, port) in spec.ports.iter().flatten().enumerate() {
            if let Some(node_port) = port.node_port {
                claim(&mut taken.node_ports, node_port as u16, key).map_err(|holder| {
                    refuse(
                        key,
                        &format!("spec.ports[{index}].nodePort"),
                        node_port.to_string(),
                        &holder,
                    )
                })?;
            }
        }
        if let Some(port) = spec.health_check_node_port {
            claim(&mut taken.node_ports, port as u16, key)
                .map_err(|holder| refuse(key, "spec.healthCheckNodePort", port.to_string(), &holder))?;
        }
        if let Some(Ok(ip)) = spec.load_balancer_ip.as_deref().map(str::parse::<Ipv4Addr>) {
            claim(&mut taken.load_balancer_ips, ip, key)
                .map_err(|holder| refuse(key, "spec.loadBalancerIP", format!("\"{ip}\""), &holder))?;
        }
    }

    // 3. Everything still open, allocated.
    let usable: Vec<Ipv4Addr> = spec
        .service_cidr
        .hosts()
        .skip(1) // the first address is the cluster's own (`kubernetes`)
        .collect();
    let (first_port, last_port) = spec.node_ports;
    let port_count = u32::from(last_port - first_port) + 1;
    for (key, service) in planned.iter_mut() {
        if service.metadata.uid.is_none() {
            service.metadata.uid = Some(new_uid(key));
        }
        let service_spec = service.spec.as_mut().expect("defaults filled");
        if wants_cluster_ip(service_spec) && service_spec.cluster_ip.as_deref().unwrap_or_default().is_empty()
        {
            let start = (fnv1a(key.to_string().as_bytes()) % usable.len() as u64) as usize;
            let ip = (0..usable.len())
                .map(|offset| usable[(start + offset) % usable.len()])
                .find(|ip| !taken.cluster_ips.contains_key(ip))
                .ok_or_else(|| {
                    PlanError(format!(
                        "Service {key}: spec.clusterIP: the service CIDR {} is full",
                        spec.service_cidr
                    ))
                })?;
            taken.cluster_ips.insert(ip, key.clone());
            service_spec.cluster_ip = Some(ip.to_string());
        }
        if let Some(ip) = service_spec.cluster_ip.clone() {
            service_spec.cluster_ips = Some(vec![ip]);
        }
        let mut allocate_port = |what: String| -> Result<i32, PlanError> {
            let start = (fnv1a(what.as_bytes()) % u64::from(port_count)) as u32;
            let free = (0..port_count)
                .map(|offset| first_port + ((start + offset) % port_count) as u16)
                .find(|port| !taken.node_ports.contains_key(port));
            if let Some(port) = free {
                taken.node_ports.insert(port, key.clone());
            }
            free.map(i32::from)
                .ok_or_else(|| PlanError(format!("Service {key}: no free port in {first_port}-{last_port}")))
        };
        if exposed(service_spec) && service_spec.allocate_load_balancer_node_ports != Some(false) {
            for port in service_spec.ports.iter_mut().flatten() {
                if port.node_port.is_none() {
                    port.node_port = Some(allocate_port(format!("{key}/{}/{:?}", port.port, port.protocol))?);
                }
            }
        }
        if needs_health_check_port(service_spec) && service_spec.health_check_node_port.is_none() {
            service_spec.health_check_node_port = Some(allocate_port(format!("{key}/healthz"))?);
        }
        if service_spec.type_.as_deref() == Some("LoadBalancer") {
            let fixed = service_spec
                .load_balancer_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
            let ip = fixed
                .or_else(|| service.status.as_ref().and_then(|_| ingress_ip(service)))
                .or_else(|| {
                    let free = spec
                        .load_balancer_pool
                        .addresses()
                        .find(|ip| !taken.load_balancer_ips.contains_key(ip))?;
                    taken.load_balancer_ips.insert(free, key.clone());
                    Some(free)
                });
            // An exhausted pool leaves the service pending, as MetalLB does.
            service.status = ip.map(load_balancer_status);
        }
    }
    Ok(planned)
}

/// What the API server fills in when a manifest leaves it out.
fn fill_defaults(spec: &mut ServiceSpec) {
    let kind = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    spec.session_affinity.get_or_insert_with(|| "None".into());
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let client = spec
            .session_affinity_config
            .get_or_insert_with(SessionAffinityConfig::default)
            .client_ip
            .get_or_insert_with(ClientIPConfig::default);
        client.timeout_seconds.get_or_insert(DEFAULT_AFFINITY_TIMEOUT);
    }
    for port in spec.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
        port.target_port.get_or_insert(IntOrString::Int(port.port));
    }
    if kind == "ExternalName" {
        return;
    }
    if exposed(spec) || spec.external_ips.as_ref().is_some_and(|ips| !ips.is_empty()) {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if kind == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    spec.internal_traffic_policy
        .get_or_insert_with(|| "Cluster".into());
    spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
    spec.ip_family_policy.get_or_insert_with(|| "SingleStack".into());
}

fn exposed(spec: &ServiceSpec) -> bool {
    matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
}

fn wants_cluster_ip(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() != Some("ExternalName") && spec.cluster_ip.as_deref() != Some("None")
}

fn needs_health_check_port(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() == Some("LoadBalancer") && spec.external_traffic_policy.as_deref() == Some("Local")
}

fn fixed_cluster_ip(spec: &ServiceSpec) -> Option<Ipv4Addr> {
    spec.cluster_ip.as_deref()?.parse().ok()
}

fn ingress_ip(service: &Service) -> Option<Ipv4Addr> {
    service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .as_deref()?
        .parse()
        .ok()
}

fn load_balancer_status(ip: Ipv4Addr) -> ServiceStatus {
    ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("VIP".into()),
                ..LoadBalancerIngress::default()
            }]),
        }),
        ..ServiceStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    fn file(services: &str) -> crate::spec::LabFile {
        spec::parse(&format!(
            "apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata:\n  name: demo\nspec:\n  serviceCIDR: 10.96.0.0/28\n  serviceNodePortRange: 30000-30002\n  loadBalancerPool: 192.168.10.200-192.168.10.200\n{services}"
        ))
        .unwrap()
    }

    fn service(name: &str, spec: &str) -> String {
        format!("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
    }

    #[test]
    fn addresses_and_ports_are_allocated_kept_and_never_shared() {
        let lab = file(&format!(
            "{}{}{}",
            service(
                "a",
                "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  ports:\n  - {port: 80}\n"
            ),
            service("b", "  type: LoadBalancer\n  ports:\n  - {port: 80}\n"),
            service("c", "  clusterIP: None\n  ports:\n  - {port: 80}\n"),
        ));
        let first = plan(&lab.spec, &lab.services, &Cluster::default()).unwrap();
        let a = first.values().next().unwrap();
        let spec = a.spec.as_ref().unwrap();
        let ip: Ipv4Addr = spec.cluster_ip.as_deref().unwrap().parse().unwrap();
        assert!(
            lab.spec.service_cidr.contains(&ip)
                && ip != Ipv4Addr::new(10, 96, 0, 1)
                && ip != Ipv4Addr::new(10, 96, 0, 0)
        );
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"));
        // a takes a node port and a health-check port, b the last node port: the range is full.
        let mut ports: Vec<i32> = first
            .values()
            .filter_map(|service| service.spec.as_ref())
            .flat_map(|spec| {
                spec.ports
                    .iter()
                    .flatten()
                    .filter_map(|port| port.node_port)
                    .chain(spec.health_check_node_port)
            })
            .collect();
        ports.sort();
        assert_eq!(ports, [30000, 30001, 30002]);
        // One pool address: the first load balancer gets it, the second stays pending.
        let ingress: Vec<Option<Ipv4Addr>> = first.values().take(2).map(ingress_ip).collect();
        assert_eq!(ingress.iter().flatten().count(), 1, "{ingress:?}");
        assert_eq!(
            first
                .values()
                .nth(2)
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .cluster_ip
                .as_deref(),
            Some("None")
        );

        // Applied again, everything is kept as it was.
        let running = Cluster {
            services: first.clone(),
            ..Cluster::default()
        };
        assert_eq!(plan(&lab.spec, &lab.services, &running).unwrap(), first);
    }

    #[test]
    fn a_full_range_and_taken_fixed_values_are_refused() {
        let full = file(
            &(0..14)
                .map(|index| service(&format!("s{index}"), "  ports:\n  - {port: 80}\n"))
                .collect::<String>(),
        );
        let err = plan(&full.spec, &full.services, &Cluster::default()).unwrap_err();
        assert!(err.0.contains("the service CIDR 10.96.0.0/28 is full"), "{err}");
        let taken = file(&format!(
            "{}{}",
            service("a", "  clusterIP: 10.96.0.5\n  ports:\n  - {port: 80}\n"),
            service("b", "  clusterIP: 10.96.0.5\n  ports:\n  - {port: 80}\n"),
        ));
        let err = plan(&taken.spec, &taken.services, &Cluster::default()).unwrap_err();
        assert_eq!(
            err.0,
            "Service default/b: spec.clusterIP: Invalid value: \"10.96.0.5\": provided IP is already allocated to Service default/a"
        );
    }

    #[test]
    fn what_a_running_service_holds_is_never_taken_by_a_newcomer() {
        let alone = file(&service("b", "  type: NodePort\n  ports:\n  - {port: 80}\n"));
        let first = plan(&alone.spec, &alone.services, &Cluster::default()).unwrap();
        let held = first.values().next().unwrap().spec.clone().unwrap();
        let (ip, node_port) = (
            held.cluster_ip.clone().unwrap(),
            held.ports.as_ref().unwrap()[0].node_port.unwrap(),
        );
        let running = Cluster {
            services: first,
            ..Cluster::default()
        };
        for asks in [
            format!("  clusterIP: {ip}\n  ports:\n  - {{port: 80}}\n"),
            format!("  type: NodePort\n  ports:\n  - {{port: 80, nodePort: {node_port}}}\n"),
        ] {
            // `a` sorts before `b`: it is planned first, and still refused.
            let both = file(&format!(
                "{}{}",
                service("b", "  type: NodePort\n  ports:\n  - {port: 80}\n"),
                service("a", &asks)
            ));
            let err = plan(&both.spec, &both.services, &running).unwrap_err();
            assert!(
                err.0.starts_with("Service default/a: ")
                    && err.0.ends_with("already allocated to Service default/b"),
                "{err}"
            );
        }
    }
}
