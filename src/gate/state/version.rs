//! Reading the top-level `version` of a state file without trusting the
//! rest of it.

/// The top-level `version` of a state file, as far as it can be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Version {
    /// Exactly the integer 1.
    One,
    /// Any other JSON value, as shown to the user (escaped and cut).
    Other(String),
    /// None found: no top-level object, no `version` key before the text
    /// stops being JSON, or a value that is not JSON.
    Unreadable,
}

/// Reads the keys of the top-level object, skipping their values, until the
/// text stops being JSON, and classifies every `version` found: one that is
/// not `1` wins (a duplicate key cannot smuggle a newer file past this).
/// Linear: each byte is looked at a bounded number of times, and a
/// container value is skipped by counting brackets, not parsed.
pub(super) fn top_level_version(bytes: &[u8]) -> Version {
    let mut found = Version::Unreadable;
    let mut at = skip_space(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return found;
    }
    at += 1;
    loop {
        at = skip_space(bytes, at);
        if bytes.get(at) != Some(&b'"') {
            return found;
        }
        let Some(key_end) = json_value_end(bytes, at) else {
            return found;
        };
        let key = serde_json::from_slice::<String>(&bytes[at..key_end]).ok();
        at = skip_space(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return found;
        }
        at = skip_space(bytes, at + 1);
        let Some(value_end) = json_value_end(bytes, at) else {
            return found;
        };
        if key.as_deref() == Some("version") {
            match classify_version(&bytes[at..value_end]) {
                Version::One => found = Version::One,
                Version::Unreadable => {}
                other => return other,
            }
        }
        at = skip_space(bytes, value_end);
        if bytes.get(at) != Some(&b',') {
            return found;
        }
        at += 1;
    }
}

fn classify_version(token: &[u8]) -> Version {
    match token.first() {
        _ if token == b"1" => Version::One,
        Some(b'{') => Version::Other("an object".into()),
        Some(b'[') => Version::Other("an array".into()),
        // IgnoredAny checks the grammar only: `1e400` is JSON, and not 1.
        _ => match serde_json::from_slice::<serde::de::IgnoredAny>(token) {
            Ok(_) => Version::Other(shown(token)),
            Err(_) => Version::Unreadable,
        },
    }
}

