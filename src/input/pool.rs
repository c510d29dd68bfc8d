//! Pools of addresses, as users write them. The property tests of every
//! parser of outside input (pools, ports, durations, addresses) live here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
        let (first, count) = parse_item(item).map_err(bad)?;
        if pool.len() as u128 + count > MAX_POOL {
            return Err(bad(format!(
                "pool {} holds more than {MAX_POOL} addresses",
                echo(text)
            )));
        }
        expand(item, first, count, &mut pool, &mut seen).map_err(bad)?;
    }
    Ok(pool)
}

/// One item of a pool as its first address and how many addresses it
/// holds: a CIDR (`/`), a range (`-`) or a single address. The error says
/// why the item is not one of these.
fn parse_item(item: &str) -> Result<(IpAddr, u128), String> {
    if let Some((base, prefix)) = item.split_once('/') {
        parse_cidr(item, base, prefix)
    } else if let Some((from, to)) = item.split_once('-') {
        parse_range(item, from, to)
    } else {
        let address = parse_ip(item)
            .ok_or_else(|| format!("{} is not an IP address, range or CIDR", echo(item)))?;
        Ok((address, 1))
    }
}

/// A CIDR item `base/prefix`: the network's first address (the base with
/// its host bits cleared) and its size, at most [`MAX_POOL`].
fn parse_cidr(item: &str, base: &str, prefix: &str) -> Result<(IpAddr, u128), String> {
    let base = parse_ip(base)
        .ok_or_else(|| format!("{} in {} is not an IP address", echo(base), echo(item)))?;
    let bits: u32 = if base.is_ipv4() { 32 } else { 128 };
    let digits = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit());
    let prefix: u32 = prefix
        .parse()
        .ok()
        .filter(|p| digits && *p <= bits)
        .ok_or_else(|| {
            format!(
                "{} in {} is not a prefix length (0-{bits})",
                echo(prefix),
                echo(item)
            )
        })?;
    let size = 1u128.checked_shl(bits - prefix).unwrap_or(u128::MAX);
    if size > MAX_POOL {
        return Err(format!(
            "{} holds {size} addresses; a pool holds at most {MAX_POOL}",
            echo(item)
        ));
    }
    let start = to_u128(base) & !(size - 1);
    Ok((from_u128(start, base.is_ipv4()), size))
}

/// A range item `from-to`, both ends included and of one family: its first
/// address and how many it holds.
fn parse_range(item: &str, from: &str, to: &str) -> Result<(IpAddr, u128), String> {
    let from = parse_ip(from).ok_or_else(|| {
        format!(
            "{} in {} is not an IP address",
            echo(from.trim()),
            echo(item)
        )
    })?;
    let to = parse_ip(to)
        .ok_or_else(|| format!("{} in {} is not an IP address", echo(to.trim()), echo(item)))?;
    if from.is_ipv4() != to.is_ipv4() {
        return Err(format!("{} mixes IPv4 and IPv6", echo(item)));
    }
    let (a, b) = (to_u128(from), to_u128(to));
    if b < a {
        return Err(format!("{} ends before it starts", echo(item)));
    }
    Ok((from, b - a + 1))
}

