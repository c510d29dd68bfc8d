//! The mixed storm (issue 16's "done when"): binary and npm-fallback
//! workers, as root and as nobody, lease addresses of one small pool in
//! parallel while some of them are SIGKILLed. Each worker binds a real
//! server on every address it is handed: a bind that fails means the
//! address was held twice. The storm must end with 0 addresses held twice,
//! 0 leases lost (a worker whose lease was handed on while it lived is the
//! same failed bind) and 0 left behind. Addresses 127.86.100.0/24 and port
//! 45750 belong to this file.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::TempDir;

const PORT: &str = "45750";
/// Fewer addresses than workers: they queue on each other's leases.
const POOL: &str = "127.86.100.1,127.86.100.2,127.86.100.3,127.86.100.4,127.86.100.5";
const CYCLES: &str = "40";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the workers printed, all together.
#[derive(Default)]
struct Log {
    got: usize,
    doubles: Vec<String>,
    errors: Vec<String>,
    done: usize,
}

fn spawn(
    backend: &str,
    as_nobody: bool,
    state: &Path,
    log: &Arc<Mutex<Log>>,
) -> (Child, std::thread::JoinHandle<bool>) {
    let mut command = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "node",
        ]);
        c
    } else {
        Command::new("node")
    };
    command
        .arg(repo().join("tests/it/support/storm-worker.cjs"))
        .args([backend, POOL, PORT, CYCLES])
        .arg(&*support::SOCKCHECK)
        .arg(state)
        .arg(repo().join("npm/sockcheck/lib/fallback.cjs"))
        .env("XDG_CACHE_HOME", "/nonexistent")
        .env_remove("SOCKCHECK_POOL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let log = Arc::clone(log);
    // Whether this worker said `done` (a worker killed just after saying
    // it, before it exited, is replaced all the same).
    let reader = std::thread::spawn(move || {
        let mut finished = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            match line.split_once(' ') {
                Some(("got", _)) => log.got += 1,
                Some(("double", _)) => log.doubles.push(line.clone()),
                Some(("done", _)) => {
                    log.done += 1;
                    finished = true;
                }
                _ => log.errors.push(line.clone()),
            }
        }
        finished
    });
    (child, reader)
}

fn a_mixed_storm_of_backends_and_users_loses_nothing_and_hands_nothing_out_twice() {
    if Command::new("node").arg("--version").output().is_err() {
        support::skip("the mixed storm needs node (the npm fallback's workers)");
        return;
    }
    let root_state = TempDir::new("storm");
    // nobody's state directory: created by sockcheck itself, in /tmp.
    let nobody_state = TempDir::new("storm-nobody");
    let with_nobody = support::is_root();
    if !with_nobody {
        support::skip("partly: workers as nobody need root (setpriv); this run's are one user's");
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let mut plan: Vec<(&str, bool)> = vec![
        ("binary", false),
        ("binary", false),
        ("fallback", false),
        ("fallback", false),
    ];
    if with_nobody {
        plan.extend([("binary", true), ("fallback", true)]);
    }
    let start = |(backend, nobody): (&str, bool)| {
        let state = if nobody {
            &nobody_state.0
        } else {
            &root_state.0
        };
        spawn(backend, nobody, state, &log)
    };
    let mut workers: Vec<_> = plan.iter().map(|&w| start(w)).collect();
    // SIGKILL a worker now and then, mid-cycle, and start another in its
    // place: its lease must end with it, and never reach anyone while it
    // lives.
    let mut kills = 0;
    let started = Instant::now();
    let mut next = 0;
    while kills < 6 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        let index = next % workers.len();
        next += 5;
        let (child, _) = &mut workers[index];
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            let (old, reader) = std::mem::replace(&mut workers[index], start(plan[index]));
            drop(old);
            reader.join().unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = 0;
    for (mut child, reader) in workers {
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        finished += usize::from(reader.join().unwrap());
    }
    let log = log.lock().unwrap();
    eprintln!(
        "storm so far: {} leases, {} done, {kills} kills, {:.1}s",
        log.got,
        log.done,
        started.elapsed().as_secs_f64()
    );
    assert!(log.errors.is_empty(), "worker errors: {:?}", log.errors);
    assert_eq!(log.doubles, Vec::<String>::new(), "held twice");
    assert_eq!(finished, plan.len(), "every replacement worker finished");
    assert!(log.got >= plan.len() * 40, "only {} leases", log.got);
    assert_eq!(kills, 6, "the killer ran out of time");
    // Nothing left behind: every lease, of every backend and user, ended
    // with its owner.
    let pool_range = "127.86.100.0/29";
    let started = Instant::now();
    loop {
        let output = support::command()
            .args([
                "--state-dir",
                root_state.path(),
                "--json",
                "leases",
                pool_range,
            ])
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
        if doc["leases"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "left behind: {doc}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "storm: {} leases, {} workers killed, 0 held twice, 0 left behind",
        log.got, kills
    );
}

crate::tests![
    a_mixed_storm_of_backends_and_users_loses_nothing_and_hands_nothing_out_twice,
];
