//! Writing `run --report FILE` without trusting the place it goes.
//!
//! The target may sit in a directory other users can write to (a shared
//! CI workspace, /tmp). So the target itself is never opened: the report
//! goes to a new file beside it (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode
//! 0644), made through a descriptor of the directory, and is renamed over
//! the target. A symlink planted there is replaced, never followed; a FIFO
//! is never opened (nothing can block); a file another user owns is
//! refused, not written into for them to tamper with afterwards.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::Error;

/// The target's directory and name.
fn split(path: &Path) -> Result<(&Path, &OsStr), Error> {
    let name = path
        .file_name()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| refused(path, "it names no file"))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent, name))
}

fn shown(path: &Path) -> String {
    crate::text::escape(path.as_os_str().as_bytes())
}

fn refused(path: &Path, why: &str) -> Error {
    Error::Usage(format!("--report {}: {why}", shown(path)))
}

/// The directory, opened once: every later step is relative to it.
fn open_dir(path: &Path, parent: &Path) -> Result<OwnedFd, Error> {
    rustix::fs::open(
        parent,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        refused(
            path,
            &format!(
                "its directory cannot be opened ({})",
                crate::error::errno_label(&e.into())
            ),
        )
    })
}

/// Why the target may not be replaced, if it may not: anything but a
/// regular file of ours (or nothing yet).
fn unfit(dir: &OwnedFd, name: &OsStr) -> Result<Option<String>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
        Ok(stat) => {
            let kind = FileType::from_raw_mode(stat.st_mode);
            let euid = rustix::process::geteuid().as_raw();
            Ok(match kind {
                FileType::RegularFile if stat.st_uid == euid => None,
                FileType::RegularFile => Some(format!(
                    "it is a file of uid {}, not ours (uid {euid}): writing it would leave it \
                     theirs to change",
                    stat.st_uid
                )),
                FileType::Symlink => Some("it is a symlink (never followed)".into()),
                FileType::Fifo => Some("it is a FIFO (it could block run forever)".into()),
                FileType::Directory => Some("it is a directory".into()),
                _ => Some("it is not a regular file".into()),
            })
        }
    }
}

/// Before the command runs (exit 2, nothing run): the target's directory
/// must be one we can write, and the target nothing yet or a regular file
/// of ours.
pub fn check(path: &Path) -> Result<(), Error> {
    let (parent, name) = split(path)?;
    let dir = open_dir(path, parent)?;
    if rustix::fs::accessat(&dir, ".", rustix::fs::Access::WRITE_OK, AtFlags::empty()).is_err() {
        return Err(refused(path, "its directory is not writable"));
    }
    match unfit(&dir, name) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(refused(path, &why)),
        Err(e) => Err(refused(
            path,
            &format!(
                "cannot be looked at ({})",
                crate::error::errno_label(&e.into())
            ),
        )),
    }
}

/// Writes `text` as the target: a new file beside it, then a rename over
/// it. Checked again just before: the directory may have changed since
/// [`check`].
pub fn write(path: &Path, text: &[u8]) -> Result<(), Error> {
    let (parent, name) = split(path)?;
    let dir = open_dir(path, parent)?;
    let failed = |what: &str, e: Errno| {
        Error::syscall(
            format!("writing the report to {} ({what})", shown(path)),
            e.into(),
        )
    };
    if let Some(why) = unfit(&dir, name).map_err(|e| failed("statat", e))? {
        return Err(refused(path, &why));
    }
    let mut temporary = b".".to_vec();
    temporary.extend_from_slice(name.as_bytes());
    temporary.extend_from_slice(format!(".sockcheck-{}.tmp", std::process::id()).as_bytes());
    let temporary = OsStr::from_bytes(&temporary);
    let file = rustix::fs::openat(
        &dir,
        temporary,
        OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| failed("creating a file beside it", e))?;
    let written = write_all(&file, text).and_then(|()| rustix::fs::fsync(&file));
    drop(file);
    let renamed = written.and_then(|()| rustix::fs::renameat(&dir, temporary, &dir, name));
    if let Err(e) = renamed {
        let _ = rustix::fs::unlinkat(&dir, temporary, AtFlags::empty());
        return Err(failed("write and rename", e));
    }
    Ok(())
}

fn write_all(file: &OwnedFd, mut text: &[u8]) -> Result<(), Errno> {
    while !text.is_empty() {
        match rustix::io::write(file, text) {
            Ok(n) => text = &text[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sockcheck-unit-report-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn a_report_replaces_a_file_of_ours_and_leaves_no_temporary() {
        let dir = dir("ours");
        let target = dir.join("r.md");
        std::fs::write(&target, "old").unwrap();
        check(&target).unwrap();
        write(&target, b"new\n").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new\n");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_or_a_fifo_is_refused_and_nothing_behind_it_is_written() {
        let dir = dir("links");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.join("r.md");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(check(&link).is_err());
        assert!(write(&link, b"x").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let fifo = dir.join("fifo.md");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(check(&fifo).unwrap_err().to_string().contains("FIFO"));
        assert!(write(&fifo, b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
