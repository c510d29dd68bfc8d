//! The state lock, and the files in the state directory opened only if
//! they are regular files.

use std::fs::File;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{LOCK_WAIT, StateDir, TEMPORARY, errno_text, unusable};
use crate::error::Error;

/// The state directory, locked for the life of this value.
pub struct Store {
    pub(super) dir: StateDir,
    _lock: File,
    /// Said once to the user when the state file had to be rebuilt.
    pub repaired: Option<String>,
}

impl Store {
    /// Opens (creating if needed) and locks the state directory. Blocks
    /// while another sockcheck holds the lock. (Commands open the directory
    /// once and [`Store::lock`] it; this is the tests' shorthand.)
    #[cfg(test)]
    pub fn open(dir: &std::path::Path) -> Result<Store, Error> {
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

/// How a file in the state directory is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
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
pub(super) fn open_regular(
    dir: &StateDir,
    name: &str,
    access: Access,
) -> Result<Option<File>, Error> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{is_state_error, temp};
    use super::*;
    use std::path::Path;

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
}
