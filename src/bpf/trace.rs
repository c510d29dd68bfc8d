//! `SOCKCHECK_BPF_TRACE=1`: the time of each loading step, and notes such as
//! why the BTF cache was not used, on stderr.

use std::{sync::OnceLock, time::Instant};

/// Whether `SOCKCHECK_BPF_TRACE=1` asks for each loading step on stderr.
fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SOCKCHECK_BPF_TRACE").is_some_and(|v| v != "0"))
}

/// `SOCKCHECK_BPF_TRACE=1` prints the time of each loading step to stderr.
pub(super) fn trace(step: &str, since: Instant) {
    if tracing() {
        eprintln!(
            "sockcheck bpf: {step}: {:.2} ms",
            since.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// A `SOCKCHECK_BPF_TRACE` line without a time.
pub(super) fn trace_note(note: &str) {
    if tracing() {
        eprintln!("sockcheck bpf: {note}");
    }
}
