//! Pools of addresses and durations, as users write them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::error::Error;
use crate::inspect::not_bindable;
use crate::text::echo;

/// The most addresses a pool may hold.
pub const MAX_POOL: u128 = 65536;

/// Parses a pool: a range `127.0.0.2-127.0.0.33`, a CIDR `127.0.0.0/27`, a
/// comma list `127.0.0.2,127.0.0.5`, or a comma list of any of these.
/// `source` names where it came from (`POOL`, `SOCKCHECK_POOL`).
pub fn parse_pool(text: &str, source: &str) -> Result<Vec<IpAddr>, Error> {
    let bad = |why: String| Error::Usage(format!("{source}: {why}"));
    let mut pool: Vec<IpAddr> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad(format!("empty item in pool {}", echo(text))));
        }
        let (first, count) = if let Some((base, prefix)) = item.split_once('/') {
            let base = parse_ip(base).ok_or_else(|| {
                bad(format!(
                    "{} in {} is not an IP address",
                    echo(base),
                    echo(item)
                ))
            })?;
            let bits: u32 = if base.is_ipv4() { 32 } else { 128 };
            let digits = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit());
            let prefix: u32 = prefix
                .parse()
                .ok()
                .filter(|p| digits && *p <= bits)
                .ok_or_else(|| {
                    bad(format!(
                        "{} in {} is not a prefix length (0-{bits})",
                        echo(prefix),
                        echo(item)
                    ))
                })?;
            let size = 1u128.checked_shl(bits - prefix).unwrap_or(u128::MAX);
            if size > MAX_POOL {
                return Err(bad(format!(
                    "{} holds {size} addresses; a pool holds at most {MAX_POOL}",
                    echo(item)
                )));
            }
            let start = to_u128(base) & !(size - 1);
            (from_u128(start, base.is_ipv4()), size)
        } else if let Some((from, to)) = item.split_once('-') {
            let from = parse_ip(from).ok_or_else(|| {
                bad(format!(
                    "{} in {} is not an IP address",
                    echo(from.trim()),
                    echo(item)
                ))
            })?;
            let to = parse_ip(to).ok_or_else(|| {
                bad(format!(
                    "{} in {} is not an IP address",
                    echo(to.trim()),
                    echo(item)
                ))
            })?;
            if from.is_ipv4() != to.is_ipv4() {
                return Err(bad(format!("{} mixes IPv4 and IPv6", echo(item))));
            }
            let (a, b) = (to_u128(from), to_u128(to));
            if b < a {
                return Err(bad(format!("{} ends before it starts", echo(item))));
            }
            (from, b - a + 1)
        } else {
            let address = parse_ip(item).ok_or_else(|| {
                bad(format!(
                    "{} is not an IP address, range or CIDR",
                    echo(item)
                ))
            })?;
            (address, 1)
        };
        if pool.len() as u128 + count > MAX_POOL {
            return Err(bad(format!(
                "pool {} holds more than {MAX_POOL} addresses",
                echo(text)
            )));
        }
        let start = to_u128(first);
        for i in 0..count {
            let address = from_u128(start + i, first.is_ipv4());
            // Every address, not just the first, must be one a server can
            // bind: `::1/127` holds `::`, `0.0.0.1/31` holds 0.0.0.0.
            if let Some(kind) = not_bindable(address) {
                return Err(bad(format!(
                    "{} holds {address}, {kind}; every address of a pool must be \
                     one a server can bind",
                    echo(item)
                )));
            }
            if seen.insert(address) {
                pool.push(address);
            }
        }
    }
    Ok(pool)
}

/// An address of a pool as written (`[::1]` too), any kind: whether a
/// server can bind it is checked for every address the pool holds.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    inner.parse().ok()
}

