//! The state file, `leases.json`: what it holds, and reading, repairing
//! and writing it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::lock::{Access, open_regular};
use super::version::{Version, top_level_version};
use super::{
    MAX_STATE_FILE, STATE_FILE, StateDir, Store, TEMPORARY, VERSION, errno_text, now, unusable,
};
use crate::error::{Error, errno_label};

/// An address that a command left held; `acquire` skips it until an
/// inspection finds it free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Quarantine {
    pub address: IpAddr,
    /// Unix seconds.
    pub since: u64,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The leases that sockcheck kept in this file before a lease became a
    /// token in the kernel (issue 16). This sockcheck never reads them (a
    /// lease it did not take as a token is not in its lease space), but
    /// carries them through as they were read, and always writes the key
    /// (`[]` when there were none): a version-1 file is then still one that
    /// an older sockcheck sharing the directory reads, leases and all,
    /// rather than one it finds corrupt. Read leniently: a file without the
    /// key is as sound as one with `[]`.
    #[serde(default)]
    pub(super) leases: OldLeases,
    #[serde(default)]
    pub quarantine: Vec<Quarantine>,
}

/// The `leases` of a state file, each kept as the very text it was (a
/// number is not even parsed, so none can change on the way through).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct OldLeases(pub(super) Vec<Box<serde_json::value::RawValue>>);

impl PartialEq for OldLeases {
    fn eq(&self, other: &OldLeases) -> bool {
        let (ours, theirs) = (&self.0, &other.0);
        ours.len() == theirs.len() && ours.iter().zip(theirs).all(|(a, b)| a.get() == b.get())
    }
}

impl Eq for OldLeases {}

impl State {
    /// A state with nothing in it.
    pub(super) fn empty() -> State {
        State {
            version: VERSION,
            leases: OldLeases::default(),
            quarantine: Vec::new(),
        }
    }
}

impl Store {
    /// Reads the state. A corrupt file is kept aside as
    /// `leases.json.corrupt-UNIXTIME` (or `-UNIXTIME-N`, never over an
    /// earlier copy) and the state started again; what happened is left in
    /// `self.repaired`.
    pub fn load(&mut self) -> Result<State, Error> {
        let Some(file) = open_regular(&self.dir, STATE_FILE, Access::Read)? else {
            return Ok(State::empty());
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unusable(self.dir.path(), format!("cannot read {STATE_FILE}: {e}")))?;
        let too_big = bytes.len() as u64 > MAX_STATE_FILE;
        bytes.truncate(MAX_STATE_FILE as usize);
        let (state, repaired) = match examine(&bytes, too_big) {
            Verdict::Sound(state) => return Ok(state),
            Verdict::Refused(why) => return Err(unusable(self.dir.path(), why)),
            // Said once: the file is rewritten without them.
            Verdict::Duplicates { state, note } => {
                (state, format!("{} {note}", self.dir.show(STATE_FILE)))
            }
            Verdict::Corrupt { why } => {
                let aside = match keep_aside(&self.dir, now()) {
                    Ok(name) => format!("kept it as {}", self.dir.show(&name)),
                    Err(e) => format!("could not keep a copy ({e})"),
                };
                let said = format!(
                    "{} was corrupt ({why}); {aside} and started the state again (the \
                     quarantine records it held are in the copy; leases are tokens, not \
                     records in it)",
                    self.dir.show(STATE_FILE),
                );
                (State::empty(), said)
            }
        };
        self.repaired = Some(repaired);
        self.save(&state)?;
        Ok(state)
    }

    /// Replaces the state file atomically: [`TEMPORARY`], written and
    /// fsynced, renamed over it.
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let dir = self.dir.fd();
        let write = || -> std::io::Result<()> {
            match rustix::fs::unlinkat(dir, TEMPORARY, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let mut file = File::from(rustix::fs::openat(
                dir,
                TEMPORARY,
                flags,
                Mode::from_raw_mode(0o600),
            )?);
            let mut text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
            text.push(b'\n');
            file.write_all(&text)?;
            file.sync_all()?;
            rustix::fs::renameat(dir, TEMPORARY, dir, STATE_FILE)?;
            Ok(())
        };
        write().map_err(|e| {
            let _ = rustix::fs::unlinkat(dir, TEMPORARY, AtFlags::empty());
            unusable(
                self.dir.path(),
                format!("cannot write {STATE_FILE}: {}", errno_label(&e)),
            )
        })
    }
}

