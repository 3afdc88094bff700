//! Round-robin address selection within a range set, as the reference host-local does it.
//!
//! The search starts just after the address handed out last (`last_reserved_ip.N`) and walks
//! every range of the set once, wrapping around, skipping each range's gateway and every address
//! already taken. Starting after the last one, rather than from the beginning, delays the reuse
//! of a just-released address, so a stale connection aimed at a deleted pod does not reach its
//! successor.

use std::net::IpAddr;

use super::config::{Range, next};

/// The first free address of `ranges`, searching after `last_reserved`; `None` when full.
pub fn select(
    ranges: &[Range],
    last_reserved: Option<IpAddr>,
    is_taken: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    candidates(ranges, last_reserved).find(|&ip| !is_taken(ip))
}

/// Every allocatable address of `ranges` once, in search order.
fn candidates(ranges: &[Range], last_reserved: Option<IpAddr>) -> impl Iterator<Item = IpAddr> + '_ {
    // Where to start: just after the last reserved address when it lies in one of the ranges.
    let (first_range, first_ip) = last_reserved
        .and_then(|last| {
            let index = ranges
                .iter()
                .position(|range| range.start <= last && last <= range.end)?;
            let range = &ranges[index];
            if last == range.end {
                let following = (index + 1) % ranges.len();
                Some((following, ranges[following].start))
            } else {
                Some((index, next(last)))
            }
        })
        .unwrap_or((0, ranges[0].start));
    // The start range is walked from first_ip to its end, then every other range whole, then
    // the start range again from its beginning up to just before first_ip.
    let order = (0..=ranges.len()).map(move |step| (first_range + step) % ranges.len());
    order.enumerate().flat_map(move |(step, index)| {
        let range = &ranges[index];
        let (from, until) = match step {
            0 => (first_ip, Some(range.end)),
            step if step == ranges.len() => (range.start, before(first_ip, range.start)),
            _ => (range.start, Some(range.end)),
        };
        walk(from, until).filter(move |&ip| ip != range.gateway)
    })
}

/// The address before `ip`, or `None` when `ip` is `floor` (nothing to walk).
fn before(ip: IpAddr, floor: IpAddr) -> Option<IpAddr> {
    if ip <= floor {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) - 1).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) - 1).into()),
    })
}

/// `from..=until`, empty when `until` is `None`.
fn walk(from: IpAddr, until: Option<IpAddr>) -> impl Iterator<Item = IpAddr> {
    let mut current = until.map(|until| (from, until));
    std::iter::from_fn(move || {
        let (ip, until) = current?;
        current = (ip < until).then(|| (next(ip), until));
        Some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn range(subnet: &str, start: &str, end: &str, gateway: &str) -> Range {
        Range {
            subnet: subnet.parse().unwrap(),
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
            gateway: gateway.parse().unwrap(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn first_allocation_skips_the_gateway() {
        let ranges = [range("10.0.0.0/24", "10.0.0.1", "10.0.0.254", "10.0.0.1")];
        assert_eq!(select(&ranges, None, |_| false), Some(ip("10.0.0.2")));
    }

    #[test]
    fn continues_after_the_last_reserved_and_wraps() {
        let ranges = [range("10.0.0.0/29", "10.0.0.1", "10.0.0.6", "10.0.0.1")];
        assert_eq!(
            select(&ranges, Some(ip("10.0.0.4")), |_| false),
            Some(ip("10.0.0.5"))
        );
        let taken: HashSet<IpAddr> = ["10.0.0.5", "10.0.0.6"].iter().map(|s| ip(s)).collect();
        assert_eq!(
            select(&ranges, Some(ip("10.0.0.4")), |ip| taken.contains(&ip)),
            Some(ip("10.0.0.2"))
        );
    }

    #[test]
    fn visits_every_address_of_every_range_exactly_once() {
        let ranges = [
            range("10.88.12.0/30", "10.88.12.1", "10.88.12.2", "10.88.12.1"),
            range("10.88.13.0/29", "10.88.13.1", "10.88.13.6", "10.88.13.1"),
        ];
        for last in [
            None,
            Some(ip("10.88.12.2")),
            Some(ip("10.88.13.3")),
            Some(ip("10.88.13.6")),
            Some(ip("192.0.2.1")),
        ] {
            let all: Vec<IpAddr> = candidates(&ranges, last).collect();
            let unique: HashSet<IpAddr> = all.iter().copied().collect();
            assert_eq!(all.len(), 6, "{last:?}: {all:?}");
            assert_eq!(unique.len(), 6, "{last:?}: {all:?}");
        }
        // After the end of the first range the search moves on to the second.
        assert_eq!(
            select(&ranges, Some(ip("10.88.12.2")), |_| false),
            Some(ip("10.88.13.2"))
        );
    }

    #[test]
    fn full_range_yields_nothing() {
        let ranges = [range("10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.1")];
        assert_eq!(
            select(&ranges, None, |ip| ip == "10.0.0.2".parse::<IpAddr>().unwrap()),
            None
        );
    }

    #[test]
    fn ipv6_ranges_allocate_too() {
        let ranges = [range(
            "fd00:10::/64",
            "fd00:10::1",
            "fd00:10::ffff:ffff:ffff:ffff",
            "fd00:10::1",
        )];
        assert_eq!(
            select(&ranges, Some(ip("fd00:10::4")), |_| false),
            Some(ip("fd00:10::5"))
        );
    }
}
