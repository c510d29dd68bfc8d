//! Leases and quarantine, kept in one directory per user.
//!
//! - The directory is opened once ([`StateDir`]) and everything in it is
//!   reached through that descriptor (`openat`, `renameat`, `unlinkat`,
//!   `statat`), never by path again, so it cannot be swapped mid-command.
//! - Only the directory itself is created (0700), never the ones above it: a
//!   missing parent is an error. One owned by another user, open to others,
//!   or reached through a symlink is refused, saying how to recover; so is
//!   one whose parents another user could change (see [`open_parent`]).
//!   Root's default is under /run, where no other user can create it first.
//! - Every failure here is [`Error::State`]: exit status 3.
//! - Every change happens under an exclusive `flock` on `DIR/lock`: a kernel
//!   lock that dies with its holder, so there is no lock file to go stale.
//! - `lock` and `leases.json` must be regular files: a FIFO, device, socket,
//!   directory or symlink in their place is refused, never opened blocking.
//! - `DIR/leases.json` is replaced atomically (write `.leases.json.tmp`,
//!   fsync, rename); a temporary left by a killed writer is removed by the
//!   next lock holder.
//! - A file whose `version` is not 1 is refused and left as it is. A corrupt
//!   or truncated version-1 file is reported, kept aside (under a name no
//!   earlier copy has: `leases.json.corrupt-TIME`, `-TIME-2`...), and the state is
//!   rebuilt, in linear time from at most 16 MiB, from the entries that can
//!   still be verified. An address leased twice keeps its older lease.
//! - A lease belongs to a process identified by pid *and* start time, so a
//!   recycled pid never keeps a dead owner's lease. An owner is gone only
//!   when /proc says so; one that cannot be read keeps its lease
//!   ([`Liveness`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, errno_label};

/// How long a command waits for another to let go of the state lock.
/// Holders keep it for a read and a write (microseconds), never across an
/// inspection.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The state file's format version.
const VERSION: u32 = 1;

/// The most of `leases.json` that is read. A larger file is treated as
/// corrupt: kept aside whole, and the state rebuilt from what this prefix
/// holds (sockcheck writes a few hundred bytes per lease).
const MAX_STATE_FILE: u64 = 16 << 20;

/// The state file, in the state directory.
const STATE_FILE: &str = "leases.json";

/// The file that becomes `leases.json`. Only the lock holder writes it, so
/// whatever is found under this name once the lock is taken was left by a
/// writer that died, and can go.
const TEMPORARY: &str = ".leases.json.tmp";

/// A process, identified so that a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessId {
    pub pid: u32,
    /// `starttime` from /proc/PID/stat, in clock ticks since boot.
    pub start_ticks: u64,
}

/// Whether a process is still the one a lease names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// It runs: same pid, same start time, not a dead zombie.
    Alive,
    /// It is known to be gone: /proc has no such pid (ENOENT, ESRCH), the
    /// pid is another process's now (another start time), or it is a zombie
    /// that no thread keeps running. Only this frees its lease.
    Gone,
    /// It could not be told: /proc/PID/stat could not be read for another
    /// reason (EMFILE, ENFILE, ENOMEM, EACCES, no /proc...) or made no
    /// sense. Why, for the user. A lease whose owner is unknown is kept:
    /// handing its address out a second time is the worse mistake.
    Unknown(String),
}

/// What /proc/PID/stat says of a pid.
enum Probe {
    Running(ProcessId),
    Gone,
    Unknown(String),
}

/// Reads /proc/PID/stat. Fails closed: only an answer about this pid
/// (ENOENT or ESRCH, with /proc itself there; a dead zombie) is `Gone`.
fn probe(pid: u32) -> Probe {
    let path = format!("/proc/{pid}/stat");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
            // ENOENT from a /proc that is not mounted says nothing of the
            // pid. (Asked without opening anything: fds may be what ran out.)
            return match rustix::fs::access("/proc/self/stat", rustix::fs::Access::EXISTS) {
                Ok(()) => Probe::Gone,
                Err(e) => Probe::Unknown(format!("/proc is not readable ({e})")),
            };
        }
        Err(e) => return Probe::Unknown(format!("reading {path} failed: {}", errno_label(&e))),
    };
    // `pid (comm) state ...`: comm may hold anything, so fields are counted
    // from the last ')'.
    let fields = bytes
        .iter()
        .rposition(|&b| b == b')')
        .and_then(|at| std::str::from_utf8(&bytes[at + 1..]).ok())
        .map(|rest| rest.split_ascii_whitespace().collect::<Vec<_>>())
        .unwrap_or_default();
    let (Some(state), Some(threads), Some(start_ticks)) = (
        fields.first(),
        fields.get(17).and_then(|n| n.parse::<i64>().ok()),
        fields.get(19).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        return Probe::Unknown(format!("{path} could not be parsed"));
    };
    let dead = *state == "X" || (*state == "Z" && threads <= 1);
    if dead {
        return Probe::Gone;
    }
    Probe::Running(ProcessId { pid, start_ticks })
}

impl ProcessId {
    /// The process as it is now, if it is alive: not a zombie, or a zombie
    /// leader whose other threads live on (they still run its code and hold
    /// its files). `None` when it is gone *or cannot be read*: whoever asks
    /// for a live process must not get one that may not be (see
    /// [`ProcessId::liveness`] to tell the two apart).
    pub fn of(pid: u32) -> Option<ProcessId> {
        match probe(pid) {
            Probe::Running(id) => Some(id),
            Probe::Gone | Probe::Unknown(_) => None,
        }
    }

    /// Whether this very process still runs, is gone, or cannot be told.
    pub fn liveness(&self) -> Liveness {
        match probe(self.pid) {
            Probe::Running(now) if now == *self => Liveness::Alive,
            Probe::Running(_) | Probe::Gone => Liveness::Gone,
            Probe::Unknown(why) => Liveness::Unknown(why),
        }
    }

    /// Whether this very process is known to be alive.
    pub fn alive(&self) -> bool {
        self.liveness() == Liveness::Alive
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
    /// Alive if the owner or any process the lease lives on in is alive;
    /// else unknown if any of them cannot be told; else gone.
    pub fn liveness(&self) -> Liveness {
        let mut unknown = None;
        for id in std::iter::once(&self.owner).chain(&self.holders) {
            match id.liveness() {
                Liveness::Alive => return Liveness::Alive,
                Liveness::Gone => {}
                Liveness::Unknown(why) => {
                    unknown.get_or_insert(why);
                }
            }
        }
        unknown.map_or(Liveness::Gone, Liveness::Unknown)
    }

    /// Whether the lease stands: its processes are not known to be gone
    /// (alive, or one of them cannot be told). What [`State::reclaim`]
    /// keeps.
    pub fn alive(&self) -> bool {
        self.liveness() != Liveness::Gone
    }
}

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

    /// Drops leases whose owner (and every process they live on in) is
    /// known to be gone; returns them. One whose owner cannot be told
    /// ([`Liveness::Unknown`]) is kept.
    pub fn reclaim(&mut self) -> Vec<Lease> {
        let (alive, dead): (Vec<Lease>, Vec<Lease>) = self.leases.drain(..).partition(Lease::alive);
        self.leases = alive;
        dead
    }
}

/// The state directory, open. Every file in it (the lock, `leases.json`,
/// its temporaries and kept copies, the lease agent's socket) is reached
/// through this descriptor, never by path again: the directory checked is
/// the directory used, whatever is renamed afterwards.
#[derive(Debug)]
pub struct StateDir {
    fd: OwnedFd,
    /// Absolute, without `.`, `..` or symlinks: for messages.
    path: PathBuf,
}

