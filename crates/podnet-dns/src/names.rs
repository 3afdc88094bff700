//! Domain names as the server compares them.
//!
//! DNS names are case-insensitive (RFC 4343): the server looks names up by the lower-cased
//! dotted text of their labels ([`LowerName`]) and answers with the question's own spelling.
//! Addresses have names too: `4.3.2.1.in-addr.arpa` for IPv4 (RFC 1035 §3.5) and 32 reversed
//! nibbles under `ip6.arpa` for IPv6 (RFC 3596); PTR queries ask for those. Kubernetes also
//! writes addresses as single labels, dots or colons turned into dashes (`10-244-1-5`), for
//! pod names and for endpoints without a hostname.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// The longest name in text form (RFC 1035 §2.3.4: 255 octets on the wire).
const MAX_TEXT: usize = 255;

/// What a label byte that no record name holds (a dot inside a label, a space, a non-ASCII
/// byte) is written as: a character no key contains, so such a name is found nowhere.
const FOREIGN_BYTE: u8 = b'?';

/// A name as lower-cased dotted text without the final dot (`web.default.svc.cluster.local`),
/// kept on the stack: building it costs no allocation.
#[derive(Clone)]
pub struct LowerName {
    text: [u8; MAX_TEXT],
    len: u8,
}

impl LowerName {
    /// The lower-cased text of `name`.
    pub fn of(name: &Name) -> Self {
        let mut lower = LowerName {
            text: [0; MAX_TEXT],
            len: 0,
        };
        let mut len = 0;
        for label in name.iter() {
            if len > 0 && len < MAX_TEXT {
                lower.text[len] = b'.';
                len += 1;
            }
            for byte in label {
                if len == MAX_TEXT {
                    break;
                }
                lower.text[len] = match byte.to_ascii_lowercase() {
                    byte @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_') => byte,
                    _ => FOREIGN_BYTE,
                };
                len += 1;
            }
        }
        lower.len = len as u8;
        lower
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever written.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }

    /// The part of the name before `zone` (`web.default.svc` of `web.default.svc.cluster.local`
    /// in `cluster.local`; empty for the zone itself), or `None` when the name is not in the
    /// zone. `zone` is lower-cased text without the final dot; empty for the root.
    pub fn relative_to<'a>(&'a self, zone: &str) -> Option<&'a str> {
        let name = self.as_str();
        if zone.is_empty() {
            return Some(name);
        }
        if name == zone {
            return Some("");
        }
        let prefix = name.strip_suffix(zone)?.strip_suffix('.')?;
        Some(prefix)
    }
}

impl fmt::Debug for LowerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fully qualified name from lower-cased text without the final dot (the root when empty).
/// `None` when the text is no valid name.
pub fn fqdn(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name.to_lowercase())
}

/// Whether `label` is a DNS label as Kubernetes names them (RFC 1123: lower-case letters,
/// digits and dashes, at most 63, starting and ending with a letter or digit).
pub fn is_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// Lower-cases `text` and drops a final dot: how names are given on a command line or in an
/// object (`www.Example.com.`) become lookup text (`www.example.com`). `None` when it is no
/// domain name of letters, digits, dashes and underscores.
pub fn normalize(text: &str) -> Option<String> {
    let text = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let valid = !text.is_empty()
        && text.len() < MAX_TEXT - 1
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        });
    valid.then_some(text)
}

/// The address a reverse-mapping name (lower-cased text) stands for: `5.1.244.10.in-addr.arpa`
/// is 10.244.1.5. `None` for other names, and for partial ones (`244.10.in-addr.arpa`).
pub fn reverse_address(name: &str) -> Option<IpAddr> {
    if let Some(labels) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut count = 0;
        for label in labels.rsplit('.') {
            let octet = octets.get_mut(count)?;
            // Canonical decimal only: no leading zeros, as addresses are written.
            if label.len() > 1 && label.starts_with('0') {
                return None;
            }
            *octet = label.parse().ok()?;
            count += 1;
        }
        return (count == 4).then(|| IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let labels = name.strip_suffix(".ip6.arpa")?;
    let mut value: u128 = 0;
    let mut count = 0;
    for label in labels.rsplit('.') {
        let [nibble] = label.as_bytes() else { return None };
        let digit = char::from(*nibble).to_digit(16)?;
        if count == 32 {
            return None;
        }
        value = (value << 4) | u128::from(digit);
        count += 1;
    }
    (count == 32).then(|| IpAddr::V6(Ipv6Addr::from(value)))
}

/// The reverse-mapping name of `address`, without the final dot (what clients ask; the server
/// only reads such names).
#[cfg(test)]
pub fn reverse_name(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut text = String::with_capacity(72);
            for nibble in (0..32).map(|index| (u128::from(v6) >> (index * 4)) & 0xf) {
                text.push_str(&format!("{nibble:x}."));
            }
            text.push_str("ip6.arpa");
            text
        }
    }
}

