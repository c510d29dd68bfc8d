//! `sockcheck run POOL -- CMD`: lease, run, then check for lingering
//! holders, report them, and keep the address from the next test.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::acquire::lease;
use super::forensic::{self, Forensic};
use super::openers::Attribution;
use super::refusal::report_refusal;
use super::state::{self, Quarantine};
use super::{Context, LeaseContext};
use super::{POLL, child, reap};
use crate::document::Document;
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
    let Some(leased_ports) = lease_ports(ctx, &dir, &me, address, options.lease_ports)? else {
        return Ok(ExitStatus::NoAddress);
    };
    let leased = Leased {
        dir: &dir,
        address,
        companions: leased_ports.iter().map(|&p| Subject::Port(p)).collect(),
    };
    // The leased ports are checked after the command like the address's.
    let checked = ctx.with_ports(&leased_ports);
    let ctx = &checked;
    let env = command_env(ctx, address, &leased_ports);
    // Attached before the command starts, so every listen() it makes is seen.
    let attribution = Attribution::start(ctx.sources.bpf, address, &ctx.ports);
    if ctx.output.verbose {
        ctx.output.note(&format!(
            "sockcheck: leased {address} for the command\nsockcheck: {}\n",
            attribution.describe()
        ));
    }
    let finished = child::run(&options.command, &env, |pid| live_on_in(ctx, &leased, pid));
    let exited = state::now();
    drop(reserve);
    let finished = finished.inspect_err(|_| leased.release_all())?;
    after(ctx, &leased, &finished, exited, options, attribution)
}

/// What `run` leased: the address, and the ports of `--lease-ports` (its
/// companions), in the state directory `dir`.
struct Leased<'a> {
    dir: &'a Dir,
    address: IpAddr,
    companions: Vec<Subject>,
}

impl Leased<'_> {
    /// The address and its companions.
    fn subjects(&self) -> impl Iterator<Item = Subject> + '_ {
        std::iter::once(Subject::Address(self.address)).chain(self.companions.iter().copied())
    }

    /// Ends every lease, as far as it can.
    fn release_all(&self) {
        release_all(self.dir, &self.companions);
        let _ = lease::agent::release(self.dir, self.address);
    }

    /// Ends every lease; an error is the address's.
    fn release(&self) -> Result<bool, Error> {
        release_all(self.dir, &self.companions);
        lease::agent::release(self.dir, self.address)
    }
}

/// `--lease-ports N`: N ports leased beside the address, for the command's
/// own servers; `None` (and the address released, with a note) when there
/// are not N free.
fn lease_ports(
    ctx: &Context,
    dir: &Dir,
    me: &OwnerHandle,
    address: IpAddr,
    count: usize,
) -> Result<Option<Vec<u16>>, Error> {
    let leased = super::ports::lease_for(dir, me, address, count);
    if !matches!(leased, Ok(Some(_))) {
        let _ = lease::agent::release(dir, address);
    }
    if let Ok(None) = leased {
        ctx.output.note(&format!(
            "sockcheck: not {count} free ports in the default range for --lease-ports\n"
        ));
    }
    leased
}