impl StateDir {
    /// Opens `dir`, creating it 0700 if it is missing (it alone: never the
    /// directories above it), after checking the directories above it (see
    /// [`open_parent`]). Refuses a directory that is a symlink, is not ours,
    /// or is open to group or others. Every error is [`Error::State`], one
    /// line that names the directory and what to do.
    pub fn open(dir: &Path) -> Result<StateDir, Error> {
        let path = absolute(dir)?;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(unusable(&path, "it is the root directory".into()));
        };
        let parent_fd = open_parent(&path, parent)?;
        let made = rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o700));
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&parent_fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let why = if is_symlink(&parent_fd, name) {
                    "it is a symlink"
                } else {
                    "it is not a directory"
                };
                return Err(unusable(&path, why.into()));
            }
            Err(Errno::NOENT) => {
                let why = match made {
                    Err(e) => format!("cannot create it: {}", errno_text(e)),
                    Ok(()) => "it vanished as it was created".into(),
                };
                return Err(unusable(&path, why));
            }
            Err(e) => {
                return Err(unusable(
                    &path,
                    format!("cannot open it: {}", errno_text(e)),
                ));
            }
        };
        let stat = rustix::fs::fstat(&fd)
            .map_err(|e| unusable(&path, format!("cannot stat it: {}", errno_text(e))))?;
        let euid = rustix::process::geteuid().as_raw();
        if stat.st_uid != euid {
            return Err(unusable(
                &path,
                format!(
                    "it is owned by uid {}, not by us (uid {euid}), so it may not be trusted; \
                     remove it if nothing of yours is in it, or pass --state-dir DIR or set \
                     SOCKCHECK_STATE_DIR to a directory of your own",
                    stat.st_uid
                ),
            ));
        }
        let mode = stat.st_mode & 0o7777;
        if mode & 0o077 != 0 {
            return Err(unusable(
                &path,
                format!(
                    "its mode is {:o}; it must be 0700 (chmod 700 it)",
                    mode & 0o777
                ),
            ));
        }
        let writable =
            rustix::fs::accessat(&fd, ".", rustix::fs::Access::WRITE_OK, AtFlags::EACCESS);
        if let Err(e) = writable {
            return Err(unusable(
                &path,
                format!("it is not writable ({})", errno_text(e)),
            ));
        }
        Ok(StateDir { fd, path })
    }

    /// The open directory, for `*at` calls.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The directory's absolute path (no symlinks, `.` or `..`): for
    /// messages. Files in it are opened through [`StateDir::fd`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A name for the file `name` in this directory, for an AF_UNIX socket's
    /// `bind` or `connect`: `/proc/self/fd/FD/NAME`, which the kernel
    /// resolves through this descriptor. It is short (a `sun_path` holds 108
    /// bytes, and the directory's own path may be longer) and reaches this
    /// very directory even if its path has been changed since. Valid in this
    /// process only, and only while `self` lives (the descriptor is
    /// close-on-exec); `name` must be a single component.
    pub fn socket_path(&self, name: &str) -> PathBuf {
        debug_assert!(!name.contains('/') && !name.is_empty() && name != "." && name != "..");
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.fd.as_raw_fd()))
    }

    /// Another descriptor for the same directory.
    pub fn try_clone(&self) -> Result<StateDir, Error> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| unusable(&self.path, format!("cannot duplicate its descriptor: {e}")))?;
        Ok(StateDir {
            fd,
            path: self.path.clone(),
        })
    }

    /// `name` in this directory, for messages.
    fn show(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }
}

/// The state directory, locked for the life of this value.
pub struct Store {
    dir: StateDir,
    _lock: File,
    /// Said once to the user when the state file had to be rebuilt.
    pub repaired: Option<String>,
}

/// `--state-dir`, else `$SOCKCHECK_STATE_DIR`, else
/// `$XDG_RUNTIME_DIR/sockcheck`, else, for root, `/run/sockcheck` (when
/// /run is a root-owned directory that only root can write), else
/// `$TMPDIR/sockcheck-UID` (`/tmp` when TMPDIR is unset or empty).
///
/// Root's default is not in /tmp because anyone can create
/// `/tmp/sockcheck-0` first: it would be refused (not root's), and the gate
/// blocked. Nobody but root can create anything in /run.
pub fn default_dir() -> PathBuf {
    default_dir_from(
        &|name| std::env::var_os(name),
        rustix::process::geteuid().as_raw(),
        Path::new("/run"),
    )
}

/// [`default_dir`] for the environment `var`, the effective uid `euid`, and
/// `run` standing for /run.
fn default_dir_from(
    var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    euid: u32,
    run: &Path,
) -> PathBuf {
    let set = |name: &str| var(name).filter(|value| !value.is_empty());
    if let Some(dir) = set("SOCKCHECK_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(runtime) = set("XDG_RUNTIME_DIR") {
        return PathBuf::from(runtime).join("sockcheck");
    }
    if euid == 0 && only_root_creates_in(run) {
        return run.join("sockcheck");
    }
    let temporary = set("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    temporary.join(format!("sockcheck-{euid}"))
}

/// Whether `dir` is a real directory (not a symlink) that root owns, that
/// neither group nor others may write, and that we can write (it is not
/// read-only).
fn only_root_creates_in(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|meta| {
        meta.is_dir()
            && meta.uid() == 0
            && meta.mode() & 0o022 == 0
            && rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
    })
}

