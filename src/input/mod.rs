//! What users type, parsed once, at the edge: addresses, ports, pools and
//! durations as clap value parsers, and the environment fallbacks
//! (`SOCKCHECK_PORTS`, `SOCKCHECK_POOL`). Code further in never sees a
//! string that might still be a bad value.
//!
//! The parsers themselves are the inspection's and the gate's
//! ([`inspect::parse_address`], [`inspect::parse_ports`],
//! [`pool::parse_pool`]), plus [`parse_duration`] here; their messages name
//! where a value came from and echo it escaped and cut ([`text::echo`]).
//!
//! [`text::echo`]: crate::text::echo

use std::ffi::OsStr;
use std::net::IpAddr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

pub mod pool;

use crate::bpf::RingSize;
use crate::error::Error;
use crate::inspect::{self, DEFAULT_PORTS};
use crate::text::echo;

/// Ports as given with `--ports` (a newtype, so clap takes the list as one
/// value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

/// A pool of addresses as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool(pub Vec<IpAddr>);

/// The longest duration accepted: a year.
pub const MAX_DURATION: Duration = Duration::from_secs(86400 * 365);

/// A clap value parser over one of sockcheck's parsers: `source` (the
/// flag, `--timeout`, or the positional, `POOL`) names where the value
/// came from, and the message is the parser's own, as `sockcheck: MESSAGE`.
#[derive(Clone, Copy)]
pub struct Parser<T>(fn(&str, &str) -> Result<T, Error>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Parser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let source = match arg {
            Some(arg) => match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map_or_else(|| arg.get_id().to_string(), ToString::to_string),
            },
            None => "value".to_string(),
        };
        (self.0)(&value.to_string_lossy(), &source).map_err(|e| {
            let mut cmd = cmd.clone();
            cmd.error(ErrorKind::ValueValidation, e.to_string())
        })
    }
}

/// `--ports 9925,9926`.
pub fn ports() -> Parser<Ports> {
    Parser(|text, source| inspect::parse_ports(text, source).map(Ports))
}

/// `POOL`: a range, a CIDR or a comma list.
pub fn pool() -> Parser<Pool> {
    Parser(|text, source| pool::parse_pool(text, source).map(Pool))
}

/// `acquire-port`'s RANGE: `20000`, `20000-20099`, a comma list.
pub fn port_range() -> Parser<PortRange> {
    Parser(|text, source| crate::gate::ports::parse_range(text, source).map(PortRange))
}

/// The ports of a RANGE, in the order given, each once.
#[derive(Debug, Clone)]
pub struct PortRange(pub Vec<u16>);

/// `--timeout 30s`, `--wait 1m30s`.
pub fn duration() -> Parser<Duration> {
    Parser(parse_duration)
}

/// `--ring-size 256K`.
pub fn ring_size() -> Parser<RingSize> {
    Parser(parse_ring_size)
}

/// An address to inspect. A word close to a subcommand's name is taken
/// for a misspelt subcommand (`chek`), not for a bad address.
#[derive(Clone)]
pub struct Address;

impl TypedValueParser for Address {
    type Value = IpAddr;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<IpAddr, clap::Error> {
        let text = value.to_string_lossy();
        inspect::parse_address(&text).map_err(|e| {
            let message = match misspelt_subcommand(cmd, &text) {
                // `sockcheck 127.0.0.2 list`: a command after an address.
                Some(name) if name == text => format!(
                    "'{name}' is a command, and a command comes first: sockcheck {name} ..."
                ),
                Some(name) => format!(
                    "unrecognized subcommand {}; did you mean `{name}`?",
                    echo(&text)
                ),
                None => e.to_string(),
            };
            cmd.clone().error(ErrorKind::ValueValidation, message)
        })
    }
}

/// The subcommand `word` is a likely misspelling of, if any: within two
/// edits, for a word of letters.
fn misspelt_subcommand(cmd: &clap::Command, word: &str) -> Option<String> {
    if word.len() < 3 || !word.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    cmd.get_subcommands()
        .map(|sub| sub.get_name())
        .map(|name| (edit_distance(word, name), name))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, name)| name.to_string())
}

/// Edit distance of two short words, a swap of two neighbours counting
/// as one edit (`sacn` is one from `scan`, two from `man`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Addresses as typed, each once: `127.0.0.2 ::ffff:127.0.0.2` is one
/// address (the parser maps it), inspected once, in the order first given.
pub fn unique(addresses: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(addresses.len());
    for address in addresses {
        if !out.contains(&address) {
            out.push(address);
        }
    }
    out
}

/// `--ports`, else `SOCKCHECK_PORTS`, else 9925,9926. An error names the
/// variable.
pub fn resolve_ports(flag: Option<Ports>) -> Result<Vec<u16>, Error> {
    match flag {
        Some(Ports(ports)) => Ok(ports),
        None => match std::env::var("SOCKCHECK_PORTS") {
            Ok(text) if !text.trim().is_empty() => inspect::parse_ports(&text, "SOCKCHECK_PORTS"),
            _ => Ok(DEFAULT_PORTS.to_vec()),
        },
    }
}

/// POOL, else `SOCKCHECK_POOL`. An error names the variable.
pub fn resolve_pool(pool: Option<Pool>) -> Result<Vec<IpAddr>, Error> {
    match pool {
        Some(Pool(pool)) => Ok(pool),
        None => match std::env::var("SOCKCHECK_POOL") {
            Ok(text) if !text.trim().is_empty() => pool::parse_pool(&text, "SOCKCHECK_POOL"),
            _ => pool::parse_pool(DEFAULT_POOL, "the default pool"),
        },
    }
}

