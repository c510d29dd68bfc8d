//! `run`'s command: spawned with the leased address in its environment, with
//! signals passed through, and its exit status as a shell would report it.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::Error;

/// Signals `run` passes to its command.
const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Signals that end `run` itself: after the command, they cut the linger
/// wait short instead of killing sockcheck, so the report is still written.
const TERMINATING: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The command's exit status a shell would give (its code, or 128+N when
/// signal N killed it), and the terminating signals sent to sockcheck.
pub struct Finished {
    pub status: u8,
    /// A terminating signal sent to sockcheck while the command ran (and
    /// passed on to it).
    pub signalled: Option<i32>,
    /// Stays blocked and watched after the command exits: `received` tells
    /// whether (and which) terminating signal has arrived since then.
    pub signals: Signals,
}

/// The last terminating signal sent to sockcheck since the command started.
#[derive(Clone)]
pub struct Signals(Arc<AtomicI32>);

impl Signals {
    pub fn received(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }

    /// The signal received so far, forgetting it.
    fn take(&self) -> Option<i32> {
        match self.0.swap(0, Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

/// Runs `argv` to completion with `env` added, passing signals sent to
/// sockcheck on to it. `spawned` is called with the command's pid as soon
/// as it runs (so the lease can live on in it). The forwarded signals stay
/// blocked in sockcheck afterwards: the caller learns of a terminating one
/// through [`Finished::signals`] and ends in its own time.
pub fn run(
    argv: &[OsString],
    env: &[(&str, String)],
    spawned: impl FnOnce(u32),
) -> Result<Finished, Error> {
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain libc calls on a local sigset.
    unsafe {
        libc::sigemptyset(&mut set);
        for signal in FORWARDED {
            libc::sigaddset(&mut set, signal);
        }
    }
    // Block the signals in this thread (and so in the forwarding thread
    // spawned after), and wait for them with sigwaitinfo instead.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigsets.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    let restore = old;
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    for (key, value) in env {
        command.env(key, value);
    }
    // SAFETY: sigprocmask is async-signal-safe; the child gets back the
    // mask sockcheck started with.
    unsafe {
        command.pre_exec(move || {
            libc::sigprocmask(libc::SIG_SETMASK, &restore, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // SAFETY: restoring our own mask.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &restore, std::ptr::null_mut()) };
            eprintln!("sockcheck: cannot run '{}': {e}", argv[0].to_string_lossy());
            // What a shell answers: 127 not found, 126 found but not runnable.
            let status = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(Finished {
                status,
                signalled: None,
                signals: Signals(Arc::default()),
            });
        }
    };
    spawned(child.id());
    // Signals go through a pidfd: once the command is reaped it refers to
    // a dead process, never to a recycled pid.
    let pidfd = rustix::process::Pid::from_raw(child.id() as i32).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    let signals = Signals(Arc::default());
    let received = Arc::clone(&signals.0);
    std::thread::spawn(move || {
        loop {
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid set and out-pointer.
            let signal = unsafe { libc::sigwaitinfo(&set, &mut info) };
            if signal < 0 {
                continue;
            }
            if TERMINATING.contains(&signal) {
                received.store(signal, Ordering::SeqCst);
            }
            // A terminal's Ctrl-C (SI_KERNEL) already reached the command,
            // which shares our process group; pass on only what was sent
            // to sockcheck itself.
            if info.si_code != libc::SI_KERNEL
                && let (Some(pidfd), Some(signal)) =
                    (&pidfd, rustix::process::Signal::from_named_raw(signal))
            {
                let _ = rustix::process::pidfd_send_signal(pidfd, signal);
            }
        }
    });
    let status = child.wait().map_err(|e| Error::syscall("waitpid", e))?;
    let signalled = signals.take();
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        _ => 1,
    };
    Ok(Finished {
        status,
        signalled,
        signals,
    })
}