impl Store {
    /// Opens (creating if needed) and locks the state directory. Blocks
    /// while another sockcheck holds the lock.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        Store::lock(&StateDir::open(dir)?)
    }

    /// Locks the open state directory (`flock` on its `lock` file, which
    /// the kernel drops when this value, or its process, goes) and sweeps
    /// what killed writers left. Blocks while another sockcheck holds the
    /// lock.
    pub fn lock(dir: &StateDir) -> Result<Store, Error> {
        let dir = dir.try_clone()?;
        let lock = open_regular(&dir, "lock", Access::Lock)?.ok_or_else(|| {
            unusable(dir.path(), "its lock file vanished while opening it".into())
        })?;
        // Bounded: a process that holds the lock and hangs (stopped, say)
        // must not hang every gate command, nor `run` after its command.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(unusable(
                        dir.path(),
                        format!(
                            "another process has held {} for {} s (a sockcheck that is \
                             stopped or hung? `fuser -v` names it)",
                            dir.show("lock"),
                            LOCK_WAIT.as_secs()
                        ),
                    ));
                }
                Err(e) => {
                    return Err(unusable(
                        dir.path(),
                        format!("cannot lock {}: {}", dir.show("lock"), errno_text(e)),
                    ));
                }
            }
        }
        sweep(&dir);
        Ok(Store {
            dir,
            _lock: lock,
            repaired: None,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The open state directory.
    pub fn state_dir(&self) -> &StateDir {
        &self.dir
    }

    /// Reads the state. A corrupt file is kept aside as
    /// `leases.json.corrupt-UNIXTIME` (or `-UNIXTIME-N`, never over an
    /// earlier copy) and rebuilt from the entries that parse; what happened
    /// is left in `self.repaired`.
    pub fn load(&mut self) -> Result<State, Error> {
        let Some(file) = open_regular(&self.dir, STATE_FILE, Access::Read)? else {
            return Ok(State {
                version: VERSION,
                ..State::default()
            });
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unusable(self.dir.path(), format!("cannot read {STATE_FILE}: {e}")))?;
        let too_big = bytes.len() as u64 > MAX_STATE_FILE;
        bytes.truncate(MAX_STATE_FILE as usize);
        match examine(&bytes, too_big, &Lease::alive) {
            Verdict::Sound(state) => Ok(state),
            Verdict::Refused(why) => Err(unusable(self.dir.path(), why)),
            Verdict::Duplicates { state, note } => {
                // Said once: the file is rewritten without them.
                self.repaired = Some(format!("{} {note}", self.dir.show(STATE_FILE)));
                self.save(&state)?;
                Ok(state)
            }
            Verdict::Corrupt {
                state,
                why,
                kept,
                dropped,
            } => {
                let aside = match keep_aside(&self.dir, now()) {
                    Ok(name) => format!("kept it as {}", self.dir.show(&name)),
                    Err(e) => format!("could not keep a copy ({e})"),
                };
                self.repaired = Some(format!(
                    "{} was corrupt ({why}); {aside} and rebuilt the state from the \
                     {kept} entries that still verify ({dropped} complete entries dropped: \
                     dead owner or duplicate; anything cut off is lost)",
                    self.dir.show(STATE_FILE),
                ));
                self.save(&state)?;
                Ok(state)
            }
        }
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
enum Verdict {
    /// A sound version-1 state.
    Sound(State),
    /// Not ours to read or rewrite: the reason, for the user.
    Refused(String),
    /// A sound version-1 state that leased an address more than once (a
    /// hand edit: sockcheck never writes that), with one lease kept per
    /// address, and what was dropped, for the user.
    Duplicates { state: State, note: String },
    /// A damaged version-1 file (or one with no readable version): the
    /// state rebuilt from it, why it was damaged, and how many entries were
    /// kept and dropped.
    Corrupt {
        state: State,
        why: String,
        kept: usize,
        dropped: usize,
    },
}

/// Decides what the bytes of `leases.json` are, without touching the file.
/// `cut`: they are only the first [`MAX_STATE_FILE`] bytes of it.
///
/// The version decides first: a file whose top-level `version` is anything
/// but the integer `1` (`2`, `2.0`, `1e23`, `"1"`, `null`, an object...)
/// was written by another sockcheck, or by hand, and is refused, never
/// rewritten, even if the rest is damaged: it is not ours to repair. Only a
/// file whose version is `1`, or that has no readable version at all
/// (garbage, or cut before the version), is salvaged; the original is kept
/// aside either way.
fn examine(bytes: &[u8], cut: bool, live: &dyn Fn(&Lease) -> bool) -> Verdict {
    if let Version::Other(shown) = top_level_version(bytes) {
        return Verdict::Refused(format!(
            "leases.json has version {shown}, not {VERSION}: another sockcheck (or a hand) \
             wrote it, and this one is refusing to read or rewrite it (use the sockcheck \
             that wrote it, or another --state-dir)"
        ));
    }
    let why = if cut {
        format!("larger than {} MiB", MAX_STATE_FILE >> 20)
    } else {
        match serde_json::from_slice::<State>(bytes) {
            Ok(state) if state.version == VERSION => {
                return match deduplicate(state, live) {
                    (state, None) => Verdict::Sound(state),
                    (state, Some(note)) => Verdict::Duplicates { state, note },
                };
            }
            // Not reached: the scan above saw this version.
            Ok(state) => {
                return Verdict::Refused(format!(
                    "leases.json has version {}, not {VERSION}: refusing to read or \
                     rewrite it (use the sockcheck that wrote it, or another --state-dir)",
                    state.version
                ));
            }
            Err(e) => e.to_string(),
        }
    };
    let (state, kept, dropped) = salvage(bytes, live);
    Verdict::Corrupt {
        state,
        why,
        kept,
        dropped,
    }
}

/// Keeps one lease per address, and one quarantine entry. Which lease:
/// one whose owner lives, before one whose owner is gone; then the older
/// (smaller `acquired`); then the first in the file. The older lease is the
/// one `acquire` would have honoured: the younger could only have been
/// written past the lock, by hand. Keeping one rather than refusing the file
/// keeps the gate working, and the address leased, so nobody else is handed
/// it; the owner whose lease is dropped is named on stderr.
fn deduplicate(mut state: State, live: &dyn Fn(&Lease) -> bool) -> (State, Option<String>) {
    let (kept, dropped) = one_per_address(std::mem::take(&mut state.leases), live);
    state.leases = kept;
    let mut seen = std::collections::HashSet::new();
    let before = state.quarantine.len();
    state.quarantine.retain(|q| seen.insert(q.address));
    let twice_quarantined = before - state.quarantine.len();
    if dropped.is_empty() && twice_quarantined == 0 {
        return (state, None);
    }
    let mut said: Vec<String> = dropped
        .iter()
        .take(3)
        .map(|gone| {
            let kept = state.lease(gone.address).expect("one is kept per address");
            format!(
                "{} kept for pid {} (acquired {}), dropped for pid {} (acquired {})",
                gone.address, kept.owner.pid, kept.acquired, gone.owner.pid, gone.acquired
            )
        })
        .collect();
    if dropped.len() > 3 {
        said.push(format!("and {} more", dropped.len() - 3));
    }
    if twice_quarantined > 0 {
        said.push(format!(
            "{twice_quarantined} duplicate quarantine entries dropped"
        ));
    }
    let note = format!(
        "leased an address more than once (edited by hand?); kept, for each, the \
         lease of a live owner, the oldest, and rewrote the file without the others, \
         whose owners now use the address without a lease: {}",
        said.join("; ")
    );
    (state, Some(note))
}

/// Splits `leases` into one kept per address (see [`deduplicate`]), in
/// their order, and the others. `live` is asked only about duplicates.
fn one_per_address(leases: Vec<Lease>, live: &dyn Fn(&Lease) -> bool) -> (Vec<Lease>, Vec<Lease>) {
    let mut count: std::collections::HashMap<IpAddr, usize> = Default::default();
    for lease in &leases {
        *count.entry(lease.address).or_default() += 1;
    }
    if count.len() == leases.len() {
        return (leases, Vec::new());
    }
    // Per duplicated address, the best (smallest) key: (gone, acquired, index).
    let mut best: std::collections::HashMap<IpAddr, (bool, u64, usize)> = Default::default();
    for (index, lease) in leases.iter().enumerate() {
        if count[&lease.address] > 1 {
            let key = (!live(lease), lease.acquired, index);
            best.entry(lease.address)
                .and_modify(|b| *b = (*b).min(key))
                .or_insert(key);
        }
    }
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for (index, lease) in leases.into_iter().enumerate() {
        match best.get(&lease.address) {
            Some(&(_, _, b)) if b != index => dropped.push(lease),
            _ => kept.push(lease),
        }
    }
    (kept, dropped)
}

/// The top-level `version` of a state file, as far as it can be read.
#[derive(Debug, PartialEq, Eq)]
enum Version {
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
fn top_level_version(bytes: &[u8]) -> Version {
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

/// Removes what writers killed mid-write left: [`TEMPORARY`], and the
/// `.leases.json.PID` files of earlier sockchecks (whose writers, too,
/// wrote only under the lock). Called with the lock held.
fn sweep(dir: &StateDir) {
    let Ok(entries) = rustix::fs::Dir::read_from(dir.fd()) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        let left = name == TEMPORARY
            || name
                .strip_prefix(".leases.json.")
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if left
            && rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) != FileType::Directory)
        {
            let _ = rustix::fs::unlinkat(dir.fd(), name, AtFlags::empty());
        }
    }
}

/// Keeps what can be verified from a damaged state file: every complete
/// lease object whose owner is still the same live process, and every
/// complete quarantine entry, wherever they are in the text (a truncated
/// file still holds the entries before the cut). Returns the state, how many
/// entries were kept, and how many were found but dropped.
///
/// `live` says whether a lease's owner (or whoever else keeps it) lives.
///
/// Linear in the input: see [`candidates`].
fn salvage(bytes: &[u8], live: &dyn Fn(&Lease) -> bool) -> (State, usize, usize) {
    enum Entry {
        Lease(Lease),
        Quarantine(Quarantine),
    }
    let mut found: Vec<(usize, Entry)> = Vec::new();
    // The starts already tried: the second reading skips them (from the
    // same start, both readings see the same object).
    let mut tried = vec![0u64; bytes.len().div_ceil(64)];
    for in_string in [false, true] {
        candidates(bytes, in_string, &mut |start, end| {
            let (word, bit) = (start / 64, 1u64 << (start % 64));
            if tried[word] & bit != 0 {
                return;
            }
            tried[word] |= bit;
            let span = &bytes[start..=end];
            if let Ok(lease) = serde_json::from_slice::<Lease>(span) {
                found.push((start, Entry::Lease(lease)));
            } else if let Ok(q) = serde_json::from_slice::<Quarantine>(span) {
                found.push((start, Entry::Quarantine(q)));
            }
        });
    }
    found.sort_by_key(|&(start, _)| start);
    let mut state = State {
        version: VERSION,
        ..State::default()
    };
    let mut quarantined = std::collections::HashSet::new();
    let mut dropped = 0;
    let mut leases = Vec::new();
    for (_, entry) in found {
        match entry {
            Entry::Lease(lease) => {
                if live(&lease) {
                    leases.push(lease);
                } else {
                    dropped += 1;
                }
            }
            Entry::Quarantine(q) => {
                if quarantined.insert(q.address) {
                    state.quarantine.push(q);
                }
            }
        }
    }
    // All live: of several for one address, the oldest is kept.
    let (leases, twice) = one_per_address(leases, &|_| true);
    state.leases = leases;
    dropped += twice.len();
    let kept = state.leases.len() + state.quarantine.len();
    (state, kept, dropped)
}

/// Nesting deeper than this is counted but not tracked: no entry lies there.
const MAX_TRACKED_DEPTH: usize = 4096;

/// Calls `found(start, end)` for every object `bytes[start..=end]` that could
/// be a lease or a quarantine entry: a balanced `{...}` holding at most two
/// levels of nesting (a lease's `owner`, or a list of processes). One pass,
/// no backtracking.
///
/// Each byte lies in at most three such objects (a fourth, enclosing them,
/// would hold three levels), so parsing each candidate as a lease and as a
/// quarantine entry reads each byte at most six times per reading, twelve
/// for both: recovery is linear, whatever the input. Nesting is counted,
/// not stored, past [`MAX_TRACKED_DEPTH`], so memory is bounded too.
///
/// Strings are tracked so that braces inside them do not count. A damaged
/// quote inverts that reading for the rest of the line, so the caller runs
/// this once assuming the text starts outside a string and once inside; the
/// state is reset at every newline (a JSON string cannot hold a raw one, and
/// sockcheck writes one key per line).
fn candidates(bytes: &[u8], starts_in_string: bool, found: &mut dyn FnMut(usize, usize)) {
    struct Frame {
        start: usize,
        object: bool,
        /// It holds three levels of nesting or more: not an entry.
        deep: bool,
    }
    /// What a byte is to this scanner: 0 nothing, else one of these.
    const NEWLINE: u8 = 1;
    const QUOTE: u8 = 2;
    const BACKSLASH: u8 = 3;
    const OPEN: u8 = 4;
    const CLOSE: u8 = 5;
    const CLASS: [u8; 256] = {
        let mut class = [0u8; 256];
        class[b'\n' as usize] = NEWLINE;
        class[b'"' as usize] = QUOTE;
        class[b'\\' as usize] = BACKSLASH;
        class[b'{' as usize] = OPEN;
        class[b'[' as usize] = OPEN;
        class[b'}' as usize] = CLOSE;
        class[b']' as usize] = CLOSE;
        class
    };
    let mut frames: Vec<Frame> = Vec::new();
    // frames[i] is the open bracket at depth i + 1.
    let mut depth: usize = 0;
    let mut in_string = starts_in_string;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        match CLASS[usize::from(byte)] {
            0 => {}
            NEWLINE => in_string = starts_in_string,
            QUOTE => in_string = !in_string,
            // An escape: skip the escaped byte, unless it is a newline.
            BACKSLASH if in_string && bytes.get(at + 1).is_some_and(|&b| b != b'\n') => at += 1,
            _ if in_string => {}
            OPEN => {
                depth += 1;
                if depth <= MAX_TRACKED_DEPTH {
                    frames.push(Frame {
                        start: at,
                        object: byte == b'{',
                        deep: false,
                    });
                }
                // The bracket three levels up now holds three levels.
                if let Some(outer) = depth.checked_sub(4)
                    && let Some(frame) = frames.get_mut(outer)
                {
                    frame.deep = true;
                }
            }
            CLOSE if depth > 0 => {
                if depth <= MAX_TRACKED_DEPTH
                    && let Some(frame) = frames.pop()
                    && frame.object
                    && !frame.deep
                    && byte == b'}'
                {
                    found(frame.start, at);
                }
                depth -= 1;
            }
            _ => {}
        }
        at += 1;
    }
}

/// How a file in the state directory is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `leases.json`: read only; a missing file is `None`.
    Read,
    /// `lock`: created if missing, opened for writing (flock needs no more).
    Lock,
}

