//! The sockcheck binary's per-kernel cache of the reduced kernel BTF
//! (src/bpf/btf_cache.rs), end to end, as root: a cold run writes one
//! entry, a warm run reads it and reports the same, a bad entry is
//! rewritten, and an unsafe directory or `SOCKCHECK_BTF_CACHE=0` gets no
//! file. Every run has an `XDG_CACHE_HOME` (or `HOME`) of its own, never
//! the real `~/.cache`. And in this process, through `sockcheck::selftest`:
//! the reduction and the cache on this kernel's own BTF, the build id that
//! keys it, and another user's cache directory refused. Addresses
//! 127.77.4.0/24, ports 40180..40189.
use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Holder, SOCKCHECK, TempDir};

/// What one `--bpf always` check gave: its JSON without the owners' ages
/// (which move between runs), and its `SOCKCHECK_BPF_TRACE` lines.
struct Check {
    json: Value,
    trace: String,
}

/// `sockcheck --bpf always --json --ports PORT ADDRESS`, with `env` set
/// and the suite's cache variables removed first.
fn check(address: &str, port: u16, env: &[(&str, &Path)]) -> Check {
    let mut command = Command::new(&*SOCKCHECK);
    command
        .args([
            "--bpf",
            "always",
            "--json",
            "--ports",
            &port.to_string(),
            address,
        ])
        .env("SOCKCHECK_BPF_TRACE", "1")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("SOCKCHECK_BTF_CACHE")
        .env_remove("SOCKCHECK_PORTS");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let trace = String::from_utf8_lossy(&output.stderr).into_owned();
    let mut json: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}); stderr: {trace}"));
    assert_eq!(output.status.code(), Some(1), "busy; stderr: {trace}");
    assert_eq!(json["sources"]["bpf"]["status"], "used", "{trace}");
    for owner in json["addresses"][0]["ports"][0]["listeners"][0]["owners"]
        .as_array_mut()
        .unwrap()
    {
        owner.as_object_mut().unwrap().remove("age_seconds");
    }
    Check { json, trace }
}

/// Every file under `dir` (recursively), as paths relative to it, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                pending.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The one cache entry a run left in `home/sockcheck`.
fn only_entry(home: &Path) -> PathBuf {
    let found = files(home);
    assert_eq!(found.len(), 1, "{found:?}");
    let entry = home.join(&found[0]);
    assert_eq!(entry.parent().unwrap(), home.join("sockcheck"));
    let name = entry.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("btf-view-"), "{name}");
    entry
}

fn a_warm_run_reads_what_a_cold_run_wrote_and_reports_the_same() {
    if !support::require_bpf("the BTF cache") {
        return;
    }
    let _holder = Holder::start("plain", "127.77.4.1", 40181, &[]);
    let home = TempDir::created("btf-cache-warm");
    let cold = check("127.77.4.1", 40181, &[("XDG_CACHE_HOME", &home.0)]);
    assert!(
        cold.trace.contains("BTF cache: no entry yet"),
        "{}",
        cold.trace
    );
    assert!(
        cold.trace.contains("read and reduce kernel BTF"),
        "{}",
        cold.trace
    );
    assert!(
        cold.trace.contains("write the BTF cache entry"),
        "{}",
        cold.trace
    );
    let entry = only_entry(&home.0);
    assert_eq!(mode(&home.join("sockcheck")), 0o700);
    assert_eq!(mode(&entry), 0o600);
    let written = std::fs::read(&entry).unwrap();

    let warm = check("127.77.4.1", 40181, &[("XDG_CACHE_HOME", &home.0)]);
    assert!(
        warm.trace.contains("read cached BTF views"),
        "{}",
        warm.trace
    );
    assert!(!warm.trace.contains("read and reduce"), "{}", warm.trace);
    assert!(
        !warm.trace.contains("write the BTF cache"),
        "{}",
        warm.trace
    );
    assert_eq!(warm.json, cold.json);
    assert_eq!(std::fs::read(&entry).unwrap(), written);

    // SOCKCHECK_BTF_CACHE=0: the same report, and not a file anywhere.
    let off_home = TempDir::created("btf-cache-off");
    let off = check(
        "127.77.4.1",
        40181,
        &[
            ("XDG_CACHE_HOME", &off_home.0),
            ("HOME", &off_home.0),
            ("SOCKCHECK_BTF_CACHE", Path::new("0")),
        ],
    );
    assert!(off.trace.contains("SOCKCHECK_BTF_CACHE=0"), "{}", off.trace);
    assert!(
        off.trace.contains("read and reduce kernel BTF"),
        "{}",
        off.trace
    );
    assert_eq!(off.json, cold.json);
    assert_eq!(std::fs::read_dir(&off_home.0).unwrap().count(), 0);
}

fn a_damaged_entry_is_ignored_and_rewritten() {
    if !support::require_bpf("the BTF cache") {
        return;
    }
    let _holder = Holder::start("plain", "127.77.4.2", 40182, &[]);
    let home = TempDir::created("btf-cache-damaged");
    let env = [("XDG_CACHE_HOME", home.0.as_path())];
    let first = check("127.77.4.2", 40182, &env);
    let entry = only_entry(&home.0);
    let good = std::fs::read(&entry).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 3] ^= 0x10;
    let mut newer = good.clone();
    newer[8] = newer[8].wrapping_add(1); // the version
    for (what, bytes) in [
        ("truncated", &good[..good.len() / 2]),
        ("empty", &[][..]),
        ("flipped", &flipped[..]),
        ("another version", &newer[..]),
        ("garbage", &[0xeb; 30000][..]),
    ] {
        std::fs::write(&entry, bytes).unwrap();
        let again = check("127.77.4.2", 40182, &env);
        assert!(
            again.trace.contains("BTF cache: ignoring the entry"),
            "{what}: {}",
            again.trace
        );
        assert!(again.trace.contains("write the BTF cache entry"), "{what}");
        assert_eq!(again.json, first.json, "{what}");
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            good,
            "{what}: not rewritten"
        );
    }
}

