//! Where the state directory is when none is given.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// A check of [`default_dir_from`] for `tests/it` (through
/// [`crate::selftest`]): it needs root and `setpriv`, which a unit test can
/// neither count on nor report the lack of. It panics on a mismatch.
pub(crate) mod selftest {
    use std::os::unix::fs::PermissionsExt;

    use super::super::{StateDir, Store};
    use super::*;
    use crate::error::Error;

    /// Runs `args` as nobody (through `setpriv`): whether it succeeded.
    fn as_nobody(args: &[&std::ffi::OsStr]) -> bool {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("setpriv runs")
            .success()
    }

    /// The environment of a test: `TMPDIR` is `tmp`, and `vars` are set.
    pub(super) fn env(
        tmp: &Path,
        vars: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        let tmp = tmp.to_path_buf();
        move |name: &str| {
            if name == "TMPDIR" {
                return Some(tmp.clone().into());
            }
            vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.into())
        }
    }

    /// `base` (a fresh `sockcheck-state-test-default-NAME-PID` under the temporary
    /// directory) with a root-owned-like `run` (0755) and a `tmp` (1777) in it.
    pub(super) fn tree(name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!(
            "sockcheck-state-test-default-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        let (run, tmp) = (base.join("run"), base.join("tmp"));
        for (dir, mode) in [(&base, 0o755), (&run, 0o755), (&tmp, 0o1777)] {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        (base, run, tmp)
    }

    /// Nobody cannot create root's default in `run`, but can in `tmp`; were
    /// `run` open to others, root would fall back to `tmp`, and refuse the
    /// directory nobody made there, with a way out.
    fn nobody_cannot_squat(run: &Path, tmp: &Path) {
        let created = as_nobody(&["mkdir".as_ref(), run.join("sockcheck").as_os_str()]);
        assert!(
            !created,
            "nobody created {}",
            run.join("sockcheck").display()
        );
        let squatted = tmp.join("sockcheck-0");
        assert!(as_nobody(&["mkdir".as_ref(), squatted.as_os_str()]));
        std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(default_dir_from(&env(tmp, &[]), 0, run), squatted);
        let e = StateDir::open(&squatted).and_then(|dir| Store::lock(&dir));
        let e = e.err().unwrap();
        assert!(matches!(e, Error::State(_)), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("owned by uid 65534")
                && e.contains("remove it")
                && e.contains("--state-dir DIR")
                && e.contains("SOCKCHECK_STATE_DIR"),
            "{e}"
        );
    }

    /// Root's default directory is one that nobody else can create first.
    /// Needs root, to own a directory as root, and `setpriv`, to act as
    /// nobody.
    pub fn root_default_dir_is_not_creatable_by_others() {
        let (base, run, tmp) = tree("root");
        // Root's default is in the root-owned run directory...
        assert_eq!(
            default_dir_from(&env(&tmp, &[]), 0, &run),
            run.join("sockcheck")
        );
        // ...where nobody cannot create it first, as it could in /tmp.
        nobody_cannot_squat(&run, &tmp);
        // A symlink to a root-owned directory does not qualify.
        let link = base.join("link");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&run, &link).unwrap();
        assert_eq!(
            default_dir_from(&env(&tmp, &[]), 0, &link),
            tmp.join("sockcheck-0")
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::selftest::{env, tree};
    use super::*;

    #[test]
    fn the_variables_come_first_then_run_for_root_then_tmpdir() {
        let (base, run, tmp) = tree("vars");
        // The variables come first, for root too; empty ones are unset.
        let given = env(
            &tmp,
            &[("SOCKCHECK_STATE_DIR", "/s"), ("XDG_RUNTIME_DIR", "/x")],
        );
        assert_eq!(default_dir_from(&given, 0, &run), Path::new("/s"));
        let given = env(
            &tmp,
            &[("SOCKCHECK_STATE_DIR", ""), ("XDG_RUNTIME_DIR", "/x")],
        );
        assert_eq!(default_dir_from(&given, 0, &run), Path::new("/x/sockcheck"));
        assert_eq!(
            default_dir_from(&env(&tmp, &[]), 1000, &run),
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
        std::fs::remove_dir_all(&base).unwrap();
    }
}