/// The pool when neither POOL nor `$SOCKCHECK_POOL` is given: 32 loopback
/// addresses, the pool Harper's suites use. On Linux every 127/8 address
/// is local with no setup; this block stays clear of 127.0.0.1 and of
/// systemd-resolved's 127.0.0.53 and 127.0.0.54, and of 127.0.1.1, which
/// Debian gives the host name.
pub const DEFAULT_POOL: &str = "127.0.0.2-127.0.0.33";

/// Parses a duration as humans write it, through jiff's "friendly" format:
/// `500ms`, `30s`, `2m`, `1m30s`, `1h`, `1.5s`, `2 minutes`. A bare number
/// is seconds (`30`, `1.5`), as it always was. At most a year; never
/// negative. `source` names where it came from (`--timeout`).
pub fn parse_duration(text: &str, source: &str) -> Result<Duration, Error> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "{source}: {} {why} (examples: 500ms, 30s, 2m, 1m30s, 1h)",
            echo(text)
        ))
    };
    let not_one = || bad("is not a duration");
    let too_long = || bad("is more than a year, the longest wait or linger taken");
    let trimmed = text.trim();
    let bare = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let duration = if bare {
        let seconds: f64 = trimmed.parse().map_err(|_| not_one())?;
        if !seconds.is_finite() || seconds > MAX_DURATION.as_secs_f64() {
            return Err(too_long());
        }
        Duration::from_secs_f64(seconds)
    } else {
        let signed: jiff::SignedDuration = trimmed.parse().map_err(|_| not_one())?;
        if signed.is_negative() {
            return Err(bad("is negative"));
        }
        Duration::try_from(signed).map_err(|_| too_long())?
    };
    if duration > MAX_DURATION {
        return Err(too_long());
    }
    Ok(duration)
}

/// Parses a ring buffer size: a number of bytes, or of KiB, MiB or GiB
/// (`4096`, `256K`, `4M`, `1G`; `KiB`, `k` and `kb` are the same as `K`).
/// It must be what the kernel takes ([`RingSize::new`]): nothing is
/// rounded, since a size the user did not ask for would be a surprise.
pub fn parse_ring_size(text: &str, source: &str) -> Result<RingSize, Error> {
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = trimmed.split_at(digits);
    let shift = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => u32::MAX,
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .filter(|_| shift != u32::MAX)
        .and_then(|n| n.checked_mul(1u64 << shift.min(63)));
    let Some(bytes) = bytes else {
        return Err(Error::Usage(format!(
            "{source}: {} is not a size (examples: 4096, 256K, 4M)",
            echo(text)
        )));
    };
    RingSize::new(bytes).map_err(|e| Error::Usage(format!("{source}: {}: {e}", echo(text))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_as_people_write_them() {
        for (text, bytes) in [
            ("65536", 65536),
            ("64K", 65536),
            ("256k", 262_144),
            ("256KiB", 262_144),
            ("4M", 4 << 20),
            ("4 MB", 4 << 20),
            ("1G", 1 << 30),
        ] {
            assert_eq!(
                parse_ring_size(text, "--ring-size").unwrap().bytes(),
                bytes,
                "{text}"
            );
        }
        for bad in [
            "", "K", "4X", "-4K", "0", "3000", "96K", "2048", "4G", "1e6",
        ] {
            let e = parse_ring_size(bad, "--ring-size").unwrap_err().to_string();
            assert!(e.starts_with("--ring-size"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
        let e = parse_ring_size("3000", "--ring-size")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--ring-size: '3000': 3000 bytes is not a ring buffer size"),
            "{e}"
        );
    }

    /// The cases the npm package's parser is held to as well
    /// (`npm/sockcheck/tests/durations.test.mjs`): one grammar for both.
    #[test]
    fn durations_are_the_shared_cases() {
        let text = include_str!("../../tests/data/durations.json");
        let cases: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert!(cases.len() > 100, "{} cases", cases.len());
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let got = parse_duration(text, "--timeout");
            match case["ms"].as_f64() {
                Some(ms) => {
                    let ns = got.unwrap_or_else(|e| panic!("{text:?}: {e}")).as_nanos() as f64;
                    // Exact but for f64's rounding of big values with a fraction.
                    assert!(
                        (ns - ms * 1e6).abs() <= 1.0 + ns * 1e-15,
                        "{text:?}: {ns} ns, not {ms} ms"
                    );
                }
                None => {
                    assert_eq!(case["ok"], false, "{text:?}: a case has ms or ok: false");
                    let e = got.expect_err(text).to_string();
                    assert!(e.starts_with("--timeout: "), "{text:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn misspelt_subcommands_are_suggested() {
        let cmd = clap::Command::new("x")
            .subcommand(clap::Command::new("check"))
            .subcommand(clap::Command::new("scan"));
        assert_eq!(misspelt_subcommand(&cmd, "chek").as_deref(), Some("check"));
        assert_eq!(misspelt_subcommand(&cmd, "sacn").as_deref(), Some("scan"));
        let cmd = cmd.subcommand(clap::Command::new("man"));
        assert_eq!(misspelt_subcommand(&cmd, "sacn").as_deref(), Some("scan"));
        assert_eq!(misspelt_subcommand(&cmd, "localhost"), None);
        assert_eq!(misspelt_subcommand(&cmd, "127.0.0.1"), None);
    }
}
