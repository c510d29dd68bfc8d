//! What a user typed: addresses and ports, parsed and checked once.

use std::net::{IpAddr, SocketAddr};

use crate::error::Error;
use crate::text::echo;

/// Parses an address as a user typed it: `127.0.0.2`, `::1`, `[::1]`.
/// An IPv4-mapped IPv6 address is taken as the IPv4 address it maps.
pub fn parse_address(text: &str) -> Result<IpAddr, Error> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let address = match inner.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        Ok(v4) => v4,
        Err(_) => {
            let hint = if text.parse::<SocketAddr>().is_ok()
                || text
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok() && !text.contains("::"))
            {
                " (give the address alone; ports go in --ports)"
            } else if text.chars().any(|c| c.is_ascii_alphabetic()) && !text.contains(':') {
                " (host names are not resolved; give an IP address)"
            } else {
                ""
            };
            return Err(Error::Usage(format!(
                "{} is not an IP address{hint}",
                echo(text)
            )));
        }
    };
    match not_bindable(address) {
        Some(kind) => Err(Error::Usage(format!(
            "{} is {kind}; give the unicast address a server would bind",
            echo(text)
        ))),
        None => Ok(address),
    }
}

/// What makes `address` one no server binds as its own, or None for a
/// unicast address a server can bind. `sockcheck ADDR` and every address of
/// a pool pass this check.
///
/// `127.0.0.0` passes: Linux routes all of 127.0.0.0/8 to `lo`, and a
/// server bound to 127.0.0.0 is reachable. `127.255.255.255` does not: it is
/// `lo`'s broadcast address, which binds but cannot be connected to.
pub fn not_bindable(address: IpAddr) -> Option<&'static str> {
    match address {
        a if a.is_unspecified() => Some("a wildcard"),
        a if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v4) if v4 == std::net::Ipv4Addr::new(127, 255, 255, 255) => {
            Some("the broadcast address of 127.0.0.0/8")
        }
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(
            "an IPv6 link-local address, which binds only with a scope (an interface) \
             and sockcheck takes none",
        ),
        _ => None,
    }
}

/// Parses `9925,9926`, ranges (`9925-9927`) and lists of both (from
/// `--ports` or SOCKCHECK_PORTS, named by `source`): duplicates merged, in
/// the order given, at most [`MAX_PORTS`].
pub fn parse_ports(text: &str, source: &str) -> Result<Vec<u16>, Error> {
    let mut ports = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let (first, last) = match item.split_once('-') {
            Some((from, to)) => {
                if from.trim().is_empty() || to.trim().is_empty() {
                    return Err(Error::Usage(format!(
                        "{source}: {} is not a port or a range (9925-9927)",
                        echo(item)
                    )));
                }
                let (from, to) = (
                    port(from.trim(), text, source)?,
                    port(to.trim(), text, source)?,
                );
                if to < from {
                    return Err(Error::Usage(format!(
                        "{source}: the range {} ends before it starts",
                        echo(item)
                    )));
                }
                (from, to)
            }
            None => {
                let port = port(item, text, source)?;
                (port, port)
            }
        };
        for port in first..=last {
            if !ports.contains(&port) {
                ports.push(port);
            }
            if ports.len() > MAX_PORTS {
                return Err(Error::Usage(format!(
                    "{source}: {} holds more than {MAX_PORTS} ports; at most {MAX_PORTS} at once",
                    echo(text)
                )));
            }
        }
    }
    Ok(ports)
}

/// One port number, 1-65535: digits only (u32's parser also takes a sign,
/// `+5`).
fn port(item: &str, text: &str, source: &str) -> Result<u16, Error> {
    let digits = !item.is_empty() && item.bytes().all(|b| b.is_ascii_digit());
    match item.parse::<u32>().ok().filter(|_| digits) {
        Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Some(n) => Err(Error::Usage(format!(
            "{source}: port {n} is out of range (1-65535)"
        ))),
        None if item.is_empty() => Err(Error::Usage(format!(
            "{source}: empty port in {}",
            echo(text)
        ))),
        None => Err(Error::Usage(format!(
            "{source}: {} is not a port number",
            echo(item)
        ))),
    }
}

/// The most ports one inspection takes: what the BPF programs' port set
/// holds, and plenty for a test server's ports.
pub const MAX_PORTS: usize = crate::bpf::MAX_PORTS;

/// The default ports: 9925 (operations) and 9926 (HTTP).
pub const DEFAULT_PORTS: [u16; 2] = [9925, 9926];

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_parse_or_name_the_bad_value() {
        assert_eq!(parse_address("127.0.0.2").unwrap(), ip("127.0.0.2"));
        assert_eq!(parse_address("[::1]").unwrap(), ip("::1"));
        assert_eq!(parse_address("::ffff:127.0.0.2").unwrap(), ip("127.0.0.2"));
        let e = parse_address("127.0.0.256").unwrap_err().to_string();
        assert_eq!(e, "'127.0.0.256' is not an IP address");
        let e = parse_address("localhost:80").unwrap_err().to_string();
        assert!(e.contains("'localhost:80'") && e.contains("--ports"), "{e}");
        let e = parse_address("localhost").unwrap_err().to_string();
        assert!(e.contains("host names"), "{e}");
        for bad in [
            "0.0.0.0",
            "::",
            "[::]",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
        ] {
            let e = parse_address(bad).unwrap_err().to_string();
            assert!(e.contains("unicast"), "{bad}: {e}");
        }
    }

    #[test]
    fn ports_parse_or_name_the_bad_value() {
        assert_eq!(
            parse_ports("9925,9926", "--ports").unwrap(),
            vec![9925, 9926]
        );
        assert_eq!(parse_ports("9926, 9926", "--ports").unwrap(), vec![9926]);
        assert_eq!(
            parse_ports("9925-9927,1883, 9926 ,8883-8883", "--ports").unwrap(),
            vec![9925, 9926, 9927, 1883, 8883]
        );
        assert_eq!(parse_ports("1-64", "--ports").unwrap().len(), 64);
        let many = (1..=65)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        for (bad, needle) in [
            ("0", "port 0"),
            ("70000", "port 70000"),
            ("abc", "'abc'"),
            ("1,,2", "empty"),
            ("+5", "'+5'"),
            ("9925,-1", "'-1'"),
            (many.as_str(), "at most 64"),
            ("1-65", "at most 64"),
            ("9927-9925", "'9927-9925' ends before it starts"),
            ("9925-", "'9925-' is not a port or a range"),
            ("-9925", "'-9925' is not a port or a range"),
            ("9925-x", "'x' is not a port number"),
            ("9925-99999", "port 99999"),
        ] {
            let e = parse_ports(bad, "--ports").unwrap_err().to_string();
            assert!(
                e.starts_with("--ports: ") && e.contains(needle),
                "{bad}: {e}"
            );
        }
    }
}
