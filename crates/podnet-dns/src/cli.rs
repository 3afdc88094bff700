//! The DNS server's command line, shared by the binary that parses it and the lab that writes
//! it for the DNS servers it runs.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

use crate::names::normalize;

/// The DNS port, for upstreams given without one.
const DNS_PORT: u16 = 53;

/// `podnet dns` arguments.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DnsArgs {
    /// Read cluster state from this podnet lab (its daemon's socket) instead of the Kubernetes
    /// API server.
    #[arg(long, conflicts_with_all = ["kubeconfig", "no_cluster"])]
    pub lab: Option<String>,
    /// Reach the Kubernetes API server with this kubeconfig; without it (and without --lab),
    /// the pod's service account, $KUBECONFIG or ~/.kube/config, as kubectl does.
    #[arg(long, conflicts_with = "no_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Serve without a cluster: only static records and forwarding.
    #[arg(long)]
    pub no_cluster: bool,
    /// The cluster's domain (kubelet's --cluster-domain).
    #[arg(long, default_value = "cluster.local", value_parser = parse_domain)]
    pub cluster_domain: String,
    /// Where to answer DNS, over UDP and TCP.
    #[arg(long, default_value = "0.0.0.0:53")]
    pub listen: SocketAddr,
    /// Forward names outside the cluster to these servers, tried in order (repeatable or
    /// comma-separated; port 53 when omitted). Default: the nameservers of /etc/resolv.conf,
    /// as CoreDNS's `forward . /etc/resolv.conf`.
    #[arg(long = "upstream", value_delimiter = ',', value_parser = parse_upstream)]
    pub upstreams: Vec<SocketAddr>,
    /// Forward nothing: names outside the cluster and the static records are refused.
    #[arg(long, conflicts_with = "upstreams")]
    pub no_forward: bool,
    /// TTL of the cluster's and the static records, in seconds (CoreDNS's default: 5).
    #[arg(long, default_value_t = 5)]
    pub ttl: u32,
    /// How many forwarded answers the cache holds (CoreDNS's default: 9984).
    #[arg(long, default_value_t = 9984)]
    pub cache_size: usize,
    /// Threads answering UDP, each with a socket of its own; default: one per core.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Where to answer liveness probes (`/health`).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_address: SocketAddr,
    /// Where to answer readiness probes (`/ready`: 200 once the cluster has been listed).
    #[arg(long, default_value = "0.0.0.0:8181")]
    pub ready_address: SocketAddr,
    /// Where to serve Prometheus metrics (`/metrics`).
    #[arg(long, default_value = "0.0.0.0:9153")]
    pub metrics_address: SocketAddr,
    /// Answer NAME with IP, authoritatively (repeatable): the server becomes authoritative for
    /// NAME's parent zone (www.example.com=192.0.2.10 makes it answer example.com).
    #[arg(long = "static-record", value_name = "NAME=IP")]
    pub static_records: Vec<StaticRecord>,
}

/// A name and an address it answers (`--static-record NAME=IP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRecord {
    /// The name, lower-cased, without the final dot.
    pub name: String,
    /// The address.
    pub address: IpAddr,
}

impl FromStr for StaticRecord {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, address) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not NAME=IP: write it as www.example.com=192.0.2.10"))?;
        let name = normalize(name).ok_or_else(|| format!("{name:?} is not a domain name"))?;
        let address = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IPv4 or IPv6 address"))?;
        Ok(StaticRecord { name, address })
    }
}

impl fmt::Display for StaticRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.address)
    }
}

fn parse_domain(text: &str) -> Result<String, String> {
    normalize(text).ok_or_else(|| format!("{text:?} is not a domain name (cluster.local, say)"))
}

/// `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53` or `[2001:db8::53]:5353`.
fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    text.parse::<IpAddr>()
        .map(|address| SocketAddr::new(address, DNS_PORT))
        .map_err(|_| format!("{text:?} is not an address, with or without a port (192.0.2.53:53)"))
}