/// Opens `dir/name` if it is a regular file, and refuses anything else
/// (FIFO, socket, device, directory, symlink) with a line that says what it
/// is and how to recover: a FIFO would block the open or the read forever,
/// while this process holds the lock, and so every gate command.
///
/// It is checked before opening (so that no device is opened), opened with
/// `O_NONBLOCK | O_NOFOLLOW` (so that a swap in between cannot block or
/// lead elsewhere), and checked again on the open file.
fn open_regular(dir: &StateDir, name: &str, access: Access) -> Result<Option<File>, Error> {
    let kind_of = |name: &str| {
        rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| FileType::from_raw_mode(st.st_mode))
    };
    match kind_of(name) {
        Ok(FileType::RegularFile) => {}
        Ok(kind) => return Err(not_regular(dir, name, kind)),
        Err(Errno::NOENT) => {
            if access == Access::Read {
                return Ok(None);
            }
        }
        Err(e) => {
            return Err(unusable(
                dir.path(),
                format!("cannot stat {name}: {}", errno_text(e)),
            ));
        }
    }
    let flags = OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC;
    let flags = match access {
        Access::Read => flags | OFlags::RDONLY,
        Access::Lock => flags | OFlags::WRONLY | OFlags::CREATE,
    };
    let file = match rustix::fs::openat(dir.fd(), name, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => File::from(fd),
        Err(Errno::NOENT) if access == Access::Read => return Ok(None),
        Err(e) => {
            // Replaced since the check: ELOOP for a symlink, ENXIO for a
            // FIFO without a reader or a socket.
            if let Ok(kind) = kind_of(name)
                && kind != FileType::RegularFile
            {
                return Err(not_regular(dir, name, kind));
            }
            return Err(unusable(
                dir.path(),
                format!("cannot open {name}: {}", errno_text(e)),
            ));
        }
    };
    let stat = rustix::fs::fstat(&file)
        .map_err(|e| unusable(dir.path(), format!("cannot stat {name}: {}", errno_text(e))))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(not_regular(dir, name, kind));
    }
    Ok(Some(file))
}

