//! bridge: connects the container to a Linux bridge on the host through a veth pair.
//!
//! This is the wiring every beginner's container networking tutorial builds by hand (and the
//! one seed 002 walks through): a bridge on the host acts as a switch, each container gets one
//! end of a veth pair as its `eth0` while the other end is plugged into the bridge, and the
//! bridge carries the subnet's gateway address so containers can leave the subnet through the
//! host. Addresses come from the IPAM plugin; `ipMasq` adds masquerading for traffic that leaves
//! the subnet.
//!
//! Unlike the reference plugin, a failed ADD undoes everything it did, and DEL finds what to
//! remove from an attachment record even when the namespace is gone and no `prevResult` is given.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use podnet_netlink::{LinkKind, Netlink, Netns, Route, VethPair, format_mac, sysctl};
use serde::{Deserialize, Serialize};

use super::loopback::open_netns;
use super::{random_mac, random_suffix};
use crate::admission;
use crate::delegate;
use crate::firewall::{self, Verb};
use crate::phases;
use crate::skel::{Call, Plugin};
use crate::spec::{CniError, CniResult, Command, ErrorCode, Interface, IpConfig, NetConf, RouteConfig};
use crate::state::{Claims, PluginState, RecordLock, Records};

/// The bridge plugin.
pub struct Bridge;

/// Name of this plugin's record directory.
const RECORDS: &str = "bridge";
/// Prefix of a detached container interface awaiting destruction.
const DETACHED_PREFIX: &str = "pndel";
/// How many random host veth names to try before giving up.
const VETH_NAME_ATTEMPTS: u32 = 3;
/// Index of the container interface in the result's `interfaces`.
const CONTAINER_INTERFACE: usize = 2;

/// The bridge plugin's configuration keys (those of the reference plugin, plus `stateDir`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keys {
    #[serde(default = "default_bridge_name")]
    bridge: String,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    enabledad: bool,
    #[serde(default)]
    vlan: Option<u16>,
    #[serde(default)]
    vlan_trunk: Option<serde_json::Value>,
    #[serde(default)]
    macspoofchk: bool,
    #[serde(default)]
    port_isolation: bool,
    #[serde(default)]
    disable_container_interface: bool,
    /// Where attachment records are kept (podnet's own key).
    #[serde(default)]
    state_dir: Option<PathBuf>,
}

fn default_bridge_name() -> String {
    "cni0".into()
}

/// What ADD did for one attachment, kept until the veth pair is gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The host end of the veth pair.
    host_veth: String,
    /// Subnets masqueraded for this attachment.
    masquerade: Vec<IpNet>,
    /// DEL has detached the attachment; only the veth pair's destruction is pending.
    #[serde(default)]
    detached: bool,
}

struct Conf {
    net: NetConf<Keys>,
    records: Records,
    /// Masqueraded subnets and the attachments that need them.
    claims: Claims,
}

impl Conf {
    fn parse(call: &Call) -> Result<Self, CniError> {
        let net = NetConf::<Keys>::parse(&call.config)?;
        let keys = &net.plugin;
        let unsupported = [
            ("vlan", keys.vlan.is_some_and(|vlan| vlan != 0)),
            ("vlanTrunk", keys.vlan_trunk.is_some()),
            ("macspoofchk", keys.macspoofchk),
            ("portIsolation", keys.port_isolation),
            ("disableContainerInterface", keys.disable_container_interface),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                format!("podnet's bridge does not support {key:?}"),
            )
            .details("remove the key, or use the reference plugin for this network"));
        }
        if keys.bridge.is_empty() || keys.bridge.len() > 15 || keys.bridge.contains(['/', ':', ' ']) {
            return Err(
                CniError::invalid_config(format!("invalid bridge name {:?}", keys.bridge))
                    .details("a link name has 1 to 15 characters and no '/', ':' or spaces"),
            );
        }
        if let Some(mtu) = keys.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(
                CniError::invalid_config(format!("invalid mtu {mtu}")).details("the MTU must be 68 to 65535")
            );
        }
        let PluginState { records, claims } = PluginState::new(keys.state_dir.as_deref(), RECORDS, &net.name);
        Ok(Conf { net, records, claims })
    }

    fn keys(&self) -> &Keys {
        &self.net.plugin
    }

    fn is_gateway(&self) -> bool {
        self.keys().is_gateway || self.keys().is_default_gateway
    }
}

