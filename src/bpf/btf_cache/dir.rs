//! The cache directory: where it is ([`base_dir`]), the checks before it
//! is used, and reading, writing and pruning its entries (see the module
//! doc of `btf_cache.rs`).

use std::{
    ffi::OsString,
    fs::File,
    io::{Read, Write},
    os::{
        fd::OwnedFd,
        unix::fs::{MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use rustix::{
    fs::{AtFlags, Mode, OFlags},
    io::Errno,
};

use super::{Key, MAX_ENTRY, decode, encode};
use crate::bpf::btf_view::Views;

/// Where the cache directory goes, from the environment `var`:
/// `$XDG_CACHE_HOME`, else `$HOME/.cache` (each only if absolute, as the
/// XDG spec says); an error says why there is none, or that
/// `SOCKCHECK_BTF_CACHE=0` turned it off.
pub(crate) fn base_dir(var: &dyn Fn(&str) -> Option<OsString>) -> Result<PathBuf, String> {
    if var("SOCKCHECK_BTF_CACHE").is_some_and(|v| v == "0") {
        return Err("off (SOCKCHECK_BTF_CACHE=0)".into());
    }
    let absolute = |name: &str| {
        var(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .ok_or_else(|| "neither XDG_CACHE_HOME nor HOME is an absolute path".into())
}

/// Why an entry was not used.
#[derive(Debug)]
pub(crate) enum Miss {
    /// There is none yet.
    Absent,
    /// There is one, and it was ignored (it will be rewritten).
    Invalid(String),
}

/// The checked cache directory, `BASE/sockcheck`, open.
#[derive(Debug)]
pub(crate) struct CacheDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl CacheDir {
    /// Opens `base/sockcheck`, creating it (0700) and, if missing, `base`
    /// (0700, when the directory above is ours); an error says why the
    /// directory may not be used (see the module doc).
    pub fn open(base: &Path) -> Result<CacheDir, String> {
        let euid = rustix::process::geteuid().as_raw();
        let base_fd = open_base(base, euid)?;
        let path = base.join("sockcheck");
        let made = rustix::fs::mkdirat(&base_fd, "sockcheck", Mode::from_raw_mode(0o700));
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&base_fd, "sockcheck", flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(format!(
                    "{} is a symlink or not a directory",
                    path.display()
                ));
            }
            Err(error) => {
                let error = made.err().unwrap_or(error);
                return Err(format!("{}: {error}", path.display()));
            }
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", path.display()))?;
        if stat.st_uid != euid {
            return Err(format!(
                "{} is owned by uid {}, not by us (uid {euid})",
                path.display(),
                stat.st_uid
            ));
        }
        if stat.st_mode & 0o022 != 0 {
            return Err(format!(
                "{} is group- or other-writable (mode {:o})",
                path.display(),
                stat.st_mode & 0o7777
            ));
        }
        Ok(CacheDir { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry for `key`, checked (see [`decode`]).
    pub fn load(&self, key: &Key) -> Result<Views, Miss> {
        let name = key.file_name();
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, &name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(Miss::Absent),
            Err(error) => return Err(Miss::Invalid(format!("{name}: {error}"))),
        };
        let invalid = |why: String| Miss::Invalid(format!("{name}: {why}"));
        let mut file = File::from(fd);
        let meta = file.metadata().map_err(|e| invalid(e.to_string()))?;
        let euid = rustix::process::geteuid().as_raw();
        if !meta.is_file() || meta.uid() != euid || meta.permissions().mode() & 0o022 != 0 {
            return Err(invalid(format!(
                "not a regular file of ours that only we may write (uid {}, mode {:o})",
                meta.uid(),
                meta.permissions().mode()
            )));
        }
        if meta.len() > MAX_ENTRY {
            return Err(invalid(format!("{} bytes, too large", meta.len())));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| invalid(e.to_string()))?;
        decode(&bytes, key).map_err(invalid)
    }

    /// Writes the entry for `key`: a temporary file, renamed over the entry.
    pub fn store(&self, key: &Key, views: &Views) -> Result<(), String> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let name = key.file_name();
        let temp = format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o600);
        // A file of that name is left by a killed process of our pid.
        let fd = match rustix::fs::openat(&self.fd, &temp, flags, mode) {
            Err(Errno::EXIST) => {
                let _ = rustix::fs::unlinkat(&self.fd, &temp, AtFlags::empty());
                rustix::fs::openat(&self.fd, &temp, flags, mode)
            }
            other => other,
        }
        .map_err(|e| format!("creating {temp}: {e}"))?;
        let written = File::from(fd)
            .write_all(&encode(key, views))
            .map_err(|e| format!("writing {temp}: {e}"))
            .and_then(|()| {
                rustix::fs::renameat(&self.fd, &temp, &self.fd, &name)
                    .map_err(|e| format!("renaming {temp} to {name}: {e}"))
            });
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &temp, AtFlags::empty());
        } else {
            self.prune(&name, std::time::SystemTime::now());
        }
        written
    }

    /// Removes what this directory should no longer hold: entries other
    /// than `keep` not written for [`STALE_ENTRY`] (of kernels or sockcheck
    /// builds no longer run: an entry in use is the one just written, or
    /// one another build rewrites on its first run after a month), and
    /// temporary files left for [`STALE_TEMP`] by a process killed while
    /// writing. Runs only when an entry was written, so once per kernel and
    /// build; what cannot be removed stays.
    fn prune(&self, keep: &str, now: std::time::SystemTime) {
        let Ok(dir) = rustix::fs::Dir::read_from(&self.fd) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let limit = if name.starts_with("btf-view-") && name != keep {
                STALE_ENTRY
            } else if name.starts_with(".btf-view-") && name.ends_with(".tmp") {
                STALE_TEMP
            } else {
                continue;
            };
            let Ok(stat) = rustix::fs::statat(&self.fd, &*name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let written =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(stat.st_mtime.max(0) as u64);
            if now.duration_since(written).is_ok_and(|age| age > limit) {
                let _ = rustix::fs::unlinkat(&self.fd, &*name, AtFlags::empty());
            }
        }
    }
}

/// An entry of another kernel or build unwritten this long is removed.
const STALE_ENTRY: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A temporary file this old was left by a killed writer (a write takes
/// well under a millisecond).
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// `base`, opened; created 0700 if missing and the directory above it is
/// ours. It must be ours (it may be a symlink to a directory of ours).
fn open_base(base: &Path, euid: u32) -> Result<OwnedFd, String> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(base, flags, Mode::empty()) {
        Err(Errno::NOENT) => {
            let parent = base
                .parent()
                .ok_or_else(|| format!("{} has no parent", base.display()))?;
            let owner = std::fs::metadata(parent)
                .map_err(|e| format!("{}: {e}", parent.display()))?
                .uid();
            if owner != euid {
                return Err(format!(
                    "{} does not exist, and {} is owned by uid {owner}, not by us (uid {euid})",
                    base.display(),
                    parent.display()
                ));
            }
            match rustix::fs::mkdir(base, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => rustix::fs::open(base, flags, Mode::empty()),
                Err(error) => Err(error),
            }
        }
        other => other,
    }
    .map_err(|e| format!("{}: {e}", base.display()))?;
    let owner = rustix::fs::fstat(&fd)
        .map_err(|e| format!("{}: {e}", base.display()))?
        .st_uid;
    if owner != euid {
        return Err(format!(
            "{} is owned by uid {owner}, not by us (uid {euid})",
            base.display()
        ));
    }
    Ok(fd)
}
