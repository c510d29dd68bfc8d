//! The state directory: one per user, holding this user's quarantine
//! records (`leases.json`) and the lease agent's socket. Leases themselves
//! are tokens in the kernel (see [`crate::lease`]), not records here.
//!
//! - [`dir`]: the directory is opened once ([`StateDir`]) and everything in
//!   it is reached through that descriptor (`openat`, `renameat`,
//!   `unlinkat`, `statat`), never by path again, so it cannot be swapped
//!   mid-command. Only the directory itself is created (0700), never the
//!   ones above it: a missing parent is an error. One owned by another
//!   user, open to others, or reached through a symlink is refused, saying
//!   how to recover; so is one whose parents another user could change.
//! - [`default`]: root's default is under /run, where no other user can
//!   create it first.
//! - [`lock`]: every change happens under an exclusive `flock` on
//!   `DIR/lock` ([`Store`]), waited on for [`LOCK_WAIT`] at most: a kernel
//!   lock that dies with its holder, so there is no lock file to go stale.
//!   `lock` and `leases.json` must be regular files: a FIFO, device,
//!   socket, directory or symlink in their place is refused, never opened
//!   blocking.
//! - [`file`]: `DIR/leases.json` is replaced atomically (write
//!   `.leases.json.tmp`, fsync, rename); a temporary left by a killed
//!   writer is removed by the next lock holder. A file whose `version` is
//!   not 1 is refused and left as it is ([`version`]). A corrupt or
//!   truncated version-1 file is reported, kept aside whole (under a name no
//!   earlier copy has: `leases.json.corrupt-TIME`, `-TIME-2`...), and the
//!   state starts again empty. The `leases` array that sockcheck wrote
//!   before leases became tokens is carried through unread.
//! - [`process`]: a process is identified by pid *and* start time.
//! - Every failure here is [`Error::State`]: exit status 3.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::io::Errno;

use crate::error::Error;

mod default;
mod dir;
mod file;
#[cfg(test)]
mod fuzz;
mod lock;
mod process;
mod version;

pub use default::default_dir;
pub(crate) use default::selftest;
pub use dir::StateDir;
pub use file::{Quarantine, State};
pub use lock::Store;
pub use process::{Liveness, ProcessId};

/// How long a command waits for another to let go of the state lock.
/// Holders keep it for a read and a write (microseconds), never across an
/// inspection.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The state file's format version.
const VERSION: u32 = 1;

/// The most of `leases.json` that is read. A larger file is treated as
/// corrupt: kept aside whole, and the state started again (sockcheck
/// writes a few hundred bytes per quarantine record).
const MAX_STATE_FILE: u64 = 16 << 20;

/// The state file, in the state directory.
const STATE_FILE: &str = "leases.json";

/// The file that becomes `leases.json`. Only the lock holder writes it, so
/// whatever is found under this name once the lock is taken was left by a
/// writer that died, and can go.
const TEMPORARY: &str = ".leases.json.tmp";

/// `EACCES (Permission denied)`: the name people search for, and what it
/// means.
fn errno_text(e: Errno) -> String {
    let e = std::io::Error::from(e);
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    match e.raw_os_error().and_then(crate::error::errno_name) {
        Some(name) => format!("{name} ({text})"),
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

/// What the tests of every part share.
#[cfg(test)]
mod tests {
    use crate::error::Error;
    use std::path::PathBuf;

    pub fn is_state_error(e: &Error) -> bool {
        matches!(e, Error::State(_))
    }

    /// A fresh path under the temporary directory (nothing there yet).
    pub fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sockcheck-state-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