/// What a half-done ADD has to undo, in reverse order.
#[derive(Default)]
struct Undo {
    ipam: bool,
    record: bool,
    masquerade: Vec<IpNet>,
    /// The masquerade elements' transaction, while it runs.
    masquerading: Option<firewall::Applying>,
    /// That transaction failed: the subnets it was to masquerade may be claimed by others who
    /// counted on it.
    masquerading_failed: bool,
    container_link: Option<u32>,
    created_bridge: Option<u32>,
}

impl Plugin for Bridge {
    fn add(&self, call: &Call) -> Result<CniResult, CniError> {
        phases::end("decode");
        let conf = Conf::parse(call)?;
        let container_ns = open_netns(call)?;
        let mut container = Netlink::connect_in(&container_ns)?;
        let ifname = &call.env.ifname;
        if container.link(ifname)?.is_some() {
            return Err(
                CniError::generic(format!("container veth name provided ({ifname}) already exists"))
                    .details("DEL the attachment first, or choose another CNI_IFNAME"),
            );
        }
        let mut host = Netlink::connect()?;
        phases::end("netns");
        let mut undo = Undo::default();
        let attached =
            attach(call, &conf, &container_ns, &mut container, &mut host, &mut undo).and_then(|result| {
                admission::await_admission(call, &result)?;
                phases::end("admission");
                Ok(result)
            });
        match attached {
            Ok(result) => Ok(result),
            Err(err) => Err(rollback(call, &conf, &mut container, &mut host, undo, err)),
        }
    }

    fn del(&self, call: &Call) -> Result<(), CniError> {
        let conf = Conf::parse(call)?;
        let (id, ifname) = (&call.env.container_id, &call.env.ifname);
        let mut errors = Vec::new();
        if let Some(ipam) = &conf.net.ipam {
            errors.extend(delegate::run(&ipam.plugin_type, Command::Del, call, &stdin_of(call)).err());
        }
        let lock = conf.records.lock()?;
        let record: Option<Record> = conf.records.read(id, ifname)?;
        let masquerade = record
            .as_ref()
            .map(|record| record.masquerade.clone())
            .unwrap_or_default();
        // Masquerading first: while it fails, the record keeps the subnets for a retry.
        let released = release_masquerade(&conf, &lock, id, ifname, &masquerade);
        if let Some(record) = &record {
            let detached = Record {
                masquerade: if released.is_ok() {
                    Vec::new()
                } else {
                    masquerade.clone()
                },
                detached: true,
                ..record.clone()
            };
            errors.extend(conf.records.write(&lock, id, ifname, &detached).err());
        }
        errors.extend(released.err());
        drop(lock);
        errors.extend(detach_container_link(call).err());
        if let Some(record) = &record {
            start_reaper(&conf, call, &record.host_veth);
        }
        first_error(errors)
    }