/// Appends the `count` addresses from `first` to the pool, each once (an
/// address already in `seen` is skipped), after checking that a server can
/// bind every one of them.
fn expand(
    item: &str,
    first: IpAddr,
    count: u128,
    pool: &mut Vec<IpAddr>,
    seen: &mut std::collections::HashSet<IpAddr>,
) -> Result<(), String> {
    let start = to_u128(first);
    for i in 0..count {
        let address = from_u128(start + i, first.is_ipv4());
        // Every address, not just the first, must be one a server can
        // bind: `::1/127` holds `::`, `0.0.0.1/31` holds 0.0.0.0.
        if let Some(kind) = not_bindable(address) {
            return Err(format!(
                "{} holds {address}, {kind}; every address of a pool must be \
                 one a server can bind",
                echo(item)
            ));
        }
        if seen.insert(address) {
            pool.push(address);
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse_duration;
    use std::time::Duration;

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

/// Property tests for the parsers of what users type (issue 9): pools,
/// ports, durations and addresses. A fixed seed, 10^5 cases each, mixing
/// well-formed input, near misses (signs, brackets, huge numbers, reversed
/// ranges, hostile characters) and random bytes. They run under
/// `cargo test --release`, whose profile has overflow checks on.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::input::parse_duration;
    use crate::inspect::{MAX_PORTS, parse_ports};
    use crate::text::SplitMix64;
    use std::time::Duration;

    const CASES: usize = 100_000;

    const PIECES: &[&str] = &[
        "127.0.0.2",
        "127.0.0.0",
        "127.255.255.254",
        "0.0.0.0",
        "255.255.255.255",
        "::",
        "::1",
        "[::1]",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.2",
        "224.0.0.1",
        "10.0.0.1",
        "-",
        "/",
        ",",
        " ",
        "+",
        "0",
        "1",
        "8",
        "16",
        "24",
        "27",
        "30",
        "31",
        "32",
        "120",
        "127",
        "128",
        "65535",
        "65536",
        "99999999999999999999",
        "-1",
        ".",
        ":",
        "[",
        "]",
        "ms",
        "s",
        "m",
        "h",
        "1.5",
        "1e9",
        "NaN",
        "inf",
        "\u{2028}",
        "\u{1b}]0;x\u{7}",
        "\n",
        "é",
        "\u{0}",
    ];

    fn piece(rng: &mut SplitMix64, among: usize) -> &'static str {
        PIECES[rng.below(among as u64) as usize]
    }

    /// Text built from the pieces above, or random bytes read as UTF-8.
    fn text(rng: &mut SplitMix64) -> String {
        if rng.one_in(8) {
            let n = rng.below(40) as usize;
            return String::from_utf8_lossy(&rng.bytes(n)).into_owned();
        }
        let mut out = String::new();
        for _ in 0..=rng.below(6) {
            out.push_str(piece(rng, PIECES.len()));
        }
        out
    }

    /// One line, bounded, naming where the value came from.
    fn sane_error(e: &Error, source: &str, input: &str) {
        let message = e.to_string();
        assert!(
            message.starts_with(source) || source.is_empty(),
            "{input:?}: {message}"
        );
        assert!(!message.contains('\n'), "{input:?}: {message:?}");
        assert!(message.chars().count() < 400, "{input:?}: {message}");
    }

    #[test]
    fn pools_parse_or_fail_sanely() {
        let mut rng = SplitMix64(0x9001);
        for _ in 0..CASES {
            let input = if rng.one_in(3) {
                // A well-formed CIDR or range, of any size and kind.
                let base = piece(&mut rng, 12);
                if rng.one_in(2) {
                    let bits = if base.contains(':') { 128 } else { 32 };
                    format!("{base}/{}", bits - rng.below(18))
                } else {
                    format!("{base}-{}", piece(&mut rng, 12))
                }
            } else {
                text(&mut rng)
            };
            match parse_pool(&input, "POOL") {
                Ok(pool) => {
                    assert!(
                        !pool.is_empty() && pool.len() as u128 <= MAX_POOL,
                        "{input:?}"
                    );
                    let unique: std::collections::HashSet<_> = pool.iter().collect();
                    assert_eq!(unique.len(), pool.len(), "{input:?}: an address twice");
                    for address in &pool {
                        assert_eq!(not_bindable(*address), None, "{input:?} gave {address}");
                        assert!(
                            !matches!(address, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()),
                            "{input:?} gave the mapped {address}"
                        );
                    }
                }
                Err(e) => sane_error(&e, "POOL: ", &input),
            }
        }
    }

    #[test]
    fn ports_parse_or_fail_sanely() {
        let mut rng = SplitMix64(0x9002);
        for _ in 0..CASES {
            let input = text(&mut rng);
            match parse_ports(&input, "--ports") {
                Ok(ports) => {
                    assert!(!ports.is_empty() && ports.len() <= MAX_PORTS, "{input:?}");
                    assert!(!ports.contains(&0), "{input:?}");
                    let mut sorted = ports.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    assert_eq!(sorted.len(), ports.len(), "{input:?}: a port twice");
                    // Only digits, ranges, commas and white space make ports.
                    assert!(
                        input.chars().all(|c| c.is_ascii_digit()
                            || c == ','
                            || c == '-'
                            || c.is_whitespace()),
                        "{input:?} was taken as {ports:?}"
                    );
                }
                Err(e) => sane_error(&e, "--ports: ", &input),
            }
        }
    }

    #[test]
    fn durations_parse_or_fail_sanely() {
        let mut rng = SplitMix64(0x9003);
        for _ in 0..CASES {
            let input = text(&mut rng);
            match parse_duration(&input, "--wait") {
                Ok(d) => assert!(d <= Duration::from_secs(86400 * 365), "{input:?}: {d:?}"),
                Err(e) => sane_error(&e, "--wait: ", &input),
            }
        }
    }

    #[test]
    fn addresses_parse_or_fail_sanely() {
        let mut rng = SplitMix64(0x9004);
        for _ in 0..CASES {
            let input = text(&mut rng);
            match crate::inspect::parse_address(&input) {
                Ok(address) => assert_eq!(not_bindable(address), None, "{input:?}"),
                Err(e) => sane_error(&e, "", &input),
            }
        }
    }
}
