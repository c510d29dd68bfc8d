//! A property test of the state-file parser (issue 9, "a fuzz target for
//! every parser that reads outside input"): a fixed seed, 10^5 inputs
//! (`SOCKCHECK_FUZZ_CASES` for more) mixing valid files, mutations of them,
//! wrong versions, nesting bombs, huge numbers and random bytes, through
//! [`examine`] (the whole decision, without the file system) and, for one
//! in a thousand, through [`Store::load`] on a real file.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::file::{OldLeases, Verdict, examine};
use super::version::{Version, top_level_version};
use super::{Quarantine, State, Store, VERSION};
use crate::error::Error;

/// The property tests' splitmix64, under a short name.
use crate::text::SplitMix64 as Rng;

fn text(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "pid 4242 (node) holds 127.0.0.2:9926",
        "\"",
        "\\",
        "{",
        "}",
        "[",
        "]",
        "\n",
        "\u{1b}]0;x\u{7}",
        "\u{2028}",
        "\u{feff}",
        "\u{0}",
        "é",
        "/tmp/report.md",
        "{\"address\": \"127.0.0.2\"}",
    ];
    (0..rng.index(5)).map(|_| *rng.pick(PIECES)).collect()
}

fn address(rng: &mut Rng, index: usize, unique: bool) -> IpAddr {
    if !unique {
        return *rng.pick(&[
            "127.0.0.2".parse().unwrap(),
            "127.0.0.3".parse().unwrap(),
            "::1".parse().unwrap(),
        ]);
    }
    if rng.chance(70) {
        IpAddr::from([127, index as u8, rng.next() as u8, rng.next() as u8])
    } else {
        let bits = (u128::from(rng.next()) << 64 | u128::from(rng.next())) & !0xff;
        IpAddr::from((bits | index as u128).to_be_bytes())
    }
}

/// A lease as sockcheck wrote them before leases became tokens: kept
/// unread, so any JSON value will do, these most of all.
fn old_lease(rng: &mut Rng, index: usize, unique: bool) -> Box<RawValue> {
    let lease = serde_json::json!({
        "address": address(rng, index, unique).to_string(),
        "owner": {"pid": rng.number() as u32, "start_ticks": rng.number()},
        "acquired": rng.number(),
        "holders": if rng.chance(20) { vec![text(rng)] } else { vec![] },
    });
    serde_json::value::to_raw_value(&lease).unwrap()
}

fn state(rng: &mut Rng, unique: bool) -> State {
    let leases = (0..rng.index(8))
        .map(|i| old_lease(rng, i, unique))
        .collect();
    let quarantine = (0..rng.index(4))
        .map(|i| Quarantine {
            address: address(rng, i + 100, unique),
            since: rng.number(),
            reason: text(rng),
            report: rng.chance(50).then(|| PathBuf::from(text(rng))),
        })
        .collect();
    let mut state = State::empty();
    state.leases = OldLeases(leases);
    state.quarantine = quarantine;
    state
}

fn serialize(rng: &mut Rng, state: &State) -> Vec<u8> {
    if rng.chance(50) {
        serde_json::to_vec_pretty(state).unwrap()
    } else {
        serde_json::to_vec(state).unwrap()
    }
}

fn valid(rng: &mut Rng, unique: bool) -> Vec<u8> {
    let state = state(rng, unique);
    serialize(rng, &state)
}

const BAD_VERSIONS: &[&str] = &[
    "2",
    "0",
    "-1",
    "2.0",
    "1.0",
    "1e23",
    "1E0",
    "-0",
    "1e400",
    "10",
    "18446744073709551617",
    "99999999999999999999999999",
    "\"1\"",
    "\"\"",
    "null",
    "true",
    "false",
    "[1]",
    "[]",
    "{}",
    "{\"major\": 1}",
    "\"\\u0031\"",
];

/// A file whose version is not 1: whole, cut, or damaged after it.
fn wrong_version(rng: &mut Rng) -> Vec<u8> {
    let version = if rng.chance(70) {
        rng.pick(BAD_VERSIONS).to_string()
    } else {
        let n = rng.number() as i64;
        if n == 1 { "3".into() } else { n.to_string() }
    };
    let body = serde_json::to_string(&state(rng, true)).unwrap();
    let rest = body.strip_prefix("{\"version\":1").unwrap();
    let key = if rng.chance(10) {
        "\"vers\\u0069on\""
    } else {
        "\"version\""
    };
    let mut bytes = format!("{{{key}: {version}{rest}").into_bytes();
    let tail = key.len() + version.len() + 4;
    match rng.index(4) {
        0 => {}
        1 => bytes.truncate(tail + rng.index(bytes.len() - tail + 1)),
        2 => {
            for _ in 0..=rng.index(4) {
                let at = tail + rng.index(bytes.len() - tail);
                bytes[at] = rng.next() as u8;
            }
        }
        _ => {
            // A duplicate key cannot hide it behind a 1.
            bytes = format!("{{\"version\": 1, {key}: {version}{rest}").into_bytes();
        }
    }
    bytes
}

fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.index(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.index(bytes.len());
        match rng.index(6) {
            0 => bytes[at] ^= 1 << rng.index(8),
            1 => bytes[at] = *rng.pick(b"{}[]\":,\\ 0\n"),
            2 => bytes.truncate(at),
            3 => {
                bytes.remove(at);
            }
            4 => bytes.insert(at, rng.next() as u8),
            _ => {
                let end = (at + rng.index(200)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                let to = rng.index(bytes.len());
                bytes.splice(to..to, copy);
            }
        }
    }
    bytes
}

fn bomb(rng: &mut Rng) -> Vec<u8> {
    const SHAPES: &[&str] = &[
        "{\"k\":[",
        "{",
        "[",
        "{\"a\":",
        "[{",
        "{\"address\":",
        "\"",
        "\\",
        "{\"version\":",
        "{\"address\": \"127.0.0.2\", \"x\": ",
        "}",
        "]",
    ];
    let mut bytes = Vec::new();
    if rng.chance(50) {
        bytes = valid(rng, true);
        bytes.truncate(rng.index(bytes.len()));
    }
    let shape = rng.pick(SHAPES);
    bytes.extend(shape.repeat(rng.index(4000)).bytes());
    if rng.chance(50) {
        bytes.extend(valid(rng, true));
    }
    bytes
}

/// A valid file whose numbers are replaced by out-of-range ones.
fn huge_numbers(rng: &mut Rng) -> Vec<u8> {
    let text = String::from_utf8(valid(rng, true)).unwrap();
    let huge = [
        "18446744073709551616",
        "4294967296",
        "-1",
        "1e400",
        "1.5",
        "-0",
        "1e19",
        "340282366920938463463374607431768211456",
    ];
    let mut out = String::new();
    let mut digits = false;
    for c in text.chars() {
        let digit = c.is_ascii_digit();
        if digit && !digits && rng.chance(30) {
            let number: &&str = rng.pick(&huge);
            out.push_str(number);
        }
        digits = digit;
        out.push(c);
    }
    out.into_bytes()
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "\\",
        " ",
        "\n",
        "1",
        "0",
        "\"version\"",
        "\"address\"",
        "\"owner\"",
        "\"pid\"",
        "\"start_ticks\"",
        "\"acquired\"",
        "\"quarantine\"",
        "\"since\"",
        "\"reason\"",
        "\"leases\"",
        "\"127.0.0.2\"",
    ];
    let mut bytes = Vec::new();
    for _ in 0..rng.index(600) {
        if rng.chance(60) {
            bytes.extend(rng.pick(WORDS).bytes());
        } else {
            bytes.push(rng.next() as u8);
        }
    }
    bytes
}

fn unique<T>(items: &[T], key: impl Fn(&T) -> IpAddr) -> bool {
    let mut seen = HashSet::new();
    items.iter().all(|item| seen.insert(key(item)))
}

/// What must hold of any verdict on any input.
fn check(bytes: &[u8], verdict: &Verdict) {
    let version = top_level_version(bytes);
    let state = match verdict {
        Verdict::Refused(why) => {
            assert!(matches!(version, Version::Other(_)), "{version:?}: {why}");
            assert!(!why.contains('\n') && why.len() < 500, "{why}");
            return;
        }
        Verdict::Sound(state) | Verdict::Duplicates { state, .. } => state,
        Verdict::Corrupt { why } => {
            assert!(!matches!(version, Version::Other(_)), "{version:?}: {why}");
            return;
        }
    };
    assert!(
        !matches!(version, Version::Other(_)),
        "a file with version {version:?} was not refused"
    );
    assert_eq!(state.version, VERSION);
    assert!(unique(&state.quarantine, |q| q.address));
    // What would be written back reads back the same, cleanly.
    let written = serde_json::to_vec_pretty(state).unwrap();
    match examine(&written, false) {
        Verdict::Sound(again) => assert_eq!(&again, state),
        other => panic!("what was kept does not read back: {other:?}"),
    }
}

/// A valid file, which must read back as it was.
fn round_trip(rng: &mut Rng) -> Vec<u8> {
    let original = state(rng, true);
    let bytes = serialize(rng, &original);
    match examine(&bytes, false) {
        Verdict::Sound(read) => assert_eq!(read, original),
        other => panic!("a valid file was not sound: {other:?}"),
    }
    bytes
}