    fn check(&self, call: &Call) -> Result<(), CniError> {
        let conf = Conf::parse(call)?;
        let prev = conf.net.prev_result.as_ref().ok_or_else(|| {
            CniError::generic("Required prevResult missing").details("CHECK needs the result of ADD")
        })?;
        if let Some(ipam) = &conf.net.ipam {
            delegate::run(&ipam.plugin_type, Command::Check, call, &stdin_of(call))?;
        }
        let container_ns = open_netns(call)?;
        let mut container = Netlink::connect_in(&container_ns)?;
        let ifname = &call.env.ifname;
        let link = container
            .link(ifname)?
            .ok_or_else(|| CniError::generic(format!("container interface {ifname} not found")))?;
        if link.kind != LinkKind::Veth {
            return Err(CniError::generic(format!(
                "container interface {ifname} is not a veth"
            )));
        }
        let index_in_result = prev
            .interfaces
            .iter()
            .position(|interface| interface.sandbox.is_some() && &interface.name == ifname);
        if let Some(expected) = index_in_result.and_then(|index| prev.interfaces[index].mac.as_ref()) {
            let actual = format_mac(&link.mac.unwrap_or_default());
            if !expected.eq_ignore_ascii_case(&actual) {
                return Err(CniError::generic(format!(
                    "Interface {ifname} Mac {expected} doesn't match container Mac: {actual}"
                )));
            }
        }
        let present: Vec<IpNet> = container
            .addresses(Some(link.index))?
            .into_iter()
            .map(|a| a.address)
            .collect();
        for ip in prev
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == index_in_result)
        {
            if !present.contains(&ip.address) {
                return Err(CniError::generic(format!(
                    "Failed to match addr {} on interface {ifname}",
                    ip.address
                )));
            }
        }
        let routes = container.routes()?;
        for expected in &prev.routes {
            if !routes.iter().any(|route| route.destination == expected.dst) {
                return Err(CniError::generic(format!(
                    "route to {} not found in the container",
                    expected.dst
                )));
            }
        }
        let mut host = Netlink::connect()?;
        let bridge_name = &conf.keys().bridge;
        let bridge = host
            .link(bridge_name)?
            .filter(|link| link.kind == LinkKind::Bridge)
            .ok_or_else(|| CniError::generic(format!("bridge {bridge_name} not found")))?;
        let host_veth = prev
            .interfaces
            .iter()
            .find(|interface| interface.sandbox.is_none() && &interface.name != bridge_name)
            .ok_or_else(|| CniError::generic("prevResult names no host veth"))?;
        let veth = host
            .link(&host_veth.name)?
            .ok_or_else(|| CniError::generic(format!("host veth {} not found", host_veth.name)))?;
        if veth.controller != Some(bridge.index) {
            return Err(CniError::generic(format!(
                "host veth {} is not attached to {bridge_name}",
                host_veth.name
            )));
        }
        Ok(())
    }

    fn status(&self, call: &Call) -> Result<(), CniError> {
        let conf = Conf::parse(call)?;
        match &conf.net.ipam {
            Some(ipam) => delegate::run(&ipam.plugin_type, Command::Status, call, &stdin_of(call)).map(drop),
            None => Ok(()),
        }
    }

    fn gc(&self, call: &Call) -> Result<(), CniError> {
        let conf = Conf::parse(call)?;
        let valid = call.valid_attachments()?;
        let mut errors = Vec::new();
        let mut host = Netlink::connect()?;
        let lock = conf.records.lock()?;
        for (container_id, ifname, record) in conf.records.list::<Record>()? {
            if !record.detached && valid.contains(&(container_id.clone(), ifname.clone())) {
                continue;
            }
            if let Some(link) = host.link(&record.host_veth)? {
                errors.extend(host.delete_link(link.index).err().map(CniError::from));
            }
            match release_masquerade(&conf, &lock, &container_id, &ifname, &record.masquerade) {
                Ok(()) => errors.extend(conf.records.remove(&lock, &container_id, &ifname).err()),
                Err(err) => errors.push(err),
            }
        }
        errors.extend(release_orphan_claims(&conf, &lock).err());
        drop(lock);
        if let Some(ipam) = &conf.net.ipam {
            errors.extend(delegate::run(&ipam.plugin_type, Command::Gc, call, &stdin_of(call)).err());
        }
        first_error(errors)
    }
}