/// Renames `leases.json` to `leases.json.corrupt-TIME`, or, when that name
/// is taken (two corruptions in one second, or a copy left by hand),
/// `-TIME-2`, `-TIME-3`...: never over an earlier copy. Returns the name.
///
/// `renameat2(RENAME_NOREPLACE)` fails rather than replace; on a file
/// system without it, `linkat` (which never replaces either) and `unlinkat`.
fn keep_aside(dir: &StateDir, time: u64) -> Result<String, String> {
    const MOST: u32 = 10_000;
    let mut noreplace = true;
    for n in 1..=MOST {
        let name = match n {
            1 => format!("{STATE_FILE}.corrupt-{time}"),
            n => format!("{STATE_FILE}.corrupt-{time}-{n}"),
        };
        let kept = if noreplace {
            rustix::fs::renameat_with(
                dir.fd(),
                STATE_FILE,
                dir.fd(),
                &*name,
                rustix::fs::RenameFlags::NOREPLACE,
            )
        } else {
            rustix::fs::linkat(dir.fd(), STATE_FILE, dir.fd(), &*name, AtFlags::empty())
        };
        match kept {
            Ok(()) if noreplace => return Ok(name),
            Ok(()) => {
                let _ = rustix::fs::unlinkat(dir.fd(), STATE_FILE, AtFlags::empty());
                return Ok(name);
            }
            Err(Errno::EXIST) => continue,
            Err(Errno::INVAL | Errno::NOSYS) if noreplace => {
                noreplace = false;
                // Try this name again with linkat.
                match rustix::fs::linkat(dir.fd(), STATE_FILE, dir.fd(), &*name, AtFlags::empty()) {
                    Ok(()) => {
                        let _ = rustix::fs::unlinkat(dir.fd(), STATE_FILE, AtFlags::empty());
                        return Ok(name);
                    }
                    Err(Errno::EXIST) => continue,
                    Err(e) => return Err(format!("{name}: {}", errno_text(e))),
                }
            }
            Err(e) => return Err(format!("{name}: {}", errno_text(e))),
        }
    }
    Err(format!(
        "{MOST} copies named {STATE_FILE}.corrupt-{time}... already; remove old ones"
    ))
}

/// What [`examine`] makes of the bytes of `leases.json`.
#[derive(Debug)]
pub(super) enum Verdict {
    /// A sound version-1 state.
    Sound(State),
    /// Not ours to read or rewrite: the reason, for the user.
    Refused(String),
    /// A sound version-1 state that quarantined an address more than once
    /// (a hand edit: sockcheck never writes that), with one record kept per
    /// address, and what was dropped, for the user.
    Duplicates { state: State, note: String },
    /// A damaged version-1 file (or one with no readable version), and why.
    Corrupt { why: String },
}

