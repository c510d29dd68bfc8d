//! Support for every integration test: the binaries under test, real
//! processes holding real sockets (the `sockcheck-holder` fixture), sockets
//! made in the test process ([`sockets`]), guards that end what a test
//! started, and the one rule for skips.
//!
//! Every test uses its own loopback address and its own ports, so tests
//! never meet each other or other software on the machine, and every process
//! a test starts is killed by pid when its guard drops.
//!
//! Skips, one rule: a test that needs what this run lacks calls [`skip`]
//! (or [`require_root`], [`require_bpf`], [`require_setpriv`]) and returns;
//! the harness (main.rs) reports it as ignored, with the reason, in its
//! result line and in the summary count. Missing privileges skip only when
//! the tests run as an ordinary user; as root (CI) they are expected, and a
//! test that lacks one (a capability dropped, say) fails. Only what root
//! cannot have here skips as root: a kernel feature (BTF) or a tool that is
//! not installed.

pub mod sockets;

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;

use serde_json::Value;

/// The sockcheck binary under test: `$SOCKCHECK_BIN` when set (to run the
/// whole suite against another build, such as the static musl one), else
/// the one Cargo built for this test run.
pub static SOCKCHECK: LazyLock<PathBuf> =
    LazyLock::new(|| match std::env::var_os("SOCKCHECK_BIN") {
        Some(bin) if !bin.is_empty() => {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "SOCKCHECK_BIN={} is not a file",
                bin.display()
            );
            bin
        }
        _ => PathBuf::from(env!("CARGO_BIN_EXE_sockcheck")),
    });

/// `XDG_CACHE_HOME` for every sockcheck a test starts: a directory under
/// Cargo's target directory, so the suite keeps its per-kernel BTF cache
/// (src/bpf/btf_cache.rs) there and never in the real `~/.cache`.
pub fn cache_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("xdg-cache")
}

/// A command that runs the sockcheck binary under test, with the suite's
/// [`cache_home`].
pub fn command() -> Command {
    let mut command = Command::new(&*SOCKCHECK);
    command.env("XDG_CACHE_HOME", cache_home());
    command
}

/// `sockcheck watch ARGS` in the background (stdout and stderr piped),
/// returned once its stderr has said it is attached; the rest of stderr is
/// left unread.
pub fn start_watch(args: &[&str]) -> std::process::Child {
    use std::io::BufRead;
    let mut child = command()
        .arg("watch")
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SOCKCHECK_PORTS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("sockcheck: watching TCP listeners on port"),
        "watch {args:?} did not attach: {line:?}"
    );
    child
}

/// The `sockcheck-holder` fixture: `$SOCKCHECK_HOLDER` when set, else the
/// example `cargo test` builds next to this test binary
/// (`target/PROFILE/examples/`), built on demand when a narrower
/// `cargo test --test NAME` did not build it.
pub static HOLDER: LazyLock<PathBuf> = LazyLock::new(|| {
    if let Some(bin) = std::env::var_os("SOCKCHECK_HOLDER").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    // target[/TRIPLE]/PROFILE/deps/TEST-HASH
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/PROFILE");
    let holder = profile_dir.join("examples/sockcheck-holder");
    if !holder.is_file() {
        build_holder(profile_dir);
    }
    assert!(
        holder.is_file(),
        "no {} after building it",
        holder.display()
    );
    holder
});

/// `cargo build --example sockcheck-holder` for the profile (and target, if
/// any) this test binary was built with.
fn build_holder(profile_dir: &Path) {
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "--example",
            "sockcheck-holder",
            "--profile",
        ])
        .arg(if profile == "debug" { "dev" } else { profile });
    // TARGET_DIR/TRIPLE/PROFILE for a build with --target; Cargo marks
    // the target directory itself with CACHEDIR.TAG.
    let above = profile_dir.parent().unwrap();
    if !above.join("CACHEDIR.TAG").exists()
        && let Some(triple) = above.file_name().and_then(|n| n.to_str())
    {
        cargo.args(["--target", triple]);
        cargo.env("CARGO_TARGET_DIR", above.parent().unwrap());
    } else {
        cargo.env("CARGO_TARGET_DIR", above);
    }
    let status = cargo.status().expect("run cargo to build sockcheck-holder");
    assert!(
        status.success(),
        "building sockcheck-holder failed: {status}"
    );
}

