//! Leases and quarantine, kept in one directory per user.
//!
//! - The directory is created 0700; one owned by another user, open to
//!   others, or reached through a symlink is refused.
//! - Every change happens under an exclusive `flock` on `DIR/lock`: a kernel
//!   lock that dies with its holder, so there is no lock file to go stale.
//! - `DIR/leases.json` is replaced atomically (write a temporary file, fsync,
//!   rename). A corrupt or truncated file is reported, kept aside, and the
//!   state is rebuilt from the entries that can still be verified.
//! - A lease belongs to a process identified by pid *and* start time, so a
//!   recycled pid never keeps a dead owner's lease.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The state file's format version.
const VERSION: u32 = 1;

/// A process, identified so that a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    /// `starttime` from /proc/PID/stat, in clock ticks since boot.
    pub start_ticks: u64,
}

impl ProcessId {
    /// The process as it is now, if it is alive: not a zombie, or a zombie
    /// leader whose other threads live on (they still run its code and hold
    /// its files).
    pub fn of(pid: u32) -> Option<ProcessId> {
        let stat = procfs::process::Process::new(pid as i32)
            .ok()?
            .stat()
            .ok()?;
        let dead = stat.state == 'X' || (stat.state == 'Z' && stat.num_threads <= 1);
        if dead {
            return None;
        }
        Some(ProcessId {
            pid,
            start_ticks: stat.starttime,
        })
    }

    /// Whether this very process is still alive.
    pub fn alive(&self) -> bool {
        ProcessId::of(self.pid) == Some(*self)
    }
}

/// One address handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: IpAddr,
    pub owner: ProcessId,
    /// Unix seconds.
    pub acquired: u64,
    /// Processes the lease also lives on in: `run`'s command, so that a
    /// `run` killed while its command runs does not free the address under
    /// the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<ProcessId>,
}

impl Lease {
    /// Whether the owner, or any process the lease lives on in, is alive.
    pub fn alive(&self) -> bool {
        self.owner.alive() || self.holders.iter().any(ProcessId::alive)
    }
}

/// An address that a command left held; `acquire` skips it until an
/// inspection finds it free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub address: IpAddr,
    /// Unix seconds.
    pub since: u64,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
}

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub leases: Vec<Lease>,
    #[serde(default)]
    pub quarantine: Vec<Quarantine>,
}

impl State {
    pub fn lease(&self, address: IpAddr) -> Option<&Lease> {
        self.leases.iter().find(|l| l.address == address)
    }

    pub fn quarantined(&self, address: IpAddr) -> Option<&Quarantine> {
        self.quarantine.iter().find(|q| q.address == address)
    }

    /// Drops leases whose owner is gone; returns them.
    pub fn reclaim(&mut self) -> Vec<Lease> {
        let (alive, dead): (Vec<Lease>, Vec<Lease>) = self.leases.drain(..).partition(Lease::alive);
        self.leases = alive;
        dead
    }
}

/// The state directory, locked for the life of this value.
pub struct Store {
    dir: PathBuf,
    _lock: File,
    /// Said once to the user when the state file had to be rebuilt.
    pub repaired: Option<String>,
}

/// `--state-dir`, else `$SOCKCHECK_STATE_DIR`, else
/// `$XDG_RUNTIME_DIR/sockcheck`, else `$TMPDIR/sockcheck-UID`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SOCKCHECK_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(runtime).join("sockcheck");
    }
    let uid = rustix::process::geteuid().as_raw();
    std::env::temp_dir().join(format!("sockcheck-{uid}"))
}

