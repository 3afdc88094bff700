//! The nameservers of a resolv.conf (`nameserver 192.0.2.53` lines), the upstreams the server
//! uses when none are given: CoreDNS's `forward . /etc/resolv.conf`.

use std::net::{IpAddr, SocketAddr};

/// Where the system's resolver configuration lives.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The DNS port.
const DNS_PORT: u16 = 53;

/// The nameservers `text` lists, in order. Link-local IPv6 addresses with a zone
/// (`fe80::1%eth0`) are left out: they name no reachable socket without their interface.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let address: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(address, DNS_PORT))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_are_read_in_order() {
        let text = "# generated\nsearch default.svc.cluster.local\nnameserver 192.0.2.53\n\
                    nameserver  2001:db8::53\nnameserver fe80::1%eth0\noptions ndots:5\n;nameserver 192.0.2.1\n";
        let found: Vec<String> = nameservers(text).iter().map(ToString::to_string).collect();
        assert_eq!(found, ["192.0.2.53:53", "[2001:db8::53]:53"]);
    }
}