impl DnsArgs {
    /// Arguments with every default, serving the cluster's domain from the lab `lab` (or the
    /// API server when `None`).
    pub fn new(lab: Option<&str>) -> Self {
        DnsArgs {
            lab: lab.map(ToOwned::to_owned),
            kubeconfig: None,
            no_cluster: false,
            cluster_domain: "cluster.local".into(),
            listen: ([0, 0, 0, 0], DNS_PORT).into(),
            upstreams: Vec::new(),
            no_forward: false,
            ttl: 5,
            cache_size: 9984,
            workers: None,
            health_address: ([0, 0, 0, 0], 8080).into(),
            ready_address: ([0, 0, 0, 0], 8181).into(),
            metrics_address: ([0, 0, 0, 0], 9153).into(),
            static_records: Vec::new(),
        }
    }

    /// The arguments as a command line (after `podnet dns`), which parses back to `self`.
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        let mut flag = |name: &str, value: String| argv.extend([format!("--{name}"), value]);
        if let Some(lab) = &self.lab {
            flag("lab", lab.clone());
        }
        if let Some(kubeconfig) = &self.kubeconfig {
            flag("kubeconfig", kubeconfig.display().to_string());
        }
        flag("cluster-domain", self.cluster_domain.clone());
        flag("listen", self.listen.to_string());
        if !self.upstreams.is_empty() {
            let upstreams: Vec<String> = self.upstreams.iter().map(ToString::to_string).collect();
            flag("upstream", upstreams.join(","));
        }
        flag("ttl", self.ttl.to_string());
        flag("cache-size", self.cache_size.to_string());
        if let Some(workers) = self.workers {
            flag("workers", workers.to_string());
        }
        flag("health-address", self.health_address.to_string());
        flag("ready-address", self.ready_address.to_string());
        flag("metrics-address", self.metrics_address.to_string());
        for record in &self.static_records {
            flag("static-record", record.to_string());
        }
        if self.no_cluster {
            argv.push("--no-cluster".into());
        }
        if self.no_forward {
            argv.push("--no-forward".into());
        }
        argv
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: DnsArgs,
    }

    fn parse(argv: impl IntoIterator<Item = String>) -> Result<DnsArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("dns".to_owned()).chain(argv)).map(|command| command.args)
    }

    #[test]
    fn the_command_line_parses_back_to_the_same_arguments() {
        let mut args = DnsArgs::new(Some("demo"));
        args.cluster_domain = "k8s.example".into();
        args.listen = "127.0.0.1:5353".parse().unwrap();
        args.upstreams = vec![
            "192.0.2.53:53".parse().unwrap(),
            "[2001:db8::53]:5353".parse().unwrap(),
        ];
        args.ttl = 30;
        args.cache_size = 100;
        args.workers = Some(3);
        args.static_records = vec!["www.example.com=192.0.2.10".parse().unwrap()];
        assert_eq!(parse(args.to_argv()).unwrap(), args);

        let mut stub = DnsArgs::new(None);
        stub.no_cluster = true;
        stub.no_forward = true;
        assert_eq!(parse(stub.to_argv()).unwrap(), stub);
        assert_eq!(parse(Vec::new()).unwrap(), DnsArgs::new(None), "the defaults");
    }

    #[test]
    fn upstreams_default_to_port_53_and_names_are_normalized() {
        let args = parse(
            [
                "--upstream",
                "192.0.2.53,2001:db8::53",
                "--upstream",
                "192.0.2.54:5353",
                "--cluster-domain",
                "Cluster.Local.",
                "--static-record",
                "WWW.Example.com.=192.0.2.10",
            ]
            .map(String::from),
        )
        .unwrap();
        let upstreams: Vec<String> = args.upstreams.iter().map(ToString::to_string).collect();
        assert_eq!(
            upstreams,
            ["192.0.2.53:53", "[2001:db8::53]:53", "192.0.2.54:5353"]
        );
        assert_eq!(args.cluster_domain, "cluster.local");
        assert_eq!(args.static_records[0].to_string(), "www.example.com=192.0.2.10");
        for wrong in [
            ["--static-record", "www.example.com"],
            ["--static-record", "www.example.com=nowhere"],
            ["--upstream", "resolver.example"],
            ["--cluster-domain", "a..b"],
        ] {
            assert!(parse(wrong.map(String::from)).is_err(), "{wrong:?}");
        }
        assert!(parse(["--lab", "demo", "--no-cluster"].map(String::from)).is_err());
    }
}