/// Decides what the bytes of `leases.json` are, without touching the file.
/// `cut`: they are only the first [`MAX_STATE_FILE`] bytes of it.
///
/// The version decides first: a file whose top-level `version` is anything
/// but the integer `1` (`2`, `2.0`, `1e23`, `"1"`, `null`, an object...)
/// was written by another sockcheck, or by hand, and is refused, never
/// rewritten, even if the rest is damaged: it is not ours to repair. Only a
/// file whose version is `1`, or that has no readable version at all
/// (garbage, or cut before the version), is called corrupt (and replaced;
/// the original is kept aside).
pub(super) fn examine(bytes: &[u8], cut: bool) -> Verdict {
    if let Version::Other(shown) = top_level_version(bytes) {
        return Verdict::Refused(format!(
            "leases.json has version {shown}, not {VERSION}: another sockcheck (or a hand) \
             wrote it, and this one is refusing to read or rewrite it (use the sockcheck \
             that wrote it, or another --state-dir)"
        ));
    }
    if cut {
        let why = format!("larger than {} MiB", MAX_STATE_FILE >> 20);
        return Verdict::Corrupt { why };
    }
    match serde_json::from_slice::<State>(bytes) {
        Ok(state) if state.version == VERSION => match deduplicate(state) {
            (state, None) => Verdict::Sound(state),
            (state, Some(note)) => Verdict::Duplicates { state, note },
        },
        // Not reached: the scan above saw this version.
        Ok(state) => Verdict::Refused(format!(
            "leases.json has version {}, not {VERSION}: refusing to read or rewrite it \
             (use the sockcheck that wrote it, or another --state-dir)",
            state.version
        )),
        Err(e) => Verdict::Corrupt { why: e.to_string() },
    }
}