fn not_regular(dir: &StateDir, name: &str, kind: FileType) -> Error {
    let kind = match kind {
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        _ => "not a file",
    };
    let holds = if name == "lock" {
        "it holds no data"
    } else {
        "it holds no leases"
    };
    unusable(
        dir.path(),
        format!(
            "{name} is {kind}, not a regular file, so sockcheck will not open it \
             (it could block every gate command); remove {} ({holds}), or use another \
             --state-dir",
            dir.show(name)
        ),
    )
}

/// `dir` made absolute (from the current directory) and without `.` or
/// `..`, lexically: no component may be a symlink (see [`open_parent`]), so
/// this is the path the kernel resolves.
fn absolute(dir: &Path) -> Result<PathBuf, Error> {
    let joined = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| unusable(dir, format!("cannot find the current directory: {e}")))?
            .join(dir)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Opens `parent`, the directory above the state directory `dir`, walking
/// down from `/` one component at a time, each opened relative to the one
/// above with `O_PATH | O_DIRECTORY | O_NOFOLLOW` (so no symlink is
/// followed anywhere, and nothing above is created), and checks *every*
/// directory on the way, `/` and `parent` included:
///
/// - it is owned by us or by root, and
/// - neither group nor others may write it, unless it is sticky (like
///   /tmp: others may add names there, but not move or remove ours).
///
/// Why: whoever can write a directory on the path can rename what is below
/// it, and put a directory of their own, or an empty one, in its place.
/// The next sockcheck would then find no leases, and hand out an address a
/// second time (the reproduced case: root run with another user's
/// `XDG_RUNTIME_DIR`, by `su` without `-` or `sudo -E`; that user moved
/// root's `sockcheck` directory away). Checking the direct parent stops
/// the user who owns it; checking each one above stops one who owns a
/// grandparent and swaps the whole branch.
fn open_parent(dir: &Path, parent: &Path) -> Result<OwnedFd, Error> {
    let euid = rustix::process::geteuid().as_raw();
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut here = PathBuf::from("/");
    let mut fd = rustix::fs::open("/", flags, Mode::empty())
        .map_err(|e| unusable(dir, format!("cannot open /: {}", errno_text(e))))?;
    check_above(dir, &here, &fd, euid)?;
    for part in parent.components() {
        let Component::Normal(name) = part else {
            continue;
        };
        let next = rustix::fs::openat(&fd, name, flags, Mode::empty());
        let joined = here.join(name);
        let above = std::mem::replace(&mut here, joined);
        fd = match next {
            Ok(next) => next,
            Err(Errno::NOENT) => {
                return Err(unusable(
                    dir,
                    format!(
                        "{} does not exist, and sockcheck creates only the state directory \
                         itself, not the directories above it: create {} first, or pass \
                         --state-dir DIR or set SOCKCHECK_STATE_DIR to a directory whose \
                         parent exists",
                        here.display(),
                        parent.display()
                    ),
                ));
            }
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let why = if is_symlink(&fd, name) {
                    format!(
                        "it is reached through a symlink ({} is one; pass the real path)",
                        here.display()
                    )
                } else {
                    format!("{} is not a directory", here.display())
                };
                return Err(unusable(dir, why));
            }
            Err(e) => {
                return Err(unusable(
                    dir,
                    format!(
                        "cannot open {} (in {}): {}",
                        here.display(),
                        above.display(),
                        errno_text(e)
                    ),
                ));
            }
        };
        check_above(dir, &here, &fd, euid)?;
    }
    Ok(fd)
}