impl Store {
    /// Opens (creating if needed) and locks the state directory. Blocks
    /// while another sockcheck holds the lock.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let dir = checked_dir(dir)?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(|e| unusable(&dir, format!("cannot open its lock file: {e}")))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::syscall(format!("flock({})", lock_path.display()), e.into()))?;
        Ok(Store {
            dir,
            _lock: lock,
            repaired: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("leases.json")
    }

    /// Reads the state. A corrupt file is kept aside as
    /// `leases.json.corrupt-UNIXTIME` and rebuilt from the entries that
    /// parse; what happened is left in `self.repaired`.
    pub fn load(&mut self) -> Result<State, Error> {
        let path = self.file();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: VERSION,
                    ..State::default()
                });
            }
            Err(e) => return Err(unusable(&self.dir, format!("cannot read leases.json: {e}"))),
        };
        let version = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["version"].as_u64());
        if let Some(newer) = version.filter(|&v| v > u64::from(VERSION)) {
            return Err(unusable(
                &self.dir,
                format!(
                    "leases.json has version {newer}, newer than this sockcheck's \
                     {VERSION}; refusing to overwrite it (use the newer sockcheck, or \
                     another --state-dir)"
                ),
            ));
        }
        match serde_json::from_slice::<State>(&bytes) {
            Ok(state) if state.version == VERSION => Ok(state),
            parsed => {
                let why = match parsed {
                    Ok(state) => format!("unknown version {}", state.version),
                    Err(e) => e.to_string(),
                };
                let (state, kept, dropped) = salvage(&bytes);
                let aside = self.dir.join(format!("leases.json.corrupt-{}", now()));
                let _ = std::fs::rename(&path, &aside);
                self.repaired = Some(format!(
                    "{} was corrupt ({why}); kept it as {} and rebuilt the state from the \
                     {kept} entries that still verify ({dropped} complete entries dropped: \
                     dead owner or duplicate; anything cut off is lost)",
                    path.display(),
                    aside.display()
                ));
                self.save(&state)?;
                Ok(state)
            }
        }
    }

    /// Replaces the state file atomically.
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let path = self.file();
        let temporary = self
            .dir
            .join(format!(".leases.json.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temporary)?;
            let mut text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
            text.push(b'\n');
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            unusable(&self.dir, format!("cannot write leases.json: {e}"))
        })
    }
}

/// Keeps what can be verified from a damaged state file: every complete
/// lease object whose owner is still the same live process, and every
/// complete quarantine entry, wherever they are in the text (a truncated
/// file still holds the entries before the cut). Returns the state, how many
/// entries were kept, and how many were found but dropped.
fn salvage(bytes: &[u8]) -> (State, usize, usize) {
    let mut state = State {
        version: VERSION,
        ..State::default()
    };
    let mut dropped = 0;
    for (at, _) in bytes.iter().enumerate().filter(|&(_, &b)| b == b'{') {
        let mut values = serde_json::Deserializer::from_slice(&bytes[at..]).into_iter::<Lease>();
        if let Some(Ok(lease)) = values.next() {
            if lease.alive() && state.lease(lease.address).is_none() {
                state.leases.push(lease);
            } else {
                dropped += 1;
            }
            continue;
        }
        let mut values =
            serde_json::Deserializer::from_slice(&bytes[at..]).into_iter::<Quarantine>();
        if let Some(Ok(q)) = values.next()
            && state.quarantined(q.address).is_none()
        {
            state.quarantine.push(q);
        }
    }
    let kept = state.leases.len() + state.quarantine.len();
    (state, kept, dropped)
}