/// The command's environment: SOCKCHECK_ADDR; SOCKCHECK_PORT, the first
/// leased port; SOCKCHECK_PORTS, the leased ports (else the checked ones).
fn command_env(
    ctx: &Context,
    address: IpAddr,
    leased_ports: &[u16],
) -> Vec<(&'static str, String)> {
    let ports = if leased_ports.is_empty() {
        &ctx.ports
    } else {
        leased_ports
    };
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut env = vec![("SOCKCHECK_ADDR", address.to_string())];
    if let Some(first) = leased_ports.first() {
        env.push(("SOCKCHECK_PORT", first.to_string()));
    }
    env.push(("SOCKCHECK_PORTS", ports.join(",")));
    env
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
fn live_on_in(ctx: &Context, leased: &Leased, pid: u32) {
    let command = match OwnerHandle::open(pid, "run's command") {
        Ok(command) => command,
        // The command has exited already (`-- true`): there is nothing to
        // outlive `run`, and the lease stays run's, as it should.
        Err(Error::Usage(_)) => return,
        Err(e) => {
            ctx.output.note(&format!(
                "sockcheck: the lease of {} could not be tied to the command: {e}\n",
                leased.address
            ));
            return;
        }
    };
    for subject in leased.subjects() {
        if let Err(e) = lease::agent::attach(leased.dir, subject, command.owner, &command.pidfd) {
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
fn after(
    ctx: &Context,
    leased: &Leased,
    finished: &child::Finished,
    exited: u64,
    options: &RunOptions,
    attribution: Attribution,
) -> Result<ExitStatus, Error> {
    let started = Instant::now();
    let report = match linger(ctx, leased, finished, started + options.linger)? {
        Lingered::Free(status) => return Ok(status),
        Lingered::Held(report) => report,
    };
    // The linger check is over: stop the watch and name the openers.
    let stopped = attribution.stop();
    let (holders, hidden) = forensic::holders(&report, &stopped.openers);
    let mut forensic = Forensic {
        schema: forensic::SCHEMA,
        interrupted_by: interrupted(finished).map(signal_name),
        address: leased.address,
        ports: ctx.ports.clone(),
        command: options
            .command
            .iter()
            .map(|w| crate::text::Bytes(w.as_encoded_bytes().to_vec()))
            .collect(),
        command_status: finished.status,
        command_exited: exited,
        linger_seconds: started.elapsed().as_secs_f64(),
        verdict: report.verdict,
        attribution: stopped.status(&holders),
        holders,
        hidden,
        quarantined: true,
        reaped: Vec::new(),
        inspection: report,
    };
    if options.reap {
        reap_holders(ctx, &mut forensic, options.grace)?;
    }
    let failed = !report_and_keep(ctx, leased, &forensic, options);
    Ok(match outcome(finished, false) {
        // A state failure is exit 3, unless the lingering (4) says more.
        ExitStatus::Free | ExitStatus::Command(0) if failed => ExitStatus::Failed,
        status => status,
    })
}

/// How the linger check ended.
enum Lingered {
    /// The address came free: released, and `run`'s exit status.
    Free(ExitStatus),
    /// Still held at the deadline (or when a signal cut the wait short):
    /// the inspection with owners.
    Held(crate::report::AddressReport),
}

/// Looks at the address every [`POLL`] until it is free or `deadline`
/// passes (or a signal comes).
fn linger(
    ctx: &Context,
    leased: &Leased,
    finished: &child::Finished,
    deadline: Instant,
) -> Result<Lingered, Error> {
    loop {
        let view = inspect::kernel_view(&ctx.ports)?;
        if ctx.one(&view, leased.address, false).verdict == Verdict::Free {
            // Released before run exits, so whoever runs next finds it free
            // (the agent would end it when run exits, a moment later).
            return Ok(Lingered::Free(match leased.release() {
                Ok(_) => outcome(finished, true),
                Err(e) => {
                    ctx.output
                        .warn(&format!("sockcheck: releasing {}: {e}\n", leased.address));
                    match outcome(finished, true) {
                        ExitStatus::Free => ExitStatus::Failed,
                        status => status,
                    }
                }
            }));
        }
        if Instant::now() >= deadline || interrupted(finished).is_some() {
            return Ok(Lingered::Held(ctx.one(&view, leased.address, true)));
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// The signal that cut the command or the wait short, if one did.
fn interrupted(finished: &child::Finished) -> Option<i32> {
    finished.signals.received().or(finished.signalled)
}

/// `run`'s exit status: 128+N for a signal during the wait; else the
/// command's, or [`ExitStatus::Lingering`] when it succeeded but left the
/// address held (`free`: it did not).
fn outcome(finished: &child::Finished, free: bool) -> ExitStatus {
    match finished.signals.received() {
        Some(signal) => ExitStatus::Command(128u8.saturating_add(signal as u8)),
        None if free => command_status(finished.status),
        None if finished.status == 0 => ExitStatus::Lingering,
        None => ExitStatus::Command(finished.status),
    }
}

/// `--reap`: only the holders the report names, while they still hold
/// those sockets; the address is not quarantined when that freed it.
fn reap_holders(ctx: &Context, forensic: &mut Forensic, grace: Duration) -> Result<(), Error> {
    let found: Vec<reap::Found> = forensic.holders.iter().map(reap::Found::from).collect();
    forensic.reaped = reap::reap(&found, grace, false);
    let view = inspect::kernel_view(&ctx.ports)?;
    if ctx.one(&view, forensic.address, false).verdict == Verdict::Free {
        forensic.quarantined = false;
    }
    Ok(())
}

/// The report (first: nothing that happens to the state can lose it), then
/// the quarantine, or the release when reaping freed the address. Says
/// what failed, and returns whether everything held.
fn report_and_keep(
    ctx: &Context,
    leased: &Leased,
    forensic: &Forensic,
    options: &RunOptions,
) -> bool {
    ctx.output.note(&forensic.human(&ctx.output));
    // `--json`: the same report on stdout, after the command's own output.
    if ctx.output.json
        && let Err(e) = ctx.output.print(&crate::output::json(forensic))
    {
        ctx.output.warn(&format!(
            "sockcheck: writing the run report to stdout: {e}\n"
        ));
    }
    let mut held = true;
    if let Some(path) = &options.report
        && let Err(e) = forensic::write(forensic, path)
    {
        ctx.output.warn(&format!("sockcheck: {e}\n"));
        held = false;
    }
    if forensic.quarantined {
        held &= quarantine(ctx, leased, forensic, options);
    } else if let Err(e) = leased.release() {
        ctx.output
            .warn(&format!("sockcheck: releasing {}: {e}\n", leased.address));
        held = false;
    }
    held
}

/// Keeps a lingering address from being handed out: its lease lives on in
/// every lingering holder the report names (the lease agent ends it when
/// they are all gone), which every user and backend sees; and this user's
/// quarantine records why, with the report's path. Says what failed, and
/// returns whether everything held.
fn quarantine(ctx: &Context, leased: &Leased, forensic: &Forensic, options: &RunOptions) -> bool {
    let address = forensic.address;
    for holder in &forensic.holders {
        let tied = OwnerHandle::open(holder.pid, "a lingering holder").and_then(|h| {
            leased.subjects().try_for_each(|subject| {
                lease::agent::attach(leased.dir, subject, h.owner, &h.pidfd)
            })
        });
        if let Err(e) = tied {
            ctx.output.warn(&format!(
                "sockcheck: the lease of {address} could not be kept for pid {}: {e}\n",
                holder.pid
            ));
        }
    }
    let recorded = super::open(&ctx.output, leased.dir).and_then(|(store, mut state)| {
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
        return false;
    }
    true
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
