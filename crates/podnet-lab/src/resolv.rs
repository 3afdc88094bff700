//! Each pod's `/etc/resolv.conf`, as kubelet's DNS configurer writes it from the pod's
//! `dnsPolicy` and `dnsConfig`.
//!
//! - `ClusterFirst` (the default): the cluster DNS service as nameserver, the search path
//!   `NS.svc.DOMAIN svc.DOMAIN DOMAIN` then the node's, and `ndots:5`, so that `web` and
//!   `web.shop` resolve as services. A hostNetwork pod gets its node's file instead.
//! - `ClusterFirstWithHostNet`: the same, for hostNetwork pods too.
//! - `Default`: the node's file ("default" for the node, not for Kubernetes).
//! - `None`: nothing but `dnsConfig`.
//!
//! `dnsConfig` is then merged in: its nameservers and searches appended (duplicates dropped),
//! its options replacing those of the same name.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

/// The cluster's DNS, as kubelet is configured with it (`clusterDomain`, `clusterDNS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// The cluster domain, `cluster.local`.
    pub domain: String,
    /// The DNS service's ClusterIP.
    pub server: Ipv4Addr,
}

/// The content of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The `search` list.
    pub searches: Vec<String>,
    /// `options`, as `name` or `name:value`.
    pub options: Vec<(String, Option<String>)>,
}

impl ResolvConf {
    /// Reads a resolv.conf (the node's); lines it does not know are left out.
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_owned)),
                Some("search" | "domain") => conf.searches = words.map(str::to_owned).collect(),
                Some("options") => conf.options.extend(words.map(|word| match word.split_once(':') {
                    Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                    None => (word.to_owned(), None),
                })),
                _ => {}
            }
        }
        conf
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for nameserver in &self.nameservers {
            text.push_str(&format!("nameserver {nameserver}\n"));
        }
        if !self.options.is_empty() {
            let options: Vec<String> = self
                .options
                .iter()
                .map(|(name, value)| match value {
                    Some(value) => format!("{name}:{value}"),
                    None => name.clone(),
                })
                .collect();
            text.push_str(&format!("options {}\n", options.join(" ")));
        }
        text
    }
}

/// The resolv.conf of `pod` (in `namespace`) on a node whose own file is `node`.
pub fn for_pod(pod: &Pod, namespace: &str, cluster: &ClusterDns, node: &ResolvConf) -> ResolvConf {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|spec| spec.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|spec| spec.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let mut conf = match policy {
        "None" => ResolvConf::default(),
        "Default" => node.clone(),
        "ClusterFirst" if host_network => node.clone(),
        _ => {
            let domain = &cluster.domain;
            let mut searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            searches.extend(node.searches.iter().cloned());
            ResolvConf {
                nameservers: vec![cluster.server.to_string()],
                searches,
                options: vec![("ndots".to_owned(), Some("5".to_owned()))],
            }
        }
    };
    if let Some(config) = spec.and_then(|spec| spec.dns_config.as_ref()) {
        for nameserver in config.nameservers.iter().flatten() {
            if !conf.nameservers.contains(nameserver) {
                conf.nameservers.push(nameserver.clone());
            }
        }
        for search in config.searches.iter().flatten() {
            if !conf.searches.contains(search) {
                conf.searches.push(search.clone());
            }
        }
        for option in config.options.iter().flatten() {
            let Some(name) = &option.name else { continue };
            conf.options.retain(|(existing, _)| existing != name);
            conf.options.push((name.clone(), option.value.clone()));
        }
    }
    conf
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};

    use super::*;

    fn cluster() -> ClusterDns {
        ClusterDns {
            domain: "cluster.local".into(),
            server: Ipv4Addr::new(10, 96, 0, 10),
        }
    }

    fn node() -> ResolvConf {
        ResolvConf::parse("# the node's\nsearch lab.example\nnameserver 192.0.2.53\noptions edns0\n")
    }

    fn pod(policy: Option<&str>, host_network: bool, config: Option<PodDNSConfig>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                dns_policy: policy.map(str::to_owned),
                host_network: Some(host_network),
                dns_config: config,
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn cluster_first_searches_the_namespace_then_the_cluster_then_the_node() {
        let conf = for_pod(&pod(None, false, None), "shop", &cluster(), &node());
        assert_eq!(
            conf.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lab.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        // A hostNetwork pod keeps its node's, unless it asks for the cluster's.
        assert_eq!(
            for_pod(&pod(None, true, None), "shop", &cluster(), &node()),
            node()
        );
        let with_host_net = for_pod(
            &pod(Some("ClusterFirstWithHostNet"), true, None),
            "shop",
            &cluster(),
            &node(),
        );
        assert_eq!(with_host_net.nameservers, ["10.96.0.10"]);
        assert_eq!(
            for_pod(&pod(Some("Default"), false, None), "shop", &cluster(), &node()),
            node()
        );
    }

    #[test]
    fn dns_config_is_merged_in_and_none_keeps_only_it() {
        let config = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.1".into(), "10.96.0.10".into()]),
            searches: Some(vec![
                "ns1.svc.cluster.local".into(),
                "my.dns.search.suffix".into(),
            ]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let merged = for_pod(
            &pod(None, false, Some(config.clone())),
            "ns1",
            &cluster(),
            &node(),
        );
        assert_eq!(merged.nameservers, ["10.96.0.10", "192.0.2.1"]);
        assert_eq!(
            merged.searches,
            [
                "ns1.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "lab.example",
                "my.dns.search.suffix"
            ]
        );
        assert_eq!(
            merged.options,
            [("ndots".into(), Some("2".into())), ("edns0".into(), None)]
        );
        let only = for_pod(
            &pod(Some("None"), false, Some(config)),
            "ns1",
            &cluster(),
            &node(),
        );
        assert_eq!(
            only.render(),
            "search ns1.svc.cluster.local my.dns.search.suffix\nnameserver 192.0.2.1\nnameserver 10.96.0.10\noptions ndots:2 edns0\n"
        );
    }
}