/// A holder process (and its forked child, if any). Killed by pid on drop.
pub struct Holder {
    child: Child,
    pub pid: u32,
    pub tids: Vec<u32>,
    pub forked: Option<u32>,
}

impl Holder {
    /// Starts `sockcheck-holder SHAPE ADDR PORT [N]` and waits for its
    /// `ready` line.
    pub fn start(shape: &str, address: &str, port: u16, extra: &[&str]) -> Holder {
        Holder::start_via(&[], shape, address, port, extra)
    }

    /// The same, run as `nobody` (setpriv execs the holder: same pid).
    pub fn start_as_nobody(shape: &str, address: &str, port: u16, extra: &[&str]) -> Holder {
        let setpriv = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ];
        Holder::start_via(&setpriv, shape, address, port, extra)
    }

    /// The same, behind a wrapper that execs the holder (same pid):
    /// `setpriv …`, `ip netns exec NAME`.
    pub fn start_via(
        prefix: &[&str],
        shape: &str,
        address: &str,
        port: u16,
        extra: &[&str],
    ) -> Holder {
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&*HOLDER);
                command
            }
            None => Command::new(&*HOLDER),
        };
        let mut child = command
            .arg(shape)
            .arg(address)
            .arg(port.to_string())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sockcheck-holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("ready "),
            "holder {shape} did not start: {line:?}"
        );
        let mut holder = Holder {
            pid: child.id(),
            child,
            tids: Vec::new(),
            forked: None,
        };
        for field in line.split_whitespace().skip(1) {
            let (key, value) = field.split_once('=').unwrap();
            match key {
                "pid" => assert_eq!(value.parse::<u32>().unwrap(), holder.pid),
                "tids" => holder.tids = value.split(',').map(|t| t.parse().unwrap()).collect(),
                "child" => holder.forked = Some(value.parse().unwrap()),
                _ => {}
            }
        }
        holder
    }

    /// Waits for a holder that exits by itself (`forked`'s parent, `timewait`).
    pub fn wait_exit(&mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success());
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(child) = self.forked {
            kill(child);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn kill(pid: u32) {
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    wait_gone(pid);
}

/// Waits until `pid` has exited: gone, or a zombie with no live thread (a
/// zombie leader whose threads live on has not exited).
pub fn wait_gone(pid: u32) {
    for _ in 0..500 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        if stat.is_empty() || (stat.contains(") Z ") && threads <= 1) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("pid {pid} did not exit");
}

/// A shell command for `sockcheck run`: it starts a lingering server (main
/// thread gone, two workers holding reuseport listeners) on
/// `$SOCKCHECK_ADDR:port` in the background, waits for its `ready` line in
/// `ready`, and exits, as a test runner leaving a server behind would.
pub fn lingering_command(port: u16, ready: &std::path::Path) -> String {
    format!(
        "{holder} lingering \"$SOCKCHECK_ADDR\" {port} 2 > {r} 2>/dev/null < /dev/null & \
         while ! grep -q ready {r} 2>/dev/null; do sleep 0.02; done",
        holder = HOLDER.display(),
        r = ready.display()
    )
}

/// The pid and worker tids from a holder's `ready` line in a file.
pub fn holder_from(ready: &std::path::Path) -> (u32, Vec<u64>) {
    let line = std::fs::read_to_string(ready).unwrap();
    let mut pid = 0;
    let mut tids = Vec::new();
    for field in line.split_whitespace().skip(1) {
        match field.split_once('=').unwrap() {
            ("pid", v) => pid = v.parse().unwrap(),
            ("tids", v) => tids = v.split(',').map(|t| t.parse().unwrap()).collect(),
            _ => {}
        }
    }
    (pid, tids)
}

/// A command's stdout, as text.
pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A command's stderr, as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What one sockcheck run gave.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs the sockcheck binary.
pub fn sockcheck(args: &[&str]) -> Run {
    run(command().args(args).env_remove("SOCKCHECK_PORTS"))
}

/// Runs the sockcheck binary as `nobody`, through setpriv.
pub fn sockcheck_as_nobody(args: &[&str]) -> Run {
    run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&*SOCKCHECK)
        .args(args)
        .env("XDG_CACHE_HOME", cache_home())
        .env_remove("SOCKCHECK_PORTS"))
}

