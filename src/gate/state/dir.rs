//! Opening the state directory: once, through one descriptor, after
//! checking it and every directory above it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{errno_text, unusable};
use crate::error::Error;

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
        let fd = create_and_open(&path, &parent_fd, name)?;
        check_own(&path, &fd)?;
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
    pub(super) fn show(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }
}

/// Creates the state directory `name` in `parent` (0700; it may be there
/// already) and opens it, refusing a symlink or anything but a directory.
fn create_and_open(path: &Path, parent: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Error> {
    let made = rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700));
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::LOOP | Errno::NOTDIR) => {
            let why = if is_symlink(parent, name) {
                "it is a symlink"
            } else {
                "it is not a directory"
            };
            Err(unusable(path, why.into()))
        }
        Err(Errno::NOENT) => {
            let why = match made {
                Err(e) => format!("cannot create it: {}", errno_text(e)),
                Ok(()) => "it vanished as it was created".into(),
            };
            Err(unusable(path, why))
        }
        Err(e) => Err(unusable(path, format!("cannot open it: {}", errno_text(e)))),
    }
}

/// The state directory itself, open: ours, private, and writable.
fn check_own(path: &Path, fd: &OwnedFd) -> Result<(), Error> {
    let stat = rustix::fs::fstat(fd)
        .map_err(|e| unusable(path, format!("cannot stat it: {}", errno_text(e))))?;
    let euid = rustix::process::geteuid().as_raw();
    if stat.st_uid != euid {
        return Err(unusable(
            path,
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
            path,
            format!(
                "its mode is {:o}; it must be 0700 (chmod 700 it)",
                mode & 0o777
            ),
        ));
    }
    let writable = rustix::fs::accessat(fd, ".", rustix::fs::Access::WRITE_OK, AtFlags::EACCESS);
    if let Err(e) = writable {
        return Err(unusable(
            path,
            format!("it is not writable ({})", errno_text(e)),
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::super::tests::{is_state_error, temp};
    use super::super::{STATE_FILE, Store};
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

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
}