/// A valid file that may quarantine an address twice: the first record
/// of each is kept, and the leases as they were.
fn duplicates(rng: &mut Rng) -> Vec<u8> {
    let original = state(rng, false);
    let bytes = serialize(rng, &original);
    let verdict = examine(&bytes, false);
    let (Verdict::Sound(read) | Verdict::Duplicates { state: read, .. }) = &verdict else {
        panic!("{verdict:?}");
    };
    let mut seen = HashSet::new();
    let first: Vec<&Quarantine> = original
        .quarantine
        .iter()
        .filter(|q| seen.insert(q.address))
        .collect();
    assert_eq!(read.quarantine.iter().collect::<Vec<_>>(), first);
    assert_eq!(read.leases, original.leases);
    bytes
}

fn refused(rng: &mut Rng) -> Vec<u8> {
    let bytes = wrong_version(rng);
    let verdict = examine(&bytes, false);
    assert!(
        matches!(verdict, Verdict::Refused(_)),
        "a wrong version was not refused: {}: {verdict:?}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

/// Verdicts seen: sound, duplicates, refused, corrupt.
type Seen = [usize; 4];

fn one_case(rng: &mut Rng, kind: usize, seen: &mut Seen) -> Vec<u8> {
    let bytes = match kind {
        0 | 1 => round_trip(rng),
        2 => duplicates(rng),
        3 => refused(rng),
        4 | 5 => {
            let unique = rng.chance(80);
            let valid = valid(rng, unique);
            mutate(rng, valid)
        }
        6 => bomb(rng),
        7 => huge_numbers(rng),
        _ => random_bytes(rng),
    };
    let cut = rng.chance(1);
    let verdict = examine(&bytes, cut);
    check(&bytes, &verdict);
    seen[match verdict {
        Verdict::Sound(_) => 0,
        Verdict::Duplicates { .. } => 1,
        Verdict::Refused(_) => 2,
        Verdict::Corrupt { .. } => 3,
    }] += 1;
    bytes
}

/// `bytes` as the real file: read (and read again, the same) or
/// refused and left as it was. Whether it was refused.
fn on_disk(store: &mut Store, path: &Path, bytes: &[u8], kind: usize) -> bool {
    std::fs::write(path, bytes).unwrap();
    store.repaired = None;
    match store.load() {
        Ok(state) => {
            assert!(unique(&state.quarantine, |q| q.address));
            assert_eq!(store.load().unwrap(), state);
            false
        }
        Err(e) => {
            assert!(matches!(e, Error::State(_)) && kind > 1, "{e}");
            assert_eq!(
                std::fs::read(path).unwrap(),
                bytes,
                "a refused file changed"
            );
            true
        }
    }
}

/// Whether arithmetic overflow panics in this build.
fn overflow_checks() -> bool {
    std::panic::catch_unwind(|| {
        let x: u8 = std::hint::black_box(u8::MAX);
        std::hint::black_box(x + 1)
    })
    .is_err()
}

#[test]
fn the_state_file_parser_survives_hostile_input() {
    println!("probing overflow checks (an overflow panic message may follow)");
    println!(
        "overflow checks: {}",
        if overflow_checks() { "on" } else { "OFF" }
    );
    let cases: usize = std::env::var("SOCKCHECK_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("sockcheck-state-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = Store::open(&dir).unwrap();
    let mut rng = Rng(0x50C4_C0DE_2026_0009);
    let started = Instant::now();
    let mut slowest = (Duration::ZERO, 0);
    let mut refused_on_disk = 0;
    let mut seen: Seen = [0; 4];
    for case in 0..cases {
        let kind = rng.index(10);
        let one = Instant::now();
        let bytes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one_case(&mut rng, kind, &mut seen)
        }))
        .unwrap_or_else(|_| panic!("case {case} (kind {kind}) failed; see above"));
        let took = one.elapsed();
        slowest = slowest.max((took, case));
        assert!(took < Duration::from_secs(1), "case {case} took {took:?}");
        // One in a thousand through the real file.
        if case % 1000 == 0 || (kind == 3 && case % 100 == 0) {
            let path = dir.join("leases.json");
            refused_on_disk += usize::from(on_disk(&mut store, &path, &bytes, kind));
        }
    }
    println!(
        "{cases} cases in {:.1?}; slowest {:?} (case {}); {refused_on_disk} refused on \
         disk; verdicts: {} sound, {} with duplicates, {} refused, {} corrupt",
        started.elapsed(),
        slowest.0,
        slowest.1,
        seen[0],
        seen[1],
        seen[2],
        seen[3]
    );
    // Every kind of verdict is exercised.
    assert!(
        refused_on_disk > 0 && seen.iter().all(|&n| n > cases / 100),
        "{seen:?}"
    );
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}
