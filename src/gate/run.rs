//! `sockcheck run POOL -- CMD`: lease, run, then check for lingering
//! holders, report them, and keep the address from the next test.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::acquire::{lease, report_refusal};
use super::forensic::{self, Forensic};
use super::openers::Attribution;
use super::state::{self, Quarantine};
use super::{Context, LeaseContext};
use super::{POLL, child, reap};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::inspect;
use crate::lease::{self, Dir, OwnerHandle, Subject};
use crate::report::Verdict;

/// Options of `sockcheck run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub linger: Duration,
    pub report: Option<PathBuf>,
    pub reap: bool,
    pub grace: Duration,
    /// How long to wait for a free address before giving up (exit 5).
    pub wait: Option<Duration>,
    /// `--lease-ports N`: ports leased for the command too.
    pub lease_ports: usize,
    pub command: Vec<OsString>,
}

/// `sockcheck run POOL -- CMD`.
pub fn run(ctx: &LeaseContext, pool: &[IpAddr], options: &RunOptions) -> Result<ExitStatus, Error> {
    if options.command.is_empty() {
        return Err(Error::Usage("run: no command given after --".into()));
    }
    if let Some(path) = &options.report {
        super::report_file::check(path)?;
    }
    let me = OwnerHandle::open(std::process::id(), "run")?;
    let dir = Dir::open(&ctx.state_dir)?;
    // Room for the duties after the command, decided before anything is
    // leased or run.
    let reserve = Reserve::new(RESERVED_FDS)?;
    let address = match lease(ctx, &dir, pool, &me, options.wait, false)? {
        Ok(address) => address,
        Err(refusal) => {
            report_refusal(ctx, pool.len(), &refusal, options.wait.is_some())?;
            return Ok(ExitStatus::NoAddress);
        }
    };
    // --lease-ports: leased beside the address, for the command's own
    // servers, and checked after it like the address's ports.
    let leased_ports = match super::ports::lease_for(&dir, &me, address, options.lease_ports) {
        Ok(ports) => ports,
        Err(e) => {
            let _ = lease::agent::release(&dir, address);
            return Err(e);
        }
    };
    let Some(leased_ports) = leased_ports else {
        let _ = lease::agent::release(&dir, address);
        ctx.output.note(&format!(
            "sockcheck: not {} free ports in the default range for --lease-ports\n",
            options.lease_ports
        ));
        return Ok(ExitStatus::NoAddress);
    };
    let companions: Vec<Subject> = leased_ports.iter().map(|&p| Subject::Port(p)).collect();
    let checked = ctx.with_ports(&leased_ports);
    let ctx = &checked;
    let ports = if leased_ports.is_empty() {
        &ctx.ports
    } else {
        &leased_ports
    }
    .iter()
    .map(u16::to_string)
    .collect::<Vec<_>>()
    .join(",");
    let mut env = vec![("SOCKCHECK_ADDR", address.to_string())];
    if let Some(first) = leased_ports.first() {
        env.push(("SOCKCHECK_PORT", first.to_string()));
    }
    env.push(("SOCKCHECK_PORTS", ports));
    if ctx.output.verbose {
        ctx.output
            .note(&format!("sockcheck: leased {address} for the command\n"));
    }
    // Attached before the command starts, so every listen() it makes is seen.
    let attribution = Attribution::start(ctx.sources.bpf, address, &ctx.ports);
    if ctx.output.verbose {
        ctx.output
            .note(&format!("sockcheck: {}\n", attribution.describe()));
    }
    let finished = child::run(&options.command, &env, |pid| {
        live_on_in(ctx, &dir, address, &companions, pid)
    });
    let exited = state::now();
    drop(reserve);
    let finished = match finished {
        Ok(finished) => finished,
        Err(e) => {
            let _ = lease::agent::release(&dir, address);
            release_all(&dir, &companions);
            return Err(e);
        }
    };
    after(
        ctx,
        &dir,
        address,
        &companions,
        &finished,
        exited,
        options,
        attribution,
    )
}