/// Creates the directory 0700 if needed, and refuses one that is not ours,
/// is open to others, or is reached through a symlink.
fn checked_dir(dir: &Path) -> Result<PathBuf, Error> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| unusable(dir, e.to_string()))?
            .join(dir)
    };
    match std::fs::symlink_metadata(&absolute) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&absolute)
                .map_err(|e| unusable(&absolute, format!("cannot create it: {e}")))?;
        }
        Err(e) => return Err(unusable(&absolute, e.to_string())),
        Ok(_) => {}
    }
    let meta =
        std::fs::symlink_metadata(&absolute).map_err(|e| unusable(&absolute, e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(unusable(&absolute, "it is a symlink".into()));
    }
    if !meta.is_dir() {
        return Err(unusable(&absolute, "it is not a directory".into()));
    }
    let canonical = absolute
        .canonicalize()
        .map_err(|e| unusable(&absolute, e.to_string()))?;
    if canonical != normalize(&absolute) {
        return Err(unusable(
            &absolute,
            format!(
                "it is reached through a symlink (it is really {})",
                canonical.display()
            ),
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(unusable(
            &absolute,
            format!("it is owned by uid {}, not by us (uid {euid})", meta.uid()),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(unusable(
            &absolute,
            format!(
                "its mode is {:o}; it must be 0700 (chmod 700 it)",
                meta.permissions().mode() & 0o777
            ),
        ));
    }
    if rustix::fs::access(&canonical, rustix::fs::Access::WRITE_OK).is_err() {
        return Err(unusable(&absolute, "it is not writable".into()));
    }
    Ok(canonical)
}

/// `a/./b/../c` → `a/c`, without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn unusable(dir: &Path, why: String) -> Error {
    Error::Usage(format!("state directory {}: {why}", dir.display()))
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sockcheck-state-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn creates_a_private_directory_and_round_trips() {
        let dir = temp("roundtrip");
        let mut store = Store::open(&dir).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let mut state = store.load().unwrap();
        state.leases.push(Lease {
            address: "127.0.0.2".parse().unwrap(),
            owner: ProcessId::of(std::process::id()).unwrap(),
            acquired: 1,
            holders: Vec::new(),
        });
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_symlinks_and_open_directories() {
        let real = temp("real");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&real)
            .unwrap();
        let link = temp("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = Store::open(&link).err().unwrap().to_string();
        assert!(e.contains("symlink"), "{e}");
        let through = link.join("inner");
        let e = Store::open(&through).err().unwrap().to_string();
        assert!(e.contains("symlink"), "{e}");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = Store::open(&real).err().unwrap().to_string();
        assert!(e.contains("0700"), "{e}");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&real).unwrap();
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_and_rebuilt_from_what_verifies() {
        let dir = temp("corrupt");
        let mut store = Store::open(&dir).unwrap();
        let me = ProcessId::of(std::process::id()).unwrap();
        let full = format!(
            r#"{{"version": 1, "leases": [
                {{"address": "127.0.0.2", "owner": {{"pid": {}, "start_ticks": {}}}, "acquired": 1}},
                {{"address": "127.0.0.3", "owner": {{"pid": {}, "start_ticks": 1}}, "acquired": 1}},
                {{"address": "127.0.0.4", "owner": {{"pid": {}, "start_ticks": {}}}, "acquired": 1}}
            ], "quarantine": []}}"#,
            me.pid, me.start_ticks, me.pid, me.pid, me.start_ticks
        );
        // Cut inside the third lease: the live lease before the cut is
        // kept, the dead owner's dropped, the cut one lost.
        let cut = full.find("127.0.0.4").unwrap() + 5;
        std::fs::write(dir.join("leases.json"), &full[..cut]).unwrap();
        let state = store.load().unwrap();
        let kept: Vec<String> = state.leases.iter().map(|l| l.address.to_string()).collect();
        assert_eq!(kept, ["127.0.0.2"]);
        let said = store.repaired.clone().unwrap();
        assert!(
            said.contains("corrupt") && said.contains("the 1 entries"),
            "{said}"
        );
        assert!(said.contains("1 complete entries dropped"), "{said}");
        assert!(std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("leases.json.corrupt-")
        }));
        // What was rebuilt is written back and reads cleanly.
        store.repaired = None;
        assert_eq!(store.load().unwrap(), state);
        assert!(store.repaired.is_none());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_newer_state_file_is_refused_not_overwritten() {
        let dir = temp("newer");
        let mut store = Store::open(&dir).unwrap();
        let text = r#"{"version": 2, "leases": [], "future": true}"#;
        std::fs::write(dir.join("leases.json"), text).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("version 2") && e.contains("refusing"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("leases.json")).unwrap(),
            text
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
