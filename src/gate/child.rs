//! `run`'s command: spawned with the leased address in its environment, with
//! signals passed through, and its exit status as a shell would report it.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command};
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
    let (set, restore) = block_forwarded();
    // The forwarding thread starts before the command does: a process that
    // cannot start a thread (pids.max, RLIMIT_NPROC) fails here, with exit 3
    // and nothing run, rather than with a command it cannot look after.
    let (signals, pid_for_thread) = forward(set)?;
    let mut child = match spawn(command(argv, env, restore), &restore) {
        Ok(child) => child,
        Err(finished) => return Ok(finished),
    };
    let _ = pid_for_thread.send(child.id());
    spawned(child.id());
    let status = child.wait().map_err(|e| Error::syscall("waitpid", e))?;
    let signalled = signals.take();
    Ok(Finished {
        status: shell_status(status),
        signalled,
        signals,
    })
}

/// Blocks the [`FORWARDED`] signals in this thread (and so in the
/// forwarding thread spawned after), which waits for them with
/// sigwaitinfo instead. Returns the blocked set and the signal mask
/// sockcheck had before.
/// The signal mask sockcheck started with, from before the first
/// [`block_forwarded`]: what the command gets back, even when `run` ran on
/// a thread that inherited an already blocked mask (`--netns`).
static STARTED_WITH: std::sync::OnceLock<libc::sigset_t> = std::sync::OnceLock::new();

/// Blocks the forwarded signals on this thread (and the threads it
/// starts); returns them and the mask sockcheck started with. `run --netns`
/// calls it on the main thread before the namespace's thread exists, so no
/// thread is left where a forwarded signal would kill sockcheck.
pub fn block_forwarded() -> (libc::sigset_t, libc::sigset_t) {
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain libc calls on a local sigset.
    unsafe {
        libc::sigemptyset(&mut set);
        for signal in FORWARDED {
            libc::sigaddset(&mut set, signal);
        }
    }
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigsets.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    (set, *STARTED_WITH.get_or_init(|| old))
}

/// The command for `argv` with `env` added, whose child sets its signal
/// mask back to `restore` (the mask sockcheck started with) before exec.
fn command(argv: &[OsString], env: &[(&str, String)], restore: libc::sigset_t) -> Command {
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
    command
}

/// Forks and execs the command. When it cannot be run: puts the signal
/// mask `restore` back, says why, and gives the status a shell would (127
/// not found, 126 found but not runnable).
fn spawn(mut command: Command, restore: &libc::sigset_t) -> Result<Child, Finished> {
    command.spawn().map_err(|e| {
        // SAFETY: restoring our own mask.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, restore, std::ptr::null_mut()) };
        // The program's name is the user's bytes: escaped, so none can
        // act on the terminal.
        crate::output::failure(&format!(
            "sockcheck: cannot run '{}': {e}\n",
            crate::text::escape(command.get_program().as_encoded_bytes())
        ));
        // What a shell answers: 127 not found, 126 found but not runnable.
        let status = if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        };
        Finished {
            status,
            signalled: None,
            signals: Signals(Arc::default()),
        }
    })
}

/// Starts the thread that waits (sigwaitinfo) for the blocked signals in
/// `set`, records each terminating one in the returned [`Signals`], and
/// passes each sent to sockcheck itself on to the command `pid`.
fn forward(set: libc::sigset_t) -> Result<(Signals, std::sync::mpsc::Sender<u32>), Error> {
    let signals = Signals(Arc::default());
    let received = Arc::clone(&signals.0);
    let (pid_tx, pid_rx) = std::sync::mpsc::channel::<u32>();
    let started = std::thread::Builder::new()
        .name("sockcheck-signals".into())
        .spawn(move || {
            // Signals go through a pidfd: once the command is reaped it refers
            // to a dead process, never to a recycled pid. None when the command
            // did not start.
            let pidfd = pid_rx.recv().ok().and_then(|pid| {
                let pid = rustix::process::Pid::from_raw(pid as i32)?;
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            });
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
    started.map_err(|e| {
        Error::syscall(
            "starting run's signal-forwarding thread (pthread_create)",
            e,
        )
    })?;
    Ok((signals, pid_tx))
}

/// The exit status a shell gives for a child that ended: its exit code, or
/// 128+N when signal N killed it.
fn shell_status(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        _ => 1,
    }
}