/// An address as one label, as CoreDNS names endpoints without a hostname: `10-244-1-5`,
/// `fd00-10-244--5` (the address's text with dots or colons turned into dashes).
pub fn dashed(address: IpAddr) -> String {
    address.to_string().replace(['.', ':'], "-")
}

/// The address a dashed label stands for, as `pods insecure` reads pod names: three dashes
/// and no double dash make an IPv4 address, anything else is tried as IPv6.
pub fn undashed(label: &str) -> Option<IpAddr> {
    let ipv4 = label.matches('-').count() == 3 && !label.contains("--");
    let text = label.replace('-', if ipv4 { "." } else { ":" });
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_lower_cased_and_relative_to_their_zone() {
        let name = Name::from_ascii("Web.Default.SVC.cluster.LOCAL.").unwrap();
        let lower = LowerName::of(&name);
        assert_eq!(lower.as_str(), "web.default.svc.cluster.local");
        assert_eq!(lower.relative_to("cluster.local"), Some("web.default.svc"));
        assert_eq!(lower.relative_to("web.default.svc.cluster.local"), Some(""));
        assert_eq!(lower.relative_to("local"), Some("web.default.svc.cluster"));
        assert_eq!(
            lower.relative_to("ster.local"),
            None,
            "a zone ends on a label boundary"
        );
        assert_eq!(lower.relative_to("example.com"), None);
        let odd = Name::from_labels(vec![b"a.b".to_vec(), b"cluster".to_vec(), b"local".to_vec()]).unwrap();
        assert_eq!(
            LowerName::of(&odd).as_str(),
            "a?b.cluster.local",
            "a dot inside a label"
        );
        assert_eq!(LowerName::of(&Name::root()).as_str(), "");
    }

    #[test]
    fn reverse_names_map_to_addresses_and_back() {
        let v4: IpAddr = "10.244.1.5".parse().unwrap();
        assert_eq!(reverse_name(v4), "5.1.244.10.in-addr.arpa");
        assert_eq!(reverse_address("5.1.244.10.in-addr.arpa"), Some(v4));
        let v6: IpAddr = "fd00::a:1".parse().unwrap();
        assert_eq!(reverse_address(&reverse_name(v6)), Some(v6));
        for partial in [
            "1.244.10.in-addr.arpa",
            "1.1.1.1.1.in-addr.arpa",
            "05.1.244.10.in-addr.arpa",
            "256.1.244.10.in-addr.arpa",
            "in-addr.arpa",
            "a.ip6.arpa",
            "example.com",
        ] {
            assert_eq!(reverse_address(partial), None, "{partial}");
        }
    }

    #[test]
    fn addresses_read_as_dashed_labels() {
        let v4: IpAddr = "10.244.1.5".parse().unwrap();
        assert_eq!(dashed(v4), "10-244-1-5");
        assert_eq!(undashed("10-244-1-5"), Some(v4));
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(dashed(v6), "fd00--5");
        assert_eq!(undashed("fd00--5"), Some(v6));
        assert_eq!(undashed("web"), None);
        assert_eq!(undashed("10-244-1-300"), None);
    }

    #[test]
    fn labels_and_names_are_validated() {
        assert!(is_label("web-1"));
        assert!(!is_label("Web") && !is_label("-web") && !is_label("") && !is_label("a.b"));
        assert_eq!(normalize("WWW.Example.com.").as_deref(), Some("www.example.com"));
        assert_eq!(normalize("a..b"), None);
        assert_eq!(normalize("a b"), None);
        assert_eq!(fqdn("cluster.local").unwrap().to_string(), "cluster.local.");
    }
}