/// Keeps the first quarantine record of each address, and says what went.
fn deduplicate(mut state: State) -> (State, Option<String>) {
    let mut seen = HashSet::new();
    let before = state.quarantine.len();
    state.quarantine.retain(|q| seen.insert(q.address));
    let twice = before - state.quarantine.len();
    let note = (twice > 0).then(|| {
        format!(
            "quarantined an address more than once (edited by hand?); kept the first \
             record of each, and rewrote the file without the other {twice}"
        )
    });
    (state, note)
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn quarantine(address: &str, since: u64) -> Quarantine {
        Quarantine {
            address: address.parse().unwrap(),
            since,
            reason: "left held".into(),
            report: Some(PathBuf::from("/tmp/report.md")),
        }
    }

    #[test]
    fn creates_a_private_directory_and_round_trips() {
        let dir = temp("roundtrip");
        let mut store = Store::open(&dir).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let mut state = store.load().unwrap();
        state.quarantine.push(quarantine("127.0.0.2", 1));
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        // The key older sockchecks require is always written.
        let text = std::fs::read_to_string(dir.join(STATE_FILE)).unwrap();
        assert!(text.contains("\"leases\": []"), "{text}");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file from before leases became tokens (issue 16): its leases are
    /// carried through unread, byte for value, and its quarantine is read.
    #[test]
    fn a_file_with_the_old_leases_is_read_and_keeps_them() {
        let dir = temp("old-leases");
        let mut store = Store::open(&dir).unwrap();
        let old = r#"{
  "version": 1,
  "leases": [
    {"address": "127.0.0.2", "owner": {"pid": 4242, "start_ticks": 18446744073709551615}, "acquired": 1,
     "holders": [{"pid": 4243, "start_ticks": 7}]},
    {"address": "127.0.0.2", "owner": {"pid": 1, "start_ticks": 1}, "acquired": 2}
  ],
  "quarantine": [{"address": "127.0.0.3", "since": 5, "reason": "left held"}]
}"#;
        let leases = serde_json::from_str::<serde_json::Value>(old).unwrap()["leases"].clone();
        std::fs::write(dir.join(STATE_FILE), old).unwrap();
        let mut state = store.load().unwrap();
        assert!(store.repaired.is_none());
        assert_eq!(state.quarantine.len(), 1);
        state.quarantine.push(quarantine("127.0.0.4", 6));
        store.save(&state).unwrap();
        let written = std::fs::read(dir.join(STATE_FILE)).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(written["leases"], leases);
        assert_eq!(written["version"], 1);
        assert_eq!(written["quarantine"].as_array().unwrap().len(), 2);
        // Without the key, as sound as with none.
        std::fs::write(dir.join(STATE_FILE), r#"{"version": 1}"#).unwrap();
        assert_eq!(store.load().unwrap(), State::empty());
        assert!(store.repaired.is_none());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_and_the_state_started_again() {
        let dir = temp("corrupt");
        let mut store = Store::open(&dir).unwrap();
        let full = r#"{"version": 1, "leases": [], "quarantine": [
            {"address": "127.0.0.2", "since": 1, "reason": "x"},
            {"address": "127.0.0.3", "since": 1, "reason": "x"}
        ]}"#;
        let cut = &full[..full.find("127.0.0.3").unwrap()];
        std::fs::write(dir.join(STATE_FILE), cut).unwrap();
        let state = store.load().unwrap();
        assert_eq!(state, State::empty());
        let said = store.repaired.clone().unwrap();
        assert!(
            said.contains("was corrupt") && said.contains("started the state again"),
            "{said}"
        );
        let kept: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("leases.json.corrupt-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(std::fs::read_to_string(dir.join(&kept[0])).unwrap(), cut);
        // What was rebuilt is written back and reads cleanly.
        store.repaired = None;
        assert_eq!(store.load().unwrap(), state);
        assert!(store.repaired.is_none());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_address_quarantined_twice_keeps_its_first_record_and_says_so() {
        let dir = temp("twice");
        let mut store = Store::open(&dir).unwrap();
        let mut state = State::empty();
        state.quarantine = vec![
            quarantine("127.0.0.2", 1),
            quarantine("127.0.0.3", 2),
            quarantine("127.0.0.2", 3),
        ];
        store.save(&state).unwrap();
        let read = store.load().unwrap();
        assert_eq!(read.quarantine, state.quarantine[..2]);
        let said = store.repaired.take().unwrap();
        assert!(
            said.contains("more than once") && said.contains("other 1"),
            "{said}"
        );
        assert_eq!(store.load().unwrap(), read);
        assert!(store.repaired.is_none());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_oversized_state_file_is_read_no_further_than_the_bound() {
        let dir = temp("oversized");
        let mut store = Store::open(&dir).unwrap();
        let mut text = br#"{"version": 1, "leases": [], "pad": ""#.to_vec();
        text.resize(MAX_STATE_FILE as usize + 10, b' ');
        text.extend_from_slice(b"\"}\n");
        std::fs::write(dir.join(STATE_FILE), &text).unwrap();
        assert_eq!(store.load().unwrap(), State::empty());
        let said = store.repaired.clone().unwrap();
        assert!(said.contains("larger than 16 MiB"), "{said}");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_corruptions_in_one_second_keep_both_copies() {
        let dir = temp("corrupt-twice");
        let mut store = Store::open(&dir).unwrap();
        let started = now();
        // Copies already there for this second and the next few (and a
        // second run's `-2`): none may be replaced.
        for second in started..started + 5 {
            std::fs::write(dir.join(format!("leases.json.corrupt-{second}")), "earlier").unwrap();
        }
        std::fs::write(
            dir.join(format!("leases.json.corrupt-{started}-2")),
            "earlier",
        )
        .unwrap();
        let texts = ["{\"version\": 1, \"le", "garbage", "{\"leases\": ["];
        for text in texts {
            std::fs::write(dir.join(STATE_FILE), text).unwrap();
            store.repaired = None;
            store.load().unwrap();
            let said = store.repaired.clone().unwrap();
            assert!(said.contains("kept it as"), "{said}");
        }
        let mut kept: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("leases.json.corrupt-"))
            .map(|name| std::fs::read_to_string(dir.join(name)).unwrap())
            .collect();
        kept.sort();
        let mut expected: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        expected.extend(std::iter::repeat_n("earlier".to_string(), 6));
        expected.sort();
        assert_eq!(kept, expected);
        // The names, for one second: TIME, then TIME-2, TIME-3.
        let aside = StateDir::open(&dir).unwrap();
        let names: Vec<String> = (0..3)
            .map(|_| {
                std::fs::write(dir.join(STATE_FILE), "x").unwrap();
                keep_aside(&aside, 42).unwrap()
            })
            .collect();
        assert_eq!(
            names,
            [
                "leases.json.corrupt-42",
                "leases.json.corrupt-42-2",
                "leases.json.corrupt-42-3"
            ]
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
