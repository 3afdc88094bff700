//! The cluster add-ons the lab installs as kubeadm does: the DNS server as the `coredns`
//! Deployment in `kube-system`, behind the `kube-dns` Service at the cluster's DNS address.
//!
//! They are ordinary objects added to the lab file before it is planned, so the same control
//! plane allocates, schedules and slices them and the same services data path carries queries to
//! them; their replicas start after every pod of the file, so the file's pods get the addresses
//! they would get without them. Each replica runs `podnet dns` with the lab as its cluster source,
//! on the node's resolver (`dnsPolicy: Default`): the external namespace's stub, which plays the
//! internet's DNS. `spec.dnsReplicas` (2, as kubeadm) sets how many; 0 shows a cluster whose DNS
//! is down. A lab with its own CNI configuration has no services data path, so no add-ons.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_dns::DnsArgs;
use podnet_model::ObjectKey;

use super::PlanError;
use crate::spec::LabFile;
use crate::workload::PODNET_IMAGE;

/// The namespace of the add-ons.
const NAMESPACE: &str = "kube-system";
/// The DNS Deployment's name (kubeadm's).
pub const DNS_DEPLOYMENT: &str = "coredns";
/// The DNS Service's name, the one every cluster has.
pub const DNS_SERVICE: &str = "kube-dns";
/// The label selecting the DNS pods.
const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// TTL of cluster records (kubeadm's Corefile: `ttl 30`).
const DNS_TTL: u32 = 30;
/// Where the DNS server answers readiness probes (CoreDNS's `ready` plugin).
const READY_PORT: i32 = 8181;

/// `file` with the add-ons added; refuses a file that defines objects of the same names.
pub fn install(mut file: LabFile, lab: &str) -> Result<LabFile, PlanError> {
    if file.spec.cni.is_some() {
        return Ok(file);
    }
    let taken = |kind: &str, metadata: &ObjectMeta, name: &str| {
        let key = ObjectKey::of(metadata);
        (key.namespace == NAMESPACE && key.name == name).then(|| {
            PlanError(format!(
                "{kind} {key} is the lab's DNS add-on, which the lab creates itself; rename yours \
                 (the cluster's DNS address is spec.clusterDNS)"
            ))
        })
    };
    let clashes = file
        .services
        .iter()
        .find_map(|service| taken("Service", &service.metadata, DNS_SERVICE))
        .or_else(|| {
            file.deployments
                .iter()
                .find_map(|deployment| taken("Deployment", &deployment.metadata, DNS_DEPLOYMENT))
        });
    if let Some(refusal) = clashes {
        return Err(refusal);
    }
    file.services.push(dns_service(&file));
    file.deployments.push(dns_deployment(&file, lab));
    Ok(file)
}

fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(NAMESPACE.to_owned()),
        labels: Some(dns_labels()),
        ..ObjectMeta::default()
    }
}

fn dns_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(DNS_LABEL.0.to_owned(), DNS_LABEL.1.to_owned())])
}

/// `kube-system/kube-dns`: the DNS ports on the cluster's DNS address.
fn dns_service(file: &LabFile) -> Service {
    let port = |name: &str, port: i32, protocol: &str| ServicePort {
        name: Some(name.to_owned()),
        port,
        protocol: Some(protocol.to_owned()),
        target_port: Some(IntOrString::Int(port)),
        ..ServicePort::default()
    };
    Service {
        metadata: metadata(DNS_SERVICE),
        spec: Some(ServiceSpec {
            cluster_ip: Some(file.spec.cluster_dns.to_string()),
            selector: Some(dns_labels()),
            ports: Some(vec![
                port("dns", 53, "UDP"),
                port("dns-tcp", 53, "TCP"),
                port("metrics", 9153, "TCP"),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `kube-system/coredns`: replicas of `podnet dns` following the lab `lab`.
fn dns_deployment(file: &LabFile, lab: &str) -> Deployment {
    let mut args = DnsArgs::new(Some(lab));
    args.cluster_domain = file.spec.cluster_domain.clone();
    args.ttl = DNS_TTL;
    let container_port = |name: &str, port: i32, protocol: &str| ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some(protocol.to_owned()),
        ..ContainerPort::default()
    };
    let container = Container {
        name: "dns".into(),
        image: Some(PODNET_IMAGE.into()),
        args: Some(std::iter::once("dns".to_owned()).chain(args.to_argv()).collect()),
        ports: Some(vec![
            container_port("dns", 53, "UDP"),
            container_port("dns-tcp", 53, "TCP"),
            container_port("metrics", 9153, "TCP"),
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::Int(READY_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(1),
            ..Probe::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata: metadata(DNS_DEPLOYMENT),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::from(file.spec.dns_replicas)),
            selector: LabelSelector {
                match_labels: Some(dns_labels()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(dns_labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    dns_policy: Some("Default".into()),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}
