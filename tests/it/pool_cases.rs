//! The pool grammar and its refusals, as one list of cases both backends
//! must agree on: `tests/data/pools.json` runs here against the binary and
//! in `npm/sockcheck/tests/pools.test.mjs` against the npm package's JS
//! fallback. A pool one backend takes and the other refuses would hand out
//! different addresses from one `SOCKCHECK_POOL`; a change to either parser
//! changes this list, and both tests hold it.
//!
//! Each pool goes through `sockcheck scan --json`, which parses the pool
//! and only inspects: on port 46199 (127.61.0.0/16 and ports 46100-46199
//! are this file's and the npm tests'), without the bind probe or eBPF.

use crate::support;

use serde_json::Value;

/// One case: a pool and either the addresses it holds, in order, or a
/// piece of the one-line refusal.
struct Case {
    pool: String,
    expected: Result<Vec<String>, String>,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pools.json");
    let text = std::fs::read_to_string(path).expect("read tests/data/pools.json");
    let list: Vec<Value> =
        serde_json::from_str(&text).expect("tests/data/pools.json is a JSON array");
    list.iter()
        .map(|case| {
            let pool = case["pool"]
                .as_str()
                .expect("a case's pool is a string")
                .to_string();
            let expected = if case["ok"] == Value::Bool(true) {
                Ok(case["addresses"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{pool:?}: ok without addresses"))
                    .iter()
                    .map(|a| a.as_str().expect("an address is a string").to_string())
                    .collect())
            } else {
                Err(case["error_contains"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{pool:?}: refused without error_contains"))
                    .to_string())
            };
            Case { pool, expected }
        })
        .collect()
}

/// What the binary made of a case, or why that is not what the case says.
fn mismatch(case: &Case) -> Option<String> {
    let args = [
        "scan",
        "--json",
        "--ports",
        "46199",
        "--no-probe",
        "--bpf",
        "never",
        "--",
        &case.pool,
    ];
    let run = support::sockcheck(&args);
    match &case.expected {
        Ok(addresses) => {
            if run.status != 0 && run.status != 1 {
                return Some(format!("exit {}: {}", run.status, run.stderr.trim()));
            }
            let got: Vec<String> = run.json()["addresses"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|a| a["address"].as_str().unwrap_or("?").to_string())
                        .collect()
                })
                .unwrap_or_default();
            (&got != addresses).then(|| format!("addresses {got:?}, expected {addresses:?}"))
        }
        Err(needle) => {
            let lines: Vec<&str> = run.stderr.lines().collect();
            if run.status != 2 {
                Some(format!(
                    "exit {} (expected 2): {}",
                    run.status,
                    run.stderr.trim()
                ))
            } else if !run.stdout.is_empty() {
                Some(format!("printed to stdout: {}", run.stdout))
            } else if lines.len() != 1 || !lines[0].contains(needle.as_str()) {
                Some(format!(
                    "stderr {:?} lacks {needle:?} on one line",
                    run.stderr
                ))
            } else {
                None
            }
        }
    }
}

fn the_binary_parses_and_refuses_the_shared_pool_cases() {
    let cases = cases();
    assert!(
        cases.len() > 50,
        "tests/data/pools.json holds {} cases",
        cases.len()
    );
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| mismatch(case).map(|why| format!("{:?}: {why}", case.pool)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} pool cases disagree with tests/data/pools.json:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

crate::tests![
    the_binary_parses_and_refuses_the_shared_pool_cases,
];