/// A JSON token from the file, safe for a terminal: printable ASCII kept,
/// everything else escaped, cut to 40 characters.
fn shown(token: &[u8]) -> String {
    let text = String::from_utf8_lossy(token);
    let mut out: String = text
        .chars()
        .take(40)
        .flat_map(|c| {
            let plain = c.is_ascii_graphic() || c == ' ';
            let escaped = (!plain).then(|| c.escape_default());
            plain
                .then_some(c)
                .into_iter()
                .chain(escaped.into_iter().flatten())
        })
        .collect();
    if text.chars().nth(40).is_some() {
        out.push_str("...");
    }
    out
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// Where the JSON value starting at `bytes[at]` ends (one past its last
/// byte), judged leniently and without recursion: a string runs to its
/// closing quote, a container to the bracket that balances it, anything
/// else to the next delimiter. `None` if the text ends first, or there is no
/// value.
fn json_value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => {
            let mut i = at + 1;
            loop {
                match *bytes.get(i)? {
                    b'"' => return Some(i + 1),
                    b'\\' => i += 2,
                    _ => i += 1,
                }
            }
        }
        b'{' | b'[' => {
            let (mut depth, mut in_string, mut i) = (0usize, false, at);
            loop {
                let byte = *bytes.get(i)?;
                if in_string {
                    match byte {
                        b'"' => in_string = false,
                        b'\\' => i += 1,
                        _ => {}
                    }
                } else {
                    match byte {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                }
                i += 1;
            }
        }
        b',' | b'}' | b']' | b':' => None,
        _ => {
            let end = at
                + bytes[at..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))?;
            Some(end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::super::file::{Verdict, examine};
    use super::super::tests::{is_state_error, temp};

    #[test]
    fn a_newer_version_is_refused_never_rewritten() {
        let dir = temp("newer");
        let mut store = Store::open(&dir).unwrap();
        let versions = [
            "2",
            "2.0",
            "1.0",
            "1e23",
            "1E0",
            "-1",
            "0",
            "18446744073709551617",
            "1e400",
            r#""1""#,
            "null",
            "true",
            "[1]",
            r#"{"major": 1}"#,
        ];
        for version in versions {
            let whole = format!(
                r#"{{"version": {version}, "leases": [{{"address": "127.0.0.2"}}], "future": true}}"#
            );
            // Whole, cut after the version, or damaged after it: refused alike.
            let cut = whole[..whole.find("leases").unwrap() + 12].to_string();
            let damaged = whole.replace("\"future\"", "future");
            // A duplicate key cannot hide it behind a 1.
            let twice = format!(r#"{{"version": 1, "version": {version}, "leases": []}}"#);
            for text in [whole, cut, damaged, twice] {
                std::fs::write(dir.join("leases.json"), &text).unwrap();
                let e = store.load().map(|s| format!("{text}: {s:?}")).unwrap_err();
                assert!(is_state_error(&e), "{e}");
                let e = e.to_string();
                assert!(
                    e.contains("has version") && e.contains("refusing") && !e.contains('\n'),
                    "{version}: {e}"
                );
                assert_eq!(
                    std::fs::read_to_string(dir.join("leases.json")).unwrap(),
                    text
                );
                assert!(store.repaired.is_none());
            }
        }
        let count = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(count, 2, "only lock and leases.json");
        // Shown escaped and cut.
        std::fs::write(
            dir.join("leases.json"),
            format!(r#"{{"version": "\u001b]0;x\u0007{}"}}"#, "9".repeat(100)),
        )
        .unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(
            !e.contains('\u{1b}') && e.contains("...") && e.len() < 400,
            "{e}"
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_file_without_a_readable_version_or_with_version_1_is_replaced() {
        for text in [
            "",
            "garbage",
            "{",
            r#"{"version""#,
            r#"{"version": 1"#,
            r#"{"version": 1, "leases": ["#,
            r#"{"version": 1x, "leases": []}"#,
            r#"{"leases": []}"#,
            "[]",
            r#"{"version": 1, "version": 1, "leases": []}"#,
        ] {
            let verdict = examine(text.as_bytes(), false);
            assert!(
                matches!(verdict, Verdict::Corrupt { .. }),
                "{text}: {verdict:?}"
            );
        }
        let sound = examine(br#"{"version": 1, "leases": []}"#, false);
        assert!(matches!(sound, Verdict::Sound(_)));
    }

    /// CPU seconds this thread has used: unlike wall time, not inflated by
    /// other jobs on a loaded machine.
    fn cpu_seconds() -> f64 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec, which `now` is.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        assert_eq!(rc, 0);
        now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
    }

    /// CPU seconds that one examination of `bytes` takes.
    fn examine_seconds(bytes: &[u8]) -> f64 {
        let started = cpu_seconds();
        let _ = examine(bytes, false);
        cpu_seconds() - started
    }

    #[test]
    fn examining_a_file_is_linear() {
        // The first salvage re-parsed from every `{`: 48 s and 13.5 s.
        let limit = if cfg!(debug_assertions) { 30.0 } else { 1.0 };
        let lease =
            r#"{"address": "127.0.0.2", "owner": {"pid": 1, "start_ticks": 1}, "acquired": 1}"#;
        let shapes: Vec<(&str, Vec<u8>)> = vec![
            ("256 KB of {\"k\":[", b"{\"k\":[".repeat(256 * 1024 / 6)),
            ("50 MB of {", vec![b'{'; 50 << 20]),
            ("16 MiB of [", vec![b'['; 16 << 20]),
            (
                "16 MiB of {\"a\":{\"a\":",
                b"{\"a\":".repeat((16 << 20) / 5),
            ),
            // Valid entries everywhere, nested two levels deep in each other.
            (
                "16 MiB of nested leases",
                format!(r#"{{"x": {{"y": {lease}}}}}"#)
                    .repeat((16 << 20) / 110)
                    .into_bytes(),
            ),
            (
                "16 MiB of leases",
                lease.repeat((16 << 20) / 80).into_bytes(),
            ),
            (
                "16 MiB of quoted braces",
                b"\"{\\\"{".repeat((16 << 20) / 5),
            ),
        ];
        for (i, (name, bytes)) in shapes.into_iter().enumerate() {
            let seconds = examine_seconds(&bytes);
            println!("examining {name}: {seconds:.3} s of CPU");
            // The issue's two shapes must be fast; the 16 MiB ones (the
            // most that is read) must only not blow up.
            let limit = if i < 2 { limit } else { limit * 5.0 };
            assert!(seconds < limit, "examining {name} took {seconds:.1} s");
        }
    }
}