fn run(command: &mut Command) -> Run {
    let output = command
        .env("NO_COLOR", "1")
        .output()
        .expect("run sockcheck");
    Run {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `sockcheck --json --ports PORT ADDR`: the address's JSON object and the
/// exit status.
pub fn check(address: &str, ports: &str) -> (Value, i32) {
    check_with(address, ports, &[])
}

/// [`check`] with more arguments first (as `--bpf never`).
pub fn check_with(address: &str, ports: &str, args: &[&str]) -> (Value, i32) {
    let mut all = args.to_vec();
    all.extend(["--json", "--ports", ports, address]);
    let run = sockcheck(&all);
    let json = run.json();
    (json["addresses"][0].clone(), run.status)
}

/// The port object for `port` of an address object.
pub fn port(address: &Value, port: u16) -> &Value {
    address["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("no port {port} in {address}"))
}

/// The pids of every owner of every listener of a port object.
pub fn owner_pids(port: &Value) -> Vec<u64> {
    let mut pids: Vec<u64> = port["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["owners"].as_array().unwrap().iter())
        .filter_map(|o| o["pid"].as_u64())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

thread_local! {
    /// Why the test running on this thread skipped, if it did.
    static SKIPPED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks the running test as skipped for `reason` (what this run lacks): it
/// is reported as ignored, with the reason, however it returns. The test
/// returns right after, unless it goes on with what it can still check.
pub fn skip(reason: impl Into<String>) {
    let reason = reason.into();
    SKIPPED.with_borrow_mut(|skipped| match skipped {
        Some(said) if said.split("; ").any(|r| r == reason) => {}
        Some(said) => {
            said.push_str("; ");
            said.push_str(&reason);
        }
        None => *skipped = Some(reason),
    });
}

/// Why the test that ran on this thread skipped, if it did; clears it.
pub fn take_skip() -> Option<String> {
    SKIPPED.take()
}

/// Whether the tests may use root's privileges: true as root; as an
/// ordinary user, skips (`needs root for WHAT`) and returns false.
pub fn require_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(format!("needs root for {what}"));
    false
}

/// Whether eBPF can be used here. As an ordinary user it skips; as root a
/// kernel without BTF skips, naming it, and anything else that stops eBPF
/// (capabilities dropped) fails the test.
pub fn require_bpf(what: &str) -> bool {
    if !require_root(what) {
        return false;
    }
    match sockcheck::bpf::availability() {
        Ok(()) => true,
        Err(reason @ sockcheck::bpf::Unavailable::NoBtf { .. }) => {
            skip(format!("{what}: {reason}"));
            false
        }
        Err(reason) => panic!("root cannot use eBPF for {what}: {reason}"),
    }
}

/// Whether `setpriv` can drop to `nobody` here (it cannot without
/// CAP_SETUID/CAP_SETGID, as an ordinary user): else skips.
pub fn require_setpriv(what: &str) -> bool {
    require_root(&format!("{what} (setpriv to nobody)"))
}

/// A directory of its own under the temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `sockcheck-test-NAME-PID`, empty: not created (a state directory
    /// must be created by sockcheck itself), removed if left over.
    pub fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("sockcheck-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    /// The same, created.
    pub fn created(name: &str) -> TempDir {
        let dir = TempDir::new(name);
        std::fs::create_dir_all(&dir.0).unwrap();
        dir
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills a process by pid when dropped (one a test did not start as a
/// [`Holder`]: a holder left behind by `run`'s command, a fixture's child).
/// 0 guards nothing.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0 != 0 {
            kill(self.0);
        }
    }
}

/// Runs the running test (`test` names its function) again in a child
/// process of this same test binary, with `SOCKCHECK_TEST_CHILD=1`, behind
/// `wrapper` (e.g. setpriv or unshare), and returns its stdout. The child's
/// output is also shown on failure.
pub fn rerun_self(wrapper: &[&str], test: &str) -> (bool, String) {
    let current = crate::current_test();
    assert!(
        current.rsplit("::").next() == Some(test),
        "rerun_self({test:?}) from the test {current}"
    );
    let test = current.as_str();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOCKCHECK_TEST_CHILD", "1");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {wrapper:?}: {e}"));
    // Without the child harness's own "running 1 test" and summary lines,
    // which would read as this run's when the test prints what it got.
    let stdout: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l != "running 1 test" && !l.starts_with("test result: "))
        .map(|l| format!("{l}\n"))
        .collect();
    if !out.status.success() {
        eprintln!(
            "child {test} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), stdout)
}

pub fn in_child() -> bool {
    std::env::var_os("SOCKCHECK_TEST_CHILD").is_some()
}