/// The ADD work proper; on error the caller undoes what `undo` records.
fn attach(
    call: &Call,
    conf: &Conf,
    container_ns: &Netns,
    container: &mut Netlink,
    host: &mut Netlink,
    undo: &mut Undo,
) -> Result<CniResult, CniError> {
    let keys = conf.keys();
    let ifname = &call.env.ifname;

    // 1. Addresses from IPAM.
    let mut result = match &conf.net.ipam {
        Some(ipam) => {
            let result = delegate::run(&ipam.plugin_type, Command::Add, call, &stdin_of(call))?
                .expect("IPAM ADD returns a result");
            undo.ipam = true;
            result
        }
        None => CniResult::default(),
    };
    phases::end("ipam");
    if result.ips.is_empty() && (keys.is_gateway || keys.ip_masq) {
        return Err(CniError::invalid_config(
            "isGateway and ipMasq need addresses, but IPAM gave none",
        ));
    }

    // 2. The record, before any kernel change, so DEL and GC can always clean up; and the
    //    claims on masqueraded subnets, which say whether the elements exist already (only a
    //    subnet's first attachment adds them, its last removes them).
    let masquerade: Vec<IpNet> = if keys.ip_masq {
        result.ips.iter().map(|ip| ip.address.trunc()).collect()
    } else {
        Vec::new()
    };
    let mut record = Record {
        host_veth: format!("veth{}", random_suffix()),
        masquerade: masquerade.clone(),
        detached: false,
    };
    let unmasqueraded = {
        let lock = conf.records.lock()?;
        // The claims first: a claim without a record is released by GC, while a record
        // without its claims could let another attachment's DEL remove elements it needs.
        undo.masquerade = masquerade.clone();
        let unmasqueraded = claim_masquerade(conf, &lock, &call.env.container_id, ifname, &masquerade)?;
        conf.records
            .write(&lock, &call.env.container_id, ifname, &record)?;
        undo.record = true;
        unmasqueraded
    };

    // 3. Masquerading, committed by nft while the links are being set up.
    if !unmasqueraded.is_empty() {
        let mut elements = podnet_nft::Script::new();
        firewall::masquerade_elements(&mut elements, Verb::Add, &unmasqueraded);
        undo.masquerading = Some(firewall::start(elements)?);
    }

    phases::end("record");

    // 4. The veth pair, created inside the container with its peer directly on the host. A
    //    random host name may collide with an existing link: pick another one.
    let host_ns = Netns::current()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let created = container.add_veth(&VethPair {
            name: ifname,
            mac: None,
            peer_name: &record.host_veth,
            peer_netns: Some(&host_ns),
            mtu: keys.mtu,
        });
        match created {
            Err(err)
                if err.is_exists()
                    && attempt < VETH_NAME_ATTEMPTS
                    && host.link(&record.host_veth)?.is_some() =>
            {
                record.host_veth = format!("veth{}", random_suffix());
                write_record(conf, call, &record)?;
            }
            other => break other?,
        }
    }
    let host_veth = record.host_veth;
    let container_link = container.require_link(ifname)?;
    undo.container_link = Some(container_link.index);
    phases::end("veth");

    // 5. The bridge, its gateway addresses and the host end of the pair, under the record lock
    //    so that a concurrent failed ADD cannot delete a bridge this one is plugging into.
    let (bridge, host_link) = {
        let _lock = conf.records.lock()?;
        let bridge = ensure_bridge(conf, host, undo)?;
        if conf.is_gateway() {
            assign_gateways(conf, host, bridge.index, &result.ips)?;
        }
        let host_link = host.require_link(&host_veth)?;
        host.set_controller(host_link.index, bridge.index)?;
        if keys.hairpin_mode {
            host.set_hairpin(host_link.index, true)?;
        }
        host.set_up(host_link.index)?;
        (bridge, host_link)
    };
    if conf.is_gateway() {
        enable_forwarding(&result.ips)?;
    }
    phases::end("bridge");

    // 6. The container side: addresses, link up, routes.
    let has_ipv6 = result.ips.iter().any(|ip| ip.address.addr().is_ipv6());
    if has_ipv6 && !keys.enabledad {
        // Duplicate address detection would hold the address back for a second or more.
        container_ns.run(|| sysctl::set(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0"))??;
    }
    for ip in &result.ips {
        // Without DAD, usable before the answer goes back (else tentative until the kernel's
        // DAD work runs after the link comes up, which a loaded node delays).
        match keys.enabledad {
            true => container.add_address(container_link.index, ip.address)?,
            false => container.add_address_at_once(container_link.index, ip.address)?,
        }
    }
    container.set_up(container_link.index)?;
    if keys.is_default_gateway {
        add_default_routes(&mut result);
    }
    for route in &result.routes {
        container.add_route(&container_route(route, &result.ips, container_link.index))?;
    }

    phases::end("container");
    if let Some(masquerading) = undo.masquerading.take() {
        masquerading
            .wait()
            .inspect_err(|_| undo.masquerading_failed = true)?;
    }
    phases::end("masquerade");

    // 7. The result: bridge, host veth, container interface; every address on the latter.
    for ip in &mut result.ips {
        ip.interface = Some(CONTAINER_INTERFACE);
    }
    result.interfaces = vec![
        Interface {
            name: keys.bridge.clone(),
            mac: bridge.mac.as_ref().map(format_mac),
            ..Interface::default()
        },
        Interface {
            name: host_veth,
            mac: host_link.mac.as_ref().map(format_mac),
            ..Interface::default()
        },
        Interface {
            name: ifname.clone(),
            mac: container_link.mac.as_ref().map(format_mac),
            mtu: Some(container_link.mtu),
            sandbox: Some(call.env.netns()?.display().to_string()),
            ..Interface::default()
        },
    ];
    if let Some(dns) = conf.net.dns.clone().filter(|dns| !dns.is_empty()) {
        result.dns = dns;
    }
    Ok(result)
}

fn write_record(conf: &Conf, call: &Call, record: &Record) -> Result<(), CniError> {
    let lock = conf.records.lock()?;
    conf.records
        .write(&lock, &call.env.container_id, &call.env.ifname, record)
}

/// Undoes a failed ADD in reverse order, never stopping at a failure; returns the original
/// error with any rollback failures appended.
fn rollback(
    call: &Call,
    conf: &Conf,
    container: &mut Netlink,
    host: &mut Netlink,
    undo: Undo,
    err: CniError,
) -> CniError {
    let mut failures: Vec<String> = Vec::new();
    if let Some(index) = undo.container_link {
        // Deleting the container end deletes the host end too.
        if let Err(e) = container.delete_link(index) {
            failures.push(format!("delete container link: {e}"));
        }
    }
    if let Some(index) = undo.created_bridge {
        match conf.records.lock() {
            Ok(_lock) => {
                let ports = host
                    .links()
                    .map(|links| links.iter().any(|link| link.controller == Some(index)));
                if let Ok(false) = ports
                    && let Err(e) = host.delete_link(index)
                {
                    failures.push(format!("delete bridge: {e}"));
                }
            }
            Err(e) => failures.push(format!("lock records: {e}")),
        }
    }
    if undo.record || !undo.masquerade.is_empty() {
        let (id, ifname) = (&call.env.container_id, &call.env.ifname);
        // The transaction must be over before the release below.
        let commit_failed = undo.masquerading_failed
            || undo
                .masquerading
                .is_some_and(|masquerading| masquerading.wait().is_err());
        let released = conf.records.lock().and_then(|lock| {
            release_masquerade(conf, &lock, id, ifname, &undo.masquerade)?;
            conf.records.remove(&lock, id, ifname)?;
            // Attachments that claimed a subnet after this one did not add its elements: they
            // are added for them now.
            let still_claimed: Vec<IpNet> = undo
                .masquerade
                .iter()
                .filter(|subnet| {
                    conf.claims
                        .holders(&subnet.to_string())
                        .is_ok_and(|holders| !holders.is_empty())
                })
                .copied()
                .collect();
            if commit_failed && !still_claimed.is_empty() {
                let mut elements = podnet_nft::Script::new();
                firewall::masquerade_elements(&mut elements, Verb::Add, &still_claimed);
                firewall::start(elements)?.wait()?;
            }
            Ok(())
        });
        if let Err(e) = released {
            failures.push(format!("remove record: {e}"));
        }
    }
    if undo.ipam {
        let ipam = conf.net.ipam.as_ref().expect("IPAM ran");
        if let Err(e) = delegate::run(&ipam.plugin_type, Command::Del, call, &stdin_of(call)) {
            failures.push(format!("release addresses: {e}"));
        }
    }
    if failures.is_empty() {
        return err;
    }
    let details = [
        err.details.clone(),
        format!("rollback incomplete: {}", failures.join("; ")),
    ]
    .into_iter()
    .filter(|text| !text.is_empty())
    .collect::<Vec<_>>()
    .join("; ");
    CniError { details, ..err }
}

/// Finds or creates the bridge and brings it up.
fn ensure_bridge(conf: &Conf, host: &mut Netlink, undo: &mut Undo) -> Result<podnet_netlink::Link, CniError> {
    let keys = conf.keys();
    let name = &keys.bridge;
    let bridge = match host.link(name)? {
        Some(link) if link.kind == LinkKind::Bridge => link,
        Some(link) => {
            return Err(CniError::invalid_config(format!(
                "{name:?} already exists but is not a bridge ({:?})",
                link.kind
            ))
            .details("choose another \"bridge\" name"));
        }
        None => {
            let created = match host.add_bridge(name, random_mac(), keys.mtu) {
                // Created concurrently by somebody else (another ADD, the node agent): use it,
                // and leave it to its creator.
                Err(err) if err.is_exists() => false,
                Err(err) => return Err(err.into()),
                Ok(()) => true,
            };
            let link = host.require_link(name)?;
            if created {
                undo.created_bridge = Some(link.index);
            }
            link
        }
    };
    if keys.promisc_mode && !bridge.promiscuous {
        host.set_promiscuous(bridge.index, true)?;
    }
    if !bridge.up {
        host.set_up(bridge.index)?;
    }
    Ok(bridge)
}

/// Gives the bridge the gateway address of each subnet, as `isGateway` asks.
fn assign_gateways(conf: &Conf, host: &mut Netlink, bridge: u32, ips: &[IpConfig]) -> Result<(), CniError> {
    let existing = host.addresses(Some(bridge))?;
    for ip in ips {
        let Some(gateway) = ip.gateway else { continue };
        if gateway.is_ipv4() != ip.address.addr().is_ipv4() {
            return Err(CniError::invalid_config(format!(
                "IPAM gave gateway {gateway} for address {}, of another IP family",
                ip.address
            )));
        }
        let wanted = IpNet::new(gateway, ip.address.prefix_len()).expect("same family as a valid address");
        if existing.iter().any(|address| address.address == wanted) {
            continue;
        }
        let conflicting: Vec<IpNet> = existing
            .iter()
            .map(|address| address.address)
            .filter(|address| address.addr().is_ipv4() == gateway.is_ipv4() && !is_link_local(address.addr()))
            .filter(|address| address.contains(&gateway) || wanted.contains(&address.addr()))
            .collect();
        if let Some(old) = conflicting.first() {
            if !conf.keys().force_address {
                return Err(CniError::generic(format!(
                    "{:?} already has an IP address different from {wanted}",
                    conf.keys().bridge
                ))
                .details(format!("it has {old}; set \"forceAddress\": true to replace it")));
            }
            for old in &conflicting {
                host.delete_address(bridge, *old)?;
            }
        }
        match host.add_address(bridge, wanted) {
            Err(err) if err.is_exists() => {}
            other => other?,
        }
    }
    Ok(())
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// Turns on routing in the host namespace for the families in use.
fn enable_forwarding(ips: &[IpConfig]) -> Result<(), CniError> {
    if ips.iter().any(|ip| ip.address.addr().is_ipv4()) {
        sysctl::set("net.ipv4.ip_forward", "1")?;
    }
    if ips.iter().any(|ip| ip.address.addr().is_ipv6()) {
        sysctl::set("net.ipv6.conf.all.forwarding", "1")?;
    }
    Ok(())
}

/// `isDefaultGateway`: a default route through the gateway of each family that has one.
fn add_default_routes(result: &mut CniResult) {
    for ip in result.ips.clone() {
        let Some(gateway) = ip.gateway else { continue };
        let default: IpNet = if gateway.is_ipv4() {
            "0.0.0.0/0".parse().expect("valid")
        } else {
            "::/0".parse().expect("valid")
        };
        if !result.routes.iter().any(|route| route.dst == default) {
            result.routes.push(RouteConfig::new(default, Some(gateway)));
        }
    }
}

/// The kernel route for a result route: through its `gw`, or the gateway of the first address
/// of the same family, or directly on the link when there is neither.
fn container_route(route: &RouteConfig, ips: &[IpConfig], link: u32) -> Route {
    let family_gateway = || {
        ips.iter()
            .filter(|ip| ip.address.addr().is_ipv4() == route.dst.addr().is_ipv4())
            .find_map(|ip| ip.gateway)
    };
    let mut kernel = Route::new(route.dst).dev(link);
    match route.gw.or_else(family_gateway) {
        Some(gateway) => kernel = kernel.via(gateway),
        None => kernel.scope = podnet_netlink::RouteScope::Link,
    }
    kernel.priority = route.priority;
    kernel.mtu = route.mtu;
    if let Some(table) = route.table {
        kernel.table = table;
    }
    kernel
}

/// Takes the container's interface down and renames it out of the way, so the container is
/// detached at once and a new attachment may reuse the interface name immediately.
fn detach_container_link(call: &Call) -> Result<(), CniError> {
    let Some(netns) = call.env.netns.as_ref().and_then(|path| Netns::open(path).ok()) else {
        // No namespace: the veth pair died with it.
        return Ok(());
    };
    let mut container = Netlink::connect_in(&netns)?;
    let Some(link) = container.link(&call.env.ifname)? else {
        return Ok(());
    };
    container.set_down(link.index)?;
    match container.set_name(link.index, &format!("{DETACHED_PREFIX}{}", random_suffix())) {
        Err(err) if err.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}

/// The name the reaper runs under (argv[0]): the executable recognises it before anything else.
pub const REAPER: &str = "podnet-cni-reap";

/// Destroys the veth pair in a background process. The kernel makes whoever deletes a veth
/// wait for RCU grace periods (16-28 ms measured here); the detached attachment needs nobody
/// to wait for that. The reaper is this executable under the name [`REAPER`], with no stdio,
/// so the runtime waiting for the plugin's output is not kept waiting for it. If it cannot
/// start, the pair is destroyed here and now.
fn start_reaper(conf: &Conf, call: &Call, host_veth: &str) {
    use std::os::unix::process::CommandExt;
    let state_dir = conf.records.state_dir();
    let spawned = std::process::Command::new("/proc/self/exe")
        .arg0(REAPER)
        .arg(state_dir)
        .args([
            &conf.net.name,
            &call.env.container_id,
            &call.env.ifname,
            host_veth,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if spawned.is_err() {
        let _ = reap(
            state_dir,
            &conf.net.name,
            &call.env.container_id,
            &call.env.ifname,
            host_veth,
        );
    }
}

/// The reaper's life: `STATE_DIR NETWORK CONTAINER_ID IFNAME HOST_VETH` as [`start_reaper`]
/// passes them, then [`reap`].
pub fn reaper_main(args: impl Iterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    let args: Vec<String> = args.filter_map(|arg| arg.into_string().ok()).collect();
    let [state_dir, network, container_id, ifname, host_veth] = args.as_slice() else {
        eprintln!("{REAPER}: started by bridge's DEL with STATE_DIR NETWORK CONTAINER_ID IFNAME HOST_VETH");
        return std::process::ExitCode::FAILURE;
    };
    match reap(Path::new(state_dir), network, container_id, ifname, host_veth) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{REAPER}: {}", err.msg);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Destroys a detached attachment's veth pair (by its host end) and then its record, unless a
/// new attachment has replaced the record meanwhile. Run by the reaper process.
pub fn reap(
    state_dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
    host_veth: &str,
) -> Result<(), CniError> {
    let mut host = Netlink::connect()?;
    if let Some(link) = host.link(host_veth)?.filter(|link| link.kind == LinkKind::Veth) {
        match host.delete_link(link.index) {
            Err(err) if err.is_not_found() => {}
            other => other?,
        }
    }
    let records = Records::new(state_dir, RECORDS, network);
    let lock = records.lock()?;
    // A record whose masquerading DEL could not release stays, for the retried DEL or GC.
    if records
        .read::<Record>(container_id, ifname)?
        .is_some_and(|record| {
            record.detached && record.host_veth == host_veth && record.masquerade.is_empty()
        })
    {
        records.remove(&lock, container_id, ifname)?;
    }
    Ok(())
}

/// Claims `subnets` for the attachment; returns those that need masquerade elements: the ones
/// it is the first to claim, or all of them when the table is missing (after `nft flush
/// ruleset`, for instance).
fn claim_masquerade(
    conf: &Conf,
    lock: &RecordLock,
    id: &str,
    ifname: &str,
    subnets: &[IpNet],
) -> Result<Vec<IpNet>, CniError> {
    let mut first = Vec::new();
    for subnet in subnets {
        if conf.claims.add(lock, &subnet.to_string(), id, ifname)? {
            first.push(*subnet);
        }
    }
    if !subnets.is_empty() && !firewall::table_present().unwrap_or(false) {
        return Ok(subnets.to_vec());
    }
    Ok(first)
}

/// Releases the attachment's claims on `subnets`, first ending the masquerading of those it was
/// the last to hold (the only DEL that pays for an nftables deletion).
fn release_masquerade(
    conf: &Conf,
    lock: &RecordLock,
    id: &str,
    ifname: &str,
    subnets: &[IpNet],
) -> Result<(), CniError> {
    let resources: Vec<String> = subnets.iter().map(ToString::to_string).collect();
    conf.claims
        .release(lock, &resources, id, ifname, forget_masquerade)
}

/// Releases claims whose holder has no record left in any network, and the masquerading
/// nobody needs then.
fn release_orphan_claims(conf: &Conf, lock: &RecordLock) -> Result<(), CniError> {
    conf.claims
        .release_orphans(lock, &conf.records, forget_masquerade)
}

/// Stops masquerading the subnets claims name.
fn forget_masquerade(resources: &[String]) -> Result<(), CniError> {
    let subnets: Vec<IpNet> = resources
        .iter()
        .filter_map(|subnet| subnet.parse().ok())
        .collect();
    if subnets.is_empty() || !firewall::table_present().unwrap_or(true) {
        return Ok(());
    }
    let mut tx = podnet_nft::Script::new();
    firewall::masquerade_elements(&mut tx, Verb::Delete, &subnets);
    Ok(tx.apply()?)
}

/// The configuration to hand to the IPAM plugin: the same stdin the runtime gave us.
fn stdin_of(call: &Call) -> Vec<u8> {
    serde_json::to_vec(&call.config).expect("a decoded configuration serializes")
}

fn first_error(errors: Vec<CniError>) -> Result<(), CniError> {
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(first) => {
            let rest: Vec<String> = errors.map(|err| err.to_string()).collect();
            if rest.is_empty() {
                Err(first)
            } else {
                let details = format!("{}; also: {}", first.details, rest.join("; "));
                Err(CniError { details, ..first })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(address: &str, gateway: Option<&str>) -> IpConfig {
        IpConfig {
            address: address.parse().unwrap(),
            gateway: gateway.map(|gw| gw.parse().unwrap()),
            interface: None,
        }
    }

    #[test]
    fn routes_without_gw_use_the_family_gateway() {
        let ips = [
            ip("10.0.10.2/24", Some("10.0.10.1")),
            ip("fd00::2/64", Some("fd00::1")),
        ];
        let default = container_route(&RouteConfig::new("0.0.0.0/0".parse().unwrap(), None), &ips, 7);
        assert_eq!(default.gateway, Some("10.0.10.1".parse::<IpAddr>().unwrap()));
        let v6 = container_route(&RouteConfig::new("::/0".parse().unwrap(), None), &ips, 7);
        assert_eq!(v6.gateway, Some("fd00::1".parse::<IpAddr>().unwrap()));
        let explicit = container_route(
            &RouteConfig::new("1.1.1.1/32".parse().unwrap(), Some("10.0.10.9".parse().unwrap())),
            &ips,
            7,
        );
        assert_eq!(explicit.gateway, Some("10.0.10.9".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn default_gateway_adds_one_default_route_per_family() {
        let mut result = CniResult {
            ips: vec![
                ip("10.0.10.2/24", Some("10.0.10.1")),
                ip("fd00::2/64", Some("fd00::1")),
            ],
            routes: vec![RouteConfig::new("0.0.0.0/0".parse().unwrap(), None)],
            ..CniResult::default()
        };
        add_default_routes(&mut result);
        let destinations: Vec<String> = result.routes.iter().map(|route| route.dst.to_string()).collect();
        assert_eq!(destinations, ["0.0.0.0/0", "::/0"]);
    }

    #[test]
    fn refuses_unsupported_keys_and_bad_values() {
        let call = |extra: serde_json::Value| {
            let mut config = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"});
            config
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            Conf::parse(&Call {
                env: crate::spec::Environment::parse(|name| {
                    (name == "CNI_COMMAND").then(|| "VERSION".to_owned())
                })
                .unwrap(),
                config,
                version: crate::spec::Version::V1_0_0,
            })
            .err()
        };
        assert_eq!(
            call(serde_json::json!({"vlan": 100})).unwrap().code,
            ErrorCode::UnsupportedField
        );
        assert_eq!(
            call(serde_json::json!({"mtu": 20})).unwrap().code,
            ErrorCode::InvalidConfig
        );
        assert_eq!(
            call(serde_json::json!({"bridge": "a-very-long-bridge-name"}))
                .unwrap()
                .code,
            ErrorCode::InvalidConfig
        );
        assert!(call(serde_json::json!({"bridge": "cni5", "ipMasq": true})).is_none());
    }
}