/// One directory above the state directory: see [`open_parent`].
fn check_above(dir: &Path, here: &Path, fd: &OwnedFd, euid: u32) -> Result<(), Error> {
    let stat = rustix::fs::fstat(fd).map_err(|e| {
        unusable(
            dir,
            format!("cannot stat {}: {}", here.display(), errno_text(e)),
        )
    })?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind == FileType::Symlink {
        return Err(unusable(
            dir,
            format!(
                "it is reached through a symlink ({} is one; pass the real path)",
                here.display()
            ),
        ));
    }
    if kind != FileType::Directory {
        return Err(unusable(
            dir,
            format!("{} is not a directory", here.display()),
        ));
    }
    let mode = stat.st_mode & 0o7777;
    let way_out = "so another user could move the state directory away and have an address \
                   leased twice; pass --state-dir DIR or set SOCKCHECK_STATE_DIR to a directory \
                   whose parents only you or root may change (as root under sudo or su, do not \
                   keep the caller's XDG_RUNTIME_DIR)";
    if stat.st_uid != euid && stat.st_uid != 0 {
        return Err(unusable(
            dir,
            format!(
                "{} is owned by uid {}, neither us (uid {euid}) nor root, {way_out}",
                here.display(),
                stat.st_uid
            ),
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(unusable(
            dir,
            format!(
                "{} is writable by {} (mode {mode:o}) and not sticky, {way_out}",
                here.display(),
                if mode & 0o002 != 0 {
                    "others"
                } else {
                    "its group"
                },
            ),
        ));
    }
    Ok(())
}

/// Whether `name` in `parent` is a symlink (when opening it as a directory
/// failed with ELOOP or ENOTDIR).
fn is_symlink(parent: &OwnedFd, name: &OsStr) -> bool {
    rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// `EACCES (Permission denied)`: the name people search for, and what it
/// means.
fn errno_text(e: Errno) -> String {
    let e = std::io::Error::from(e);
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    match e.raw_os_error().map(crate::error::errno_name) {
        Some(name) if name != "errno" => format!("{name} ({text})"),
        _ => text.to_string(),
    }
}

fn unusable(dir: &Path, why: String) -> Error {
    Error::State(format!("state directory {}: {why}", dir.display()))
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
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    fn is_state_error(e: &Error) -> bool {
        matches!(e, Error::State(_))
    }

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
    fn only_a_file_without_a_readable_version_or_with_version_1_is_salvaged() {
        let live = |_: &Lease| true;
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
            let verdict = examine(text.as_bytes(), false, &live);
            assert!(
                matches!(verdict, Verdict::Corrupt { .. }),
                "{text}: {verdict:?}"
            );
        }
        let sound = examine(br#"{"version": 1, "leases": []}"#, false, &live);
        assert!(matches!(sound, Verdict::Sound(_)));
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn a_fifo_as_the_state_file_is_refused_not_waited_on() {
        for name in ["leases.json", "lock"] {
            let dir = temp(&format!("fifo-{name}"));
            drop(Store::open(&dir).unwrap());
            let _ = std::fs::remove_file(dir.join(name));
            mkfifo(&dir.join(name));
            // Were it opened blocking, this would never return.
            let e = Store::open(&dir).and_then(|mut store| store.load());
            let e = e.unwrap_err();
            assert!(is_state_error(&e), "{e}");
            let e = e.to_string();
            assert!(
                e.contains(&format!("{name} is a FIFO"))
                    && e.contains("remove")
                    && !e.contains('\n'),
                "{e}"
            );
            std::fs::remove_file(dir.join(name)).unwrap();
            std::fs::create_dir(dir.join(name)).unwrap();
            let e = Store::open(&dir).and_then(|mut store| store.load());
            assert!(e.unwrap_err().to_string().contains("is a directory"));
            std::fs::remove_dir(dir.join(name)).unwrap();
            std::os::unix::fs::symlink("/etc/hostname", dir.join(name)).unwrap();
            let e = Store::open(&dir).and_then(|mut store| store.load());
            assert!(e.unwrap_err().to_string().contains("is a symlink"));
            std::fs::remove_file(dir.join(name)).unwrap();
            Store::open(&dir).unwrap().load().unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn an_oversized_state_file_is_read_no_further_than_the_bound() {
        let dir = temp("oversized");
        let mut store = Store::open(&dir).unwrap();
        let me = ProcessId::of(std::process::id()).unwrap();
        let mut text = format!(
            r#"{{"version": 1, "leases": [{{"address": "127.0.0.2", "owner": {{"pid": {}, "start_ticks": {}}}, "acquired": 1}}], "pad": ""#,
            me.pid, me.start_ticks
        )
        .into_bytes();
        text.resize(MAX_STATE_FILE as usize + 10, b' ');
        text.extend_from_slice(b"\"}\n");
        std::fs::write(dir.join("leases.json"), &text).unwrap();
        let state = store.load().unwrap();
        assert_eq!(state.leases.len(), 1);
        let said = store.repaired.clone().unwrap();
        assert!(said.contains("larger than 16 MiB"), "{said}");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
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

    /// CPU seconds that one salvage of `bytes` takes.
    fn salvage_seconds(bytes: &[u8]) -> f64 {
        let started = cpu_seconds();
        let _ = salvage(bytes, &|_| true);
        cpu_seconds() - started
    }

    #[test]
    fn salvage_is_linear() {
        // The old salvage re-parsed from every `{`: 48 s and 13.5 s.
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
            let seconds = salvage_seconds(&bytes);
            println!("salvage of {name}: {seconds:.3} s of CPU");
            // The issue's two shapes must be fast; the 16 MiB ones (the
            // most that is read) must only not blow up.
            let limit = if i < 2 { limit } else { limit * 5.0 };
            assert!(seconds < limit, "salvage of {name} took {seconds:.1} s");
        }
        // And it keeps what it should: every lease, once.
        let text = format!("[{lease}, {lease}\n, garbage {{{{ {lease}");
        let (state, kept, dropped) = salvage(text.as_bytes(), &|_| true);
        assert_eq!((state.leases.len(), kept, dropped), (1, 1, 2));
    }

    #[test]
    fn temp_files_are_swept() {
        let dir = temp("sweep");
        drop(Store::open(&dir).unwrap());
        // What writers killed mid-write leave, in the old form and the new.
        for name in [".leases.json.4242", ".leases.json.17", TEMPORARY] {
            std::fs::write(dir.join(name), "{").unwrap();
        }
        mkfifo(&dir.join(".leases.json.99"));
        // Not ours: kept.
        for name in [".leases.json.x", ".leases.json.", "leases.json.corrupt-1"] {
            std::fs::write(dir.join(name), "{").unwrap();
        }
        let mut store = Store::open(&dir).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".leases.json.",
                ".leases.json.x",
                "leases.json.corrupt-1",
                "lock"
            ]
        );
        // A save leaves no temporary behind, even over a stale one.
        std::fs::write(dir.join(TEMPORARY), "stale").unwrap();
        let state = store.load().unwrap();
        store.save(&state).unwrap();
        assert!(!dir.join(TEMPORARY).exists());
        assert_eq!(store.load().unwrap(), state);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn lease(address: &str, owner: ProcessId, acquired: u64) -> Lease {
        Lease {
            address: address.parse().unwrap(),
            owner,
            acquired,
            holders: Vec::new(),
        }
    }

    #[test]
    fn two_live_owners_of_one_address_keep_the_older_lease_and_say_so_once() {
        let dir = temp("duplicates");
        let mut store = Store::open(&dir).unwrap();
        let me = ProcessId::of(std::process::id()).unwrap();
        let parent = ProcessId::of(std::os::unix::process::parent_id()).unwrap();
        let gone = ProcessId {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        let state = State {
            version: VERSION,
            leases: vec![
                lease("127.0.0.2", me, 200),
                lease("127.0.0.3", me, 1),
                lease("127.0.0.2", parent, 100),
                // Older, but its owner is gone: a live lease wins.
                lease("127.0.0.2", gone, 50),
            ],
            quarantine: vec![],
        };
        std::fs::write(
            dir.join("leases.json"),
            serde_json::to_vec_pretty(&state).unwrap(),
        )
        .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded.leases,
            [lease("127.0.0.3", me, 1), lease("127.0.0.2", parent, 100)]
        );
        let said = store.repaired.take().unwrap();
        assert!(
            said.contains(&format!(
                "127.0.0.2 kept for pid {} (acquired 100), dropped for pid {} (acquired 200)",
                parent.pid, me.pid
            )) && !said.contains('\n'),
            "{said}"
        );
        // Rewritten: said once.
        assert_eq!(store.load().unwrap(), loaded);
        assert!(store.repaired.is_none());
        // A salvage keeps the older of two live leases too.
        let text = serde_json::to_string(&state).unwrap();
        let (salvaged, _, dropped) = salvage(&text.as_bytes()[1..], &|l| l.owner != gone);
        assert_eq!(salvaged.leases, loaded.leases);
        assert_eq!(dropped, 2);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_last_component_is_created() {
        let base = temp("last-component");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&base)
            .unwrap();
        let deep = base.join("missing").join("sd");
        let e = StateDir::open(&deep).unwrap_err();
        assert!(is_state_error(&e), "{e}");
        let e = e.to_string();
        assert!(
            e.starts_with(&format!("state directory {}: ", deep.display()))
                && e.contains(&format!(
                    "{} does not exist",
                    base.join("missing").display()
                ))
                && e.contains("creates only the state directory")
                && !e.contains('\n'),
            "{e}"
        );
        assert!(!base.join("missing").exists(), "a parent was created");
        // With the parent there, the directory itself is made, 0700.
        std::fs::create_dir(base.join("missing")).unwrap();
        let dir = StateDir::open(&deep).unwrap();
        assert_eq!(dir.path(), deep);
        let meta = std::fs::symlink_metadata(&deep).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        // `.` and `..` are resolved before anything is opened.
        let roundabout = base.join("missing/./x/../sd");
        assert_eq!(StateDir::open(&roundabout).unwrap().path(), deep);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_parent_others_may_change_is_refused() {
        let base = temp("open-parent");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&base)
            .unwrap();
        let parent = base.join("parent");
        std::fs::create_dir(&parent).unwrap();
        let dir = parent.join("sd");
        for (mode, said) in [
            (0o777, "writable by others"),
            (0o775, "writable by its group"),
        ] {
            std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = StateDir::open(&dir).unwrap_err();
            assert!(is_state_error(&e), "{e}");
            let e = e.to_string();
            assert!(
                e.contains(&format!(
                    "{} is {said} (mode {mode:o}) and not sticky",
                    parent.display()
                )) && e.contains("leased twice")
                    && e.contains("--state-dir DIR"),
                "{e}"
            );
            assert!(!dir.exists(), "created under mode {mode:o}");
        }
        // A grandparent counts as much as the parent.
        let inner = parent.join("inner");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::open(&inner.join("sd")).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{} is writable by others", parent.display())),
            "{e}"
        );
        // Sticky, like /tmp: others may add names, not move ours.
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
        StateDir::open(&dir).unwrap();
        StateDir::open(&inner.join("sd")).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_state_directory_is_used_through_one_descriptor() {
        let base = temp("one-fd");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&base)
            .unwrap();
        let path = base.join("sd");
        let dir = StateDir::open(&path).unwrap();
        let mut store = Store::lock(&dir).unwrap();
        let state = store.load().unwrap();
        // Renamed after it was opened: the store keeps using the directory
        // it checked, and nothing appears under the old name.
        let moved = base.join("moved");
        std::fs::rename(&path, &moved).unwrap();
        store.save(&state).unwrap();
        assert!(moved.join(STATE_FILE).is_file());
        assert!(!path.exists());
        drop(store);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn socket_path_binds_and_connects_past_the_path_length_limit() {
        use std::os::unix::net::{UnixListener, UnixStream};
        let base = temp("socket");
        // Deeper than a sun_path (108 bytes) can name.
        let mut path = base.clone();
        while path.as_os_str().len() < 150 {
            path.push("a-directory-with-a-long-name");
        }
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(path.parent().unwrap())
            .unwrap();
        let dir = StateDir::open(&path).unwrap();
        assert!(UnixListener::bind(dir.path().join("agent.sock")).is_err());
        let name = dir.socket_path("agent.sock");
        assert!(name.starts_with("/proc/self/fd/"), "{}", name.display());
        assert!(name.as_os_str().len() < 108);
        let listener = UnixListener::bind(&name).unwrap();
        // The socket is in the state directory itself.
        let made = rustix::fs::statat(dir.fd(), "agent.sock", AtFlags::SYMLINK_NOFOLLOW).unwrap();
        assert_eq!(FileType::from_raw_mode(made.st_mode), FileType::Socket);
        assert!(path.join("agent.sock").exists());
        let mut client = UnixStream::connect(&name).unwrap();
        let (mut served, _) = listener.accept().unwrap();
        client.write_all(b"lease?").unwrap();
        let mut got = [0u8; 6];
        served.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"lease?");
        drop(dir);
        std::fs::remove_dir_all(&base).unwrap();
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

    #[test]
    fn gone_is_only_a_missing_pid_another_start_time_or_a_dead_zombie() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert_eq!(me.liveness(), Liveness::Alive);
        let recycled = ProcessId {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        assert_eq!(recycled.liveness(), Liveness::Gone);
        let never = ProcessId {
            pid: u32::MAX,
            start_ticks: 1,
        };
        assert_eq!(never.liveness(), Liveness::Gone);
        // A zombie: exited, not yet waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let zombie = ProcessId::of(child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ProcessId::of(child.id()).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Some(zombie) = zombie {
            assert_eq!(zombie.liveness(), Liveness::Gone);
        }
        child.wait().unwrap();
        let mut state = State {
            version: VERSION,
            leases: vec![lease("127.0.0.2", me, 1), lease("127.0.0.3", recycled, 1)],
            quarantine: vec![],
        };
        let reclaimed = state.reclaim();
        assert_eq!(reclaimed, [lease("127.0.0.3", recycled, 1)]);
        assert_eq!(state.leases, [lease("127.0.0.2", me, 1)]);
    }

    /// Set for [`liveness_under_emfile`] when it runs in a process of its
    /// own.
    const EMFILE_HELPER: &str = "SOCKCHECK_TEST_LIVENESS_UNDER_EMFILE";

    #[test]
    fn an_owner_that_cannot_be_read_keeps_its_lease() {
        // In a process of its own: the open-files limit is the process's.
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "gate::state::tests::liveness_under_emfile",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(EMFILE_HELPER, "1")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && said.contains("kept under EMFILE"),
            "{said}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// With no file descriptor left (the soft RLIMIT_NOFILE at the lowest
    /// free one), /proc/PID/stat cannot be opened: every owner's liveness
    /// is unknown, and reclaim keeps every lease, the live owner's and the
    /// recycled pid's alike. Does nothing unless [`EMFILE_HELPER`] is set.
    #[test]
    fn liveness_under_emfile() {
        if std::env::var_os(EMFILE_HELPER).is_none() {
            return;
        }
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let me = ProcessId::of(std::process::id()).unwrap();
        let recycled = ProcessId {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        let leases = vec![lease("127.0.0.2", me, 1), lease("127.0.0.3", recycled, 1)];
        let mut state = State {
            version: VERSION,
            leases: leases.clone(),
            quarantine: vec![],
        };
        let lowest_free = File::open("/dev/null").unwrap().as_raw_fd() as u64;
        let before = getrlimit(Resource::Nofile);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(lowest_free),
                maximum: before.maximum,
            },
        )
        .unwrap();
        let opened = File::open("/dev/null").map(drop);
        let (liveness, lease_liveness) = (me.liveness(), state.leases[1].liveness());
        let reclaimed = state.reclaim();
        let of = ProcessId::of(me.pid);
        setrlimit(Resource::Nofile, before).unwrap();
        assert_eq!(
            opened.unwrap_err().raw_os_error(),
            Some(libc::EMFILE),
            "the limit did not bite"
        );
        let Liveness::Unknown(why) = &liveness else {
            panic!("{liveness:?}");
        };
        assert!(why.contains("EMFILE") && why.contains("/proc/"), "{why}");
        assert!(matches!(lease_liveness, Liveness::Unknown(_)));
        assert!(reclaimed.is_empty(), "reclaimed {reclaimed:?}");
        assert_eq!(state.leases, leases);
        // Asked for a live process, it gives none rather than a guess.
        assert_eq!(of, None);
        println!("kept under EMFILE: {why}");
    }

    /// Runs `args` as nobody; `None` when that is not possible here.
    fn as_nobody(args: &[&std::ffi::OsStr]) -> Option<bool> {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()
            .map(|status| status.success())
    }

    #[test]
    fn root_default_dir_is_not_creatable_by_others() {
        let base = temp("default");
        let (run, tmp) = (base.join("run"), base.join("tmp"));
        for (dir, mode) in [(&base, 0o755), (&run, 0o755), (&tmp, 0o1777)] {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let env = |vars: &'static [(&'static str, &'static str)]| {
            let tmp = tmp.clone();
            move |name: &str| -> Option<std::ffi::OsString> {
                if name == "TMPDIR" {
                    return Some(tmp.clone().into());
                }
                vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.into())
            }
        };
        // The variables come first, for root too; empty ones are unset.
        let given = env(&[("SOCKCHECK_STATE_DIR", "/s"), ("XDG_RUNTIME_DIR", "/x")]);
        assert_eq!(default_dir_from(&given, 0, &run), Path::new("/s"));
        let given = env(&[("SOCKCHECK_STATE_DIR", ""), ("XDG_RUNTIME_DIR", "/x")]);
        assert_eq!(default_dir_from(&given, 0, &run), Path::new("/x/sockcheck"));
        assert_eq!(
            default_dir_from(&env(&[]), 1000, &run),
            tmp.join("sockcheck-1000")
        );
        assert_eq!(
            default_dir_from(&|_| None, 1000, &run),
            Path::new("/tmp/sockcheck-1000")
        );
        println!(
            "this machine's root default: {}",
            default_dir_from(&|_| None, 0, Path::new("/run")).display()
        );
        if !rustix::process::geteuid().is_root() {
            println!("skipped the rest: needs root, to own a directory as root and act as nobody");
            std::fs::remove_dir_all(&base).unwrap();
            return;
        }
        // Root's default is in the root-owned run directory...
        assert_eq!(default_dir_from(&env(&[]), 0, &run), run.join("sockcheck"));
        match as_nobody(&["mkdir".as_ref(), run.join("sockcheck").as_os_str()]) {
            None => println!("skipped acting as nobody: no setpriv"),
            Some(created) => {
                // ...where nobody cannot create it first, as it could in /tmp.
                assert!(
                    !created,
                    "nobody created {}",
                    run.join("sockcheck").display()
                );
                let squatted = tmp.join("sockcheck-0");
                assert_eq!(
                    as_nobody(&["mkdir".as_ref(), squatted.as_os_str()]),
                    Some(true)
                );
                // Were run open to others, root would fall back to TMPDIR,
                // and a squatted directory is refused with a way out.
                std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o1777)).unwrap();
                assert_eq!(default_dir_from(&env(&[]), 0, &run), squatted);
                let e = Store::open(&squatted).err().unwrap();
                assert!(is_state_error(&e), "{e}");
                let e = e.to_string();
                assert!(
                    e.contains("owned by uid 65534")
                        && e.contains("remove it")
                        && e.contains("--state-dir DIR")
                        && e.contains("SOCKCHECK_STATE_DIR"),
                    "{e}"
                );
            }
        }
        // A symlink to a root-owned directory does not qualify.
        let link = base.join("link");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&run, &link).unwrap();
        assert_eq!(
            default_dir_from(&env(&[]), 0, &link),
            tmp.join("sockcheck-0")
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}

/// A property test of the state-file parser (issue 9, "a fuzz target for
/// every parser that reads outside input"): a fixed seed, 10^5 inputs
/// (`SOCKCHECK_FUZZ_CASES` for more) mixing valid files, mutations of them,
/// wrong versions, nesting bombs, huge numbers and random bytes, through
/// [`examine`] (the whole decision, without the file system) and, for one
/// in a thousand, through [`Store::load`] on a real file.
#[cfg(test)]
mod fuzz {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::time::{Duration, Instant};

    /// The property tests' splitmix64, under a short name.
    use crate::text::SplitMix64 as Rng;

    /// The fake liveness: no /proc, and deterministic.
    fn live(lease: &Lease) -> bool {
        !lease.owner.start_ticks.is_multiple_of(3)
    }

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

    fn state(rng: &mut Rng, unique: bool) -> State {
        let leases = (0..rng.index(8))
            .map(|i| Lease {
                address: address(rng, i, unique),
                owner: ProcessId {
                    pid: rng.number() as u32,
                    start_ticks: rng.number(),
                },
                acquired: rng.number(),
                holders: Vec::new(),
            })
            .collect();
        let quarantine = (0..rng.index(4))
            .map(|i| Quarantine {
                address: address(rng, i + 100, unique),
                since: rng.number(),
                reason: text(rng),
                report: rng.chance(50).then(|| PathBuf::from(text(rng))),
            })
            .collect();
        State {
            version: VERSION,
            leases,
            quarantine,
        }
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
            Verdict::Corrupt { state, kept, .. } => {
                assert!(
                    state.leases.iter().all(live),
                    "salvage kept a gone owner's lease"
                );
                assert_eq!(*kept, state.leases.len() + state.quarantine.len());
                state
            }
        };
        assert!(
            !matches!(version, Version::Other(_)),
            "a file with version {version:?} was not refused"
        );
        assert_eq!(state.version, VERSION);
        assert!(
            unique(&state.leases, |l| l.address),
            "two leases for one address"
        );
        assert!(unique(&state.quarantine, |q| q.address));
        // What would be written back reads back the same, cleanly.
        let written = serde_json::to_vec_pretty(state).unwrap();
        match examine(&written, false, &live) {
            Verdict::Sound(again) => assert_eq!(&again, state),
            other => panic!("what was kept does not read back: {other:?}"),
        }
    }

    /// Verdicts seen: sound, duplicates, refused, corrupt, corrupt with
    /// entries kept.
    type Seen = [usize; 5];

    fn one_case(rng: &mut Rng, kind: usize, seen: &mut Seen) -> Vec<u8> {
        let bytes = match kind {
            0 | 1 => {
                // A valid file round-trips.
                let original = state(rng, true);
                let bytes = serialize(rng, &original);
                match examine(&bytes, false, &live) {
                    Verdict::Sound(read) => assert_eq!(read, original),
                    other => panic!("a valid file was not sound: {other:?}"),
                }
                bytes
            }
            2 => {
                // One lease per address, the oldest live one.
                let original = state(rng, false);
                let bytes = serialize(rng, &original);
                let verdict = examine(&bytes, false, &live);
                let (Verdict::Sound(read) | Verdict::Duplicates { state: read, .. }) = &verdict
                else {
                    panic!("{verdict:?}");
                };
                let mut best: HashMap<IpAddr, (bool, u64)> = HashMap::new();
                for l in &original.leases {
                    let key = (!live(l), l.acquired);
                    best.entry(l.address)
                        .and_modify(|b| *b = (*b).min(key))
                        .or_insert(key);
                }
                for l in &read.leases {
                    assert_eq!(best[&l.address], (!live(l), l.acquired));
                }
                assert_eq!(read.leases.len(), best.len());
                bytes
            }
            3 => {
                let bytes = wrong_version(rng);
                let verdict = examine(&bytes, false, &live);
                assert!(
                    matches!(verdict, Verdict::Refused(_)),
                    "a wrong version was not refused: {}: {verdict:?}",
                    String::from_utf8_lossy(&bytes)
                );
                bytes
            }
            4 | 5 => {
                let valid = {
                    let unique = rng.chance(80);
                    valid(rng, unique)
                };
                mutate(rng, valid)
            }
            6 => bomb(rng),
            7 => huge_numbers(rng),
            _ => random_bytes(rng),
        };
        let cut = rng.chance(1);
        let verdict = examine(&bytes, cut, &live);
        check(&bytes, &verdict);
        match verdict {
            Verdict::Sound(_) => seen[0] += 1,
            Verdict::Duplicates { .. } => seen[1] += 1,
            Verdict::Refused(_) => seen[2] += 1,
            Verdict::Corrupt { kept, .. } => {
                seen[3] += 1;
                seen[4] += usize::from(kept > 0);
            }
        }
        bytes
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
        let mut seen: Seen = [0; 5];
        for case in 0..cases {
            let kind = rng.index(10);
            let one = Instant::now();
            let bytes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                one_case(&mut rng, kind, &mut seen)
            }))
            .unwrap_or_else(|_| panic!("case {case} (kind {kind}) failed; see above"));
            let took = one.elapsed();
            if took > slowest.0 {
                slowest = (took, case);
            }
            assert!(took < Duration::from_secs(1), "case {case} took {took:?}");
            // One in a thousand through the real file.
            if case % 1000 == 0 || (kind == 3 && case % 100 == 0) {
                let path = dir.join("leases.json");
                std::fs::write(&path, &bytes).unwrap();
                store.repaired = None;
                match store.load() {
                    Ok(state) => {
                        assert!(unique(&state.leases, |l| l.address));
                        assert_eq!(store.load().unwrap(), state);
                    }
                    Err(e) => {
                        assert!(
                            matches!(e, Error::State(_)) && kind != 0 && kind != 1,
                            "{e}"
                        );
                        assert_eq!(
                            std::fs::read(&path).unwrap(),
                            bytes,
                            "a refused file changed"
                        );
                        refused_on_disk += 1;
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        println!(
            "{cases} cases in {elapsed:.1?}; slowest {:?} (case {}); {refused_on_disk} refused on \
             disk; verdicts: {} sound, {} with duplicates, {} refused, {} corrupt ({} with \
             entries kept)",
            slowest.0, slowest.1, seen[0], seen[1], seen[2], seen[3], seen[4]
        );
        // Every kind of verdict is exercised.
        assert!(
            refused_on_disk > 0 && seen.iter().all(|&n| n > cases / 100),
            "{seen:?}"
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