/// File descriptors the linger check, the report and the quarantine need
/// at most at once (a netlink socket, /proc directories, pidfds of the
/// holders, the report, the state directory's files, the agent's socket).
const RESERVED_FDS: usize = 24;

/// Descriptors held while the command runs and let go after it: a `run`
/// whose open-files limit leaves no room for its duties fails (exit 3)
/// before the command starts, not with a command it cannot report on.
struct Reserve(#[allow(dead_code)] Vec<std::os::fd::OwnedFd>);

impl Reserve {
    fn new(n: usize) -> Result<Reserve, Error> {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let fd = rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| {
                Error::syscall(
                    format!(
                        "keeping {n} file descriptors for the checks after the command \
                         (raise the open-files limit)"
                    ),
                    e.into(),
                )
            })?;
            held.push(fd);
        }
        Ok(Reserve(held))
    }
}

/// Makes the lease of `address` live on in the command `pid` too, so that
/// if `run` itself is killed, the address stays leased for as long as the
/// command runs. (Should that fail, the lease stays `run`'s alone, and a
/// note says so.)
fn live_on_in(ctx: &Context, dir: &Dir, address: IpAddr, companions: &[Subject], pid: u32) {
    let command = match OwnerHandle::open(pid, "run's command") {
        Ok(command) => command,
        Err(e) => {
            ctx.output.note(&format!(
                "sockcheck: the lease of {address} could not be tied to the command: {e}\n"
            ));
            return;
        }
    };
    for subject in std::iter::once(Subject::Address(address)).chain(companions.iter().copied()) {
        if let Err(e) = lease::agent::attach(dir, subject, command.owner, &command.pidfd) {
            ctx.output.note(&format!(
                "sockcheck: the lease of {subject} could not be tied to the command: {e}\n"
            ));
        }
    }
}

/// Ends the leases of `subjects`, as far as it can.
fn release_all(dir: &Dir, subjects: &[Subject]) {
    for &subject in subjects {
        let _ = lease::agent::release(dir, subject);
    }
}

