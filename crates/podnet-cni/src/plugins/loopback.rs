//! loopback: brings up `lo` in the container's network namespace.
//!
//! A new network namespace has a loopback link that is down, so even `127.0.0.1` is
//! unreachable. Runtimes run this plugin for every sandbox; containers of a pod then talk to each
//! other over `localhost`, because they all share the sandbox's namespace.

use podnet_netlink::{Netlink, Netns, format_mac};

use crate::skel::{Call, Plugin};
use crate::spec::{CniError, CniResult, ErrorCode, Interface, IpConfig};

/// The loopback plugin.
pub struct Loopback;

const LOOPBACK: &str = "lo";

impl Plugin for Loopback {
    fn add(&self, call: &Call) -> Result<CniResult, CniError> {
        let netns = open_netns(call)?;
        let mut netlink = Netlink::connect_in(&netns)?;
        let lo = netlink.require_link(LOOPBACK)?;
        netlink.set_up(lo.index)?;
        // The kernel adds 127.0.0.1/8 and ::1/128 itself when lo comes up.
        let ips = netlink
            .addresses(Some(lo.index))?
            .into_iter()
            .map(|address| IpConfig {
                address: address.address,
                gateway: None,
                interface: Some(0),
            })
            .collect();
        Ok(CniResult {
            interfaces: vec![Interface {
                name: LOOPBACK.into(),
                mac: Some(format_mac(&lo.mac.unwrap_or_default())),
                sandbox: Some(netns.path().display().to_string()),
                ..Interface::default()
            }],
            ips,
            ..CniResult::default()
        })
    }

    fn del(&self, _call: &Call) -> Result<(), CniError> {
        // The loopback link dies with its namespace; taking it down earlier would only break
        // containers that are still stopping.
        Ok(())
    }

    fn check(&self, call: &Call) -> Result<(), CniError> {
        let netns = open_netns(call)?;
        let mut netlink = Netlink::connect_in(&netns)?;
        if netlink.require_link(LOOPBACK)?.up {
            Ok(())
        } else {
            Err(CniError::generic("loopback interface is down").details("run ADD again for this container"))
        }
    }

    fn status(&self, _call: &Call) -> Result<(), CniError> {
        Ok(())
    }

    fn gc(&self, _call: &Call) -> Result<(), CniError> {
        Ok(())
    }
}

/// Opens the container's namespace; a missing one is error 3 (nothing to clean up).
pub(crate) fn open_netns(call: &Call) -> Result<Netns, CniError> {
    let path = call.env.netns()?;
    Netns::open(path).map_err(|err| {
        CniError::new(
            ErrorCode::UnknownContainer,
            format!("failed to open netns {:?}", path.display().to_string()),
        )
        .details(err.to_string())
    })
}