fn to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address as `parse_address` gives it: an IPv4-mapped IPv6 address
/// is the IPv4 address it maps.
fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        let v6 = Ipv6Addr::from(n);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(text: &str, source: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::Usage(format!(
            "{source}: {} is not a duration (examples: 500ms, 30s, 2m, 1h)",
            echo(text)
        ))
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || !(0.0..=86400.0 * 365.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(pool: &[IpAddr]) -> Vec<String> {
        pool.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn ranges_cidrs_and_lists() {
        let range = parse_pool("127.0.0.2-127.0.0.5", "POOL").unwrap();
        assert_eq!(
            ips(&range),
            ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
        );
        let cidr = parse_pool("127.0.0.0/30", "POOL").unwrap();
        assert_eq!(
            ips(&cidr),
            ["127.0.0.0", "127.0.0.1", "127.0.0.2", "127.0.0.3"]
        );
        let list = parse_pool("127.0.0.9, 127.0.0.7,::1", "POOL").unwrap();
        assert_eq!(ips(&list), ["127.0.0.9", "127.0.0.7", "::1"]);
        assert_eq!(parse_pool("127.0.0.0/16", "POOL").unwrap().len(), 65536);
        assert_eq!(
            parse_pool("127.0.0.2-127.0.1.1", "POOL").unwrap().len(),
            256
        );
    }

    #[test]
    fn bad_pools_name_the_bad_part() {
        for (bad, needle) in [
            ("127.0.0.0/15", "at most 65536"),
            ("127.0.0.5-127.0.0.2", "ends before"),
            ("127.0.0.2-::1", "mixes"),
            ("127.0.0.0/33", "'33'"),
            ("nope", "'nope'"),
            ("127.0.0.2,,127.0.0.3", "empty"),
            ("127.0.0.300-127.0.0.301", "'127.0.0.300'"),
            ("127.0.0.0/+5", "'+5'"),
        ] {
            let e = parse_pool(bad, "POOL").unwrap_err().to_string();
            assert!(e.starts_with("POOL: ") && e.contains(needle), "{bad}: {e}");
        }
    }

    /// Issue 9: only the first address of a CIDR or range was checked.
    #[test]
    fn pools_never_hold_wildcard_broadcast_multicast_or_link_local_addresses() {
        for (pool, holds) in [
            ("::1/127", "::,"),
            ("::-::1", "::,"),
            ("0.0.0.1/31", "0.0.0.0,"),
            ("0.0.0.0-0.0.0.1", "0.0.0.0,"),
            ("255.255.255.254/31", "255.255.255.255,"),
            ("255.255.255.250-255.255.255.255", "255.255.255.255,"),
            ("127.255.255.254/31", "127.255.255.255,"),
            ("223.255.255.255-224.0.0.1", "224.0.0.0,"),
            ("fe80::1", "link-local"),
            ("fe80::/127", "fe80::,"),
            ("127.0.0.2,ff02::1", "multicast"),
        ] {
            let e = parse_pool(pool, "POOL").unwrap_err().to_string();
            assert!(e.starts_with("POOL: ") && e.contains(holds), "{pool}: {e}");
        }
        // The network address of a loopback CIDR is local and reachable.
        assert_eq!(
            ips(&parse_pool("127.0.0.0/30", "POOL").unwrap()),
            ["127.0.0.0", "127.0.0.1", "127.0.0.2", "127.0.0.3"]
        );
    }

    #[test]
    fn mapped_addresses_in_a_pool_are_the_ipv4_addresses_they_map() {
        let pool = parse_pool("::ffff:127.0.0.2-::ffff:127.0.0.3,127.0.0.3", "POOL").unwrap();
        assert_eq!(ips(&pool), ["127.0.0.2", "127.0.0.3"]);
    }

    #[test]
    fn echoed_pool_values_are_escaped_and_cut() {
        let forged = parse_pool("x\nsockcheck: 127.0.0.2 free", "SOCKCHECK_POOL")
            .unwrap_err()
            .to_string();
        assert_eq!(
            forged,
            "SOCKCHECK_POOL: 'x\\nsockcheck: 127.0.0.2 free' is not an IP address, range or CIDR"
        );
        let long = format!("127.0.0.1-127.0.0.{}", "9".repeat(100_000));
        let e = parse_pool(&long, "POOL").unwrap_err().to_string();
        assert!(e.len() < 300 && e.contains("(100018 bytes)"), "{e}");
        let e = parse_duration("\x1b]0;x\x07", "--timeout")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--timeout: '\\x1b]0;x\\x07'"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30s", "--timeout").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_duration("500ms", "--timeout").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("2m", "--timeout").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            parse_duration("1.5", "--timeout").unwrap(),
            Duration::from_millis(1500)
        );
        for bad in ["", "s", "10x", "-1s", "1e9h"] {
            let e = parse_duration(bad, "--timeout").unwrap_err().to_string();
            assert!(e.starts_with("--timeout: "), "{bad}: {e}");
        }
    }
}