fn an_unsafe_cache_dir_is_not_used() {
    if !support::require_bpf("the BTF cache") {
        return;
    }
    let _holder = Holder::start("plain", "127.77.4.3", 40183, &[]);
    let home = TempDir::created("btf-cache-unsafe");
    let env = [("XDG_CACHE_HOME", home.0.as_path())];
    let cache = home.join("sockcheck");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let writable = check("127.77.4.3", 40183, &env);
    assert!(
        writable.trace.contains("BTF cache not used")
            && writable.trace.contains("group- or other-writable"),
        "{}",
        writable.trace
    );
    assert_eq!(files(&home.0), Vec::<PathBuf>::new());

    std::fs::remove_dir(&cache).unwrap();
    let elsewhere = home.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &cache).unwrap();
    let linked = check("127.77.4.3", 40183, &env);
    assert!(
        linked.trace.contains("BTF cache not used") && linked.trace.contains("symlink"),
        "{}",
        linked.trace
    );
    assert_eq!(linked.json, writable.json);
    assert_eq!(files(&elsewhere), Vec::<PathBuf>::new());
}

fn without_xdg_cache_home_the_cache_is_in_home() {
    if !support::require_bpf("the BTF cache") {
        return;
    }
    let _holder = Holder::start("plain", "127.77.4.4", 40184, &[]);
    let home = TempDir::created("btf-cache-home");
    check("127.77.4.4", 40184, &[("HOME", &home.0)]);
    let entry = only_entry(&home.join(".cache"));
    assert!(entry.starts_with(home.join(".cache/sockcheck")));
    assert_eq!(mode(&home.join(".cache")), 0o700);
}

/// A user given eBPF through file capabilities on the binary must not be
/// able to feed it relocations of their own: such a run leaves their cache
/// alone (and still works).
fn with_file_capabilities_the_users_cache_is_not_used() {
    if !support::require_bpf("the BTF cache")
        || !support::require_setpriv("the BTF cache under file capabilities")
    {
        return;
    }
    let _holder = Holder::start("plain", "127.77.4.5", 40185, &[]);
    let dir = TempDir::created("btf-cache-setcap");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.join("sockcheck");
    std::fs::copy(&*SOCKCHECK, &binary).unwrap();
    let setcap = Command::new("setcap")
        .args(["cap_bpf,cap_perfmon+ep"])
        .arg(&binary)
        .status();
    if !setcap.is_ok_and(|s| s.success()) {
        support::skip("setcap failed here (no setcap, or no xattrs in the temp dir)");
        return;
    }
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    let nobody = Some(rustix::process::Uid::from_raw(65534));
    rustix::fs::chown(&home, nobody, None).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .args([
            "--bpf",
            "always",
            "--json",
            "--ports",
            "40185",
            "127.77.4.5",
        ])
        .env("SOCKCHECK_BPF_TRACE", "1")
        .env("XDG_CACHE_HOME", &home)
        .env_remove("SOCKCHECK_BTF_CACHE")
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&output.stderr);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["sources"]["bpf"]["status"], "used", "{trace}");
    assert!(
        trace.contains("BTF cache not used") && trace.contains("file capabilities"),
        "{trace}"
    );
    assert_eq!(files(&home), Vec::<PathBuf>::new());
}

/// In this process, without privilege: the reduction of this kernel's BTF
/// keeps every root (skipped on a kernel without BTF, as the next two).
fn the_running_kernel_has_every_root() {
    if let Err(why) = sockcheck::selftest::the_running_kernel_has_every_root() {
        support::skip(why);
    }
}

/// It puts the attach points where aya, parsing all of it, finds them.
fn the_running_kernels_attach_points_are_where_aya_finds_them() {
    use sockcheck::selftest::the_running_kernels_attach_points_are_where_aya_finds_them as check;
    if let Err(why) = check() {
        support::skip(why);
    }
}

/// A cache entry of its views gives back what a fresh reduction gives.
fn the_running_kernels_views_survive_the_cache() {
    if let Err(why) = sockcheck::selftest::the_running_kernels_views_survive_the_cache() {
        support::skip(why);
    }
}

/// The cache's key: the running kernel's GNU build id, from its notes.
fn the_running_kernel_has_a_build_id() {
    if let Err(why) = sockcheck::selftest::the_running_kernel_has_a_build_id() {
        support::skip(why);
    }
}

/// Root with another user's HOME (sudo -E) leaves that user's cache alone.
fn a_cache_dir_of_another_user_is_not_used() {
    if support::require_root("handing a directory to nobody") {
        sockcheck::selftest::a_cache_dir_of_another_user_is_not_used();
    }
}

crate::tests![
    a_warm_run_reads_what_a_cold_run_wrote_and_reports_the_same,
    a_damaged_entry_is_ignored_and_rewritten,
    an_unsafe_cache_dir_is_not_used,
    without_xdg_cache_home_the_cache_is_in_home,
    with_file_capabilities_the_users_cache_is_not_used,
    the_running_kernel_has_every_root,
    the_running_kernels_attach_points_are_where_aya_finds_them,
    the_running_kernels_views_survive_the_cache,
    the_running_kernel_has_a_build_id,
    a_cache_dir_of_another_user_is_not_used,
];
