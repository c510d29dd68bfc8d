//! Checks of the cache for `tests/it` (through [`crate::selftest`]), which
//! a unit test could not report as skipped where they cannot run: one needs
//! root (it hands a directory to another user), the other the kernel's
//! notes. Each panics on a mismatch.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{CacheDir, build_id};

/// A directory of the test's own under the temp dir, removed on drop.
pub(super) struct Temp(pub PathBuf);

impl Temp {
    pub fn new(name: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!(
            "sockcheck-btf-cache-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Temp(dir)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running kernel's notes hold its GNU build id (the cache's key);
/// `Err(why)` when `/sys/kernel/notes` cannot be read.
pub fn the_running_kernel_has_a_build_id() -> Result<(), String> {
    let notes = std::fs::read("/sys/kernel/notes")
        .map_err(|e| format!("/sys/kernel/notes cannot be read: {e}"))?;
    let id = build_id(&notes).expect("a GNU build id in /sys/kernel/notes");
    assert!(id.len() >= 16, "{id:?}");
    Ok(())
}

/// Root, run with another user's HOME (sudo -E): that user's
/// directories are left alone. Needs root, to chown a directory to nobody.
pub fn a_cache_dir_of_another_user_is_not_used() {
    let temp = Temp::new("other-user");
    let nobody = Some(rustix::process::Uid::from_raw(65534));
    // Their cache dir exists...
    let theirs = temp.0.join("theirs");
    std::fs::create_dir_all(theirs.join("sockcheck")).unwrap();
    std::fs::set_permissions(
        theirs.join("sockcheck"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    rustix::fs::chown(theirs.join("sockcheck"), nobody, None).unwrap();
    let why = CacheDir::open(&theirs).unwrap_err();
    assert!(why.contains("owned by uid 65534"), "{why}");
    // ... or only their ~/.cache does, or only their home.
    rustix::fs::chown(&theirs, nobody, None).unwrap();
    let why = CacheDir::open(&theirs).unwrap_err();
    assert!(why.contains("owned by uid 65534"), "{why}");
    let why = CacheDir::open(&theirs.join(".cache")).unwrap_err();
    assert!(why.contains("owned by uid 65534"), "{why}");
    assert!(!theirs.join(".cache").exists());
}