/// After the command: wait up to --linger for the address to be free, and
/// report, quarantine and reap what still holds it. SIGINT, SIGTERM, SIGHUP
/// or SIGQUIT (a cancelled CI job) cut the wait short: the address is
/// inspected once, reported and quarantined as at the deadline. A signal
/// that came while the command ran was the command's to answer, and its
/// status stands; one that comes during the wait makes `run` exit 128+N.
#[allow(clippy::too_many_arguments)]
fn after(
    ctx: &Context,
    dir: &Dir,
    address: IpAddr,
    companions: &[Subject],
    finished: &child::Finished,
    exited: u64,
    options: &RunOptions,
    attribution: Attribution,
) -> Result<ExitStatus, Error> {
    let status = finished.status;
    let started = Instant::now();
    let deadline = started + options.linger;
    let interrupted = || finished.signals.received().or(finished.signalled);
    let done = |free: bool| match finished.signals.received() {
        Some(signal) => ExitStatus::Command(128u8.saturating_add(signal as u8)),
        None if free => command_status(status),
        None if status == 0 => ExitStatus::Lingering,
        None => ExitStatus::Command(status),
    };
    let report = loop {
        let view = inspect::kernel_view(&ctx.ports)?;
        let quick = ctx.one(&view, address, false);
        if quick.verdict == Verdict::Free {
            // Released before run exits, so whoever runs next finds it free
            // (the agent would end it when run exits, a moment later).
            release_all(dir, companions);
            return Ok(match lease::agent::release(dir, address) {
                Ok(_) => done(true),
                Err(e) => {
                    ctx.output
                        .warn(&format!("sockcheck: releasing {address}: {e}\n"));
                    match done(true) {
                        ExitStatus::Free => ExitStatus::Failed,
                        status => status,
                    }
                }
            });
        }
        if Instant::now() >= deadline || interrupted().is_some() {
            break ctx.one(&view, address, true);
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    };
    // The linger check is over: stop the watch and name the openers.
    let stopped = attribution.stop();
    let (holders, hidden) = forensic::holders(&report, &stopped.openers);
    let attribution = stopped.status(&holders);
    let mut forensic = Forensic {
        schema: forensic::SCHEMA,
        interrupted_by: interrupted().map(signal_name),
        address,
        ports: ctx.ports.clone(),
        command: options
            .command
            .iter()
            .map(|w| crate::text::Bytes(w.as_encoded_bytes().to_vec()))
            .collect(),
        command_status: status,
        command_exited: exited,
        linger_seconds: started.elapsed().as_secs_f64(),
        verdict: report.verdict,
        holders,
        hidden,
        quarantined: true,
        reaped: Vec::new(),
        attribution,
        inspection: report,
    };
    if options.reap {
        // Only these processes, while they still hold these sockets.
        let found: Vec<reap::Found> = forensic.holders.iter().map(reap::Found::from).collect();
        forensic.reaped = reap::reap(&found, options.grace, false);
        let view = inspect::kernel_view(&ctx.ports)?;
        if ctx.one(&view, address, false).verdict == Verdict::Free {
            forensic.quarantined = false;
        }
    }
    // The report first: nothing that happens to the state can lose it.
    ctx.output.note(&forensic::markdown(&forensic));
    let mut failed = false;
    if let Some(path) = &options.report
        && let Err(e) = forensic::write(&forensic, path)
    {
        ctx.output.warn(&format!("sockcheck: {e}\n"));
        failed = true;
    }
    if forensic.quarantined {
        failed |= !quarantine(ctx, dir, &forensic, companions, options);
    } else if let Err(e) = {
        release_all(dir, companions);
        lease::agent::release(dir, address)
    } {
        ctx.output
            .warn(&format!("sockcheck: releasing {address}: {e}\n"));
        failed = true;
    }
    Ok(match done(false) {
        // A state failure is exit 3, unless the lingering (4) says more.
        ExitStatus::Free | ExitStatus::Command(0) if failed => ExitStatus::Failed,
        status => status,
    })
}

/// Keeps a lingering address from being handed out: its lease lives on in
/// every lingering holder the report names (the lease agent ends it when
/// they are all gone), which every user and backend sees; and this user's
/// quarantine records why, with the report's path. Says what failed, and
/// returns whether everything held.
fn quarantine(
    ctx: &Context,
    dir: &Dir,
    forensic: &Forensic,
    companions: &[Subject],
    options: &RunOptions,
) -> bool {
    let address = forensic.address;
    let mut held = true;
    for holder in &forensic.holders {
        let tied = OwnerHandle::open(holder.pid, "a lingering holder").and_then(|h| {
            std::iter::once(Subject::Address(address))
                .chain(companions.iter().copied())
                .try_for_each(|subject| lease::agent::attach(dir, subject, h.owner, &h.pidfd))
        });
        if let Err(e) = tied {
            ctx.output.warn(&format!(
                "sockcheck: the lease of {address} could not be kept for pid {}: {e}\n",
                holder.pid
            ));
        }
    }
    let recorded = super::open(&ctx.output, dir).and_then(|(store, mut state)| {
        state.quarantine.retain(|q| q.address != address);
        state.quarantine.push(Quarantine {
            address,
            since: state::now(),
            reason: crate::gate::summary(&forensic.inspection),
            report: options.report.clone(),
        });
        store.save(&state)
    });
    if let Err(e) = recorded {
        ctx.output
            .warn(&format!("sockcheck: quarantining {address}: {e}\n"));
        held = false;
    }
    held
}

/// `SIGTERM` for 15.
fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        other => format!("signal {other}"),
    }
}

fn command_status(status: u8) -> ExitStatus {
    if status == 0 {
        ExitStatus::Free
    } else {
        ExitStatus::Command(status)
    }
}
