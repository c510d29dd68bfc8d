//! The integration tests: one binary, one module per area, and a harness
//! (libtest-mimic) that reports a skipped test as ignored, with its reason,
//! in its result line and in the summary count:
//!
//! ```text
//! test shapes::unprivileged_run_still_sees_a_reuseport_group ... ignored (needs root for starting a holder of another uid)
//! test result: ok. 110 passed; 0 failed; 70 ignored; 0 measured; 0 filtered out
//! ```
//!
//! Names are `MODULE::FUNCTION` (`cargo test --release --test it gate::`
//! runs one module). A test is a plain `fn name()` that its module lists in
//! its [`tests!`] line; nothing else registers it, and nothing is left
//! unregistered without notice: a test function that is not listed is dead
//! code, which this crate denies, and `harness::every_test_is_registered`
//! fails on a `#[test]` attribute (which this harness never sees) and on a
//! test file that is not a module here.

#![deny(dead_code)]

use std::cell::RefCell;
use std::path::Path;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

mod support;

/// One test: its function's name and the function.
pub struct Test {
    pub name: &'static str,
    pub run: fn(),
}

/// `tests![a, b, …];` in a module: its test functions, in `TESTS`.
#[macro_export]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        pub const TESTS: &[$crate::Test] = &[$($crate::Test {
            name: stringify!($name),
            run: $name,
        }),*];
    };
}

/// Declares each test module and lists it with its tests in `MODULES`.
macro_rules! modules {
    ($($module:ident),* $(,)?) => {
        $(mod $module;)*
        const MODULES: &[(&str, &[Test])] = &[$((stringify!($module), $module::TESTS)),*];
    };
}

modules![
    bpf_btf_cache,
    bpf_iter_tcp,
    bpf_objects,
    bpf_task_file,
    bpf_unprivileged,
    bpf_watch,
    cli,
    doctor,
    gate,
    lease_space,
    lease_storm,
    netns,
    pool_cases,
    ports,
    reap,
    report_file,
    resources,
    schema,
    shapes,
    state_dir,
    watch,
    watch_lost,
];

/// Modules whose tests load eBPF programs in this process (the library's
/// iterators and watcher, not a sockcheck child): one of them at a time,
/// as when each was a binary of its own, since `bpf_watch` counts the
/// programs this process holds.
const IN_PROCESS_BPF: &[&str] = &[
    "bpf_btf_cache",
    "bpf_iter_tcp",
    "bpf_task_file",
    "bpf_unprivileged",
    "bpf_watch",
];

static IN_PROCESS_BPF_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    /// The full name of the test running on this thread.
    static CURRENT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The full name (`MODULE::FUNCTION`) of the test running on this thread.
pub fn current_test() -> String {
    CURRENT.with_borrow(Clone::clone)
}

fn main() {
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = MODULES
        .iter()
        .flat_map(|&(module, tests)| tests.iter().map(move |test| trial(module, test)))
        .collect();
    trials.push(Trial::test(
        "harness::every_test_is_registered",
        every_test_is_registered,
    ));
    libtest_mimic::run(&args, trials).exit();
}

/// A test as a trial: ignored, with the reason, when it skipped (see
/// [`support::skip`]), passed when it returned, failed when it panicked.
fn trial(module: &'static str, test: &'static Test) -> Trial {
    let name = format!("{module}::{}", test.name);
    Trial::ignorable_test(name.clone(), move || {
        let _serial = IN_PROCESS_BPF.contains(&module).then(|| {
            IN_PROCESS_BPF_LOCK
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        });
        CURRENT.set(name);
        support::take_skip();
        (test.run)();
        Ok(match support::take_skip() {
            Some(reason) => Completion::ignored_with(reason),
            None => Completion::Completed,
        })
    })
}

/// Every test here runs: no `#[test]` attribute (outside the harness it
/// would be compiled out without a word), every `tests/it/*.rs` is a
/// module of [`MODULES`], and no test file is left directly in `tests/`
/// (Cargo would build it as a binary of its own, under libtest).
fn every_test_is_registered() -> Result<(), Failed> {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&tests).map_err(|e| format!("{}: {e}", tests.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            problems.push(format!(
                "{}: move it to tests/it/ as a module of main.rs",
                path.display()
            ));
        }
    }
    let mut sources = Vec::new();
    rust_files(&tests.join("it"), &mut sources)?;
    for path in sources {
        let relative = path.strip_prefix(tests.join("it")).unwrap();
        let top = relative.components().count() == 1;
        let stem = path.file_stem().unwrap().to_str().unwrap();
        if top && stem != "main" && !MODULES.iter().any(|&(m, _)| m == stem) {
            problems.push(format!(
                "{}: not a module in main.rs's modules![]",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[test]") {
                problems.push(format!(
                    "{}:{}: #[test] is never run here: drop it and list the function in the module's tests![]",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), Failed> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}
