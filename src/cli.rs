//! The command line: what the user typed (clap, with every value parsed by
//! [`input`]) apart from what it resolves to (output settings, a gate,
//! the commands' options), and the dispatch to commands. Only `main`
//! imports this module.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::exit::{self, ExitStatus};
use crate::gate::{self, Gate, RunOptions};
use crate::input::{self, Pool, Ports};
use crate::inspect::{self, BpfMode, Query, Sources};
use crate::output::{self, ColorChoice, Output, emit};
use crate::text;

const ABOUT: &str =
    "Can this loopback address go to a new server right now, and if not, who holds it?";

const AFTER_HELP: &str = "\
Run 'sockcheck --help' for the verdicts, the environment and the exit statuses; \
'sockcheck COMMAND --help' for a command's own.";

const AFTER_LONG_HELP: &str = "\
Verdicts, most severe first:
  foreign      a wildcard listener (0.0.0.0, or [::] dual-stack) covers the address
  busy         a listener bound to the address (or ::ffff:ADDR) holds a port
  conflict     the canary bind fails, but no listener explains it
  unavailable  the address is not local (EADDRNOTAVAIL)
  free         nothing covers it and the canary bind succeeds on every port

Environment:
  SOCKCHECK_PORTS      ports when --ports is not given (default 9925,9926)
  SOCKCHECK_POOL       the pool of scan, acquire and run when none is given
                       (default 127.0.0.2-127.0.0.33)
  SOCKCHECK_STATE_DIR  where leases live when --state-dir is not given
  SOCKCHECK_BTF_CACHE  0 keeps no per-kernel cache of the reduced kernel BTF
                       (else in $XDG_CACHE_HOME/sockcheck or ~/.cache/sockcheck)
  NO_COLOR             disables colour when set and not empty
  CLICOLOR_FORCE       colour even when stdout is not a terminal (not with NO_COLOR)
";

#[derive(Debug, Parser)]
#[command(
    name = "sockcheck",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    after_long_help = format!("{AFTER_LONG_HELP}\n{}", exit::HELP),
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    check: CheckArgs,
    /// Where leases live (for the lease commands, given before them).
    #[arg(long, value_name = "DIR", hide = true)]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect addresses (the default command).
    #[command(after_long_help = exit::HELP_CHECK)]
    Check(CheckArgs),
    /// One line per address of a pool: its verdict and why.
    #[command(after_long_help = exit::HELP_SCAN)]
    Scan {
        #[command(flatten)]
        pool: PoolArg,
        #[command(flatten)]
        ports: PortsArg,
        #[command(flatten)]
        sources: SourceArgs,
        #[command(flatten)]
        netns: NetnsArg,
    },
    /// Every address with a socket on the ports (wildcard listeners too),
    /// with its verdict, its listeners and their holders.
    #[command(after_long_help = exit::HELP_LIST)]
    List {
        #[command(flatten)]
        ports: PortsArg,
        #[command(flatten)]
        sources: SourceArgs,
        #[command(flatten)]
        netns: NetnsArg,
    },
    /// End the processes holding listeners that cover an address: SIGTERM,
    /// then SIGKILL after --grace for those still holding.
    ///
    /// Only the processes the inspection found, and only while they still
    /// hold those sockets: one that exited (its pid may be another
    /// process's now) or closed them is listed as gone or no longer
    /// holding it, and not signalled. Never signals pid 1, sockcheck itself or its ancestors; an
    /// unprivileged user signals only their own processes, and the others
    /// are listed as not permitted.
    #[command(after_long_help = exit::HELP_REAP)]
    Reap {
        /// The address whose holders to end: 127.0.0.2, ::1, [::1].
        #[arg(value_name = "ADDRESS", value_parser = input::Address)]
        address: std::net::IpAddr,
        /// How long to wait between SIGTERM and SIGKILL.
        #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = input::duration())]
        grace: Duration,
        /// Say what would be signalled, and signal nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        ports: PortsArg,
        #[command(flatten)]
        sources: SourceArgs,
        #[command(flatten)]
        netns: NetnsArg,
    },
    /// Wait until an address is free.
    #[command(after_long_help = exit::HELP_WAIT)]
    Wait {
        /// The address to wait for: 127.0.0.2, ::1, [::1].
        #[arg(value_name = "ADDRESS", value_parser = input::Address)]
        address: std::net::IpAddr,
        /// Give up after this long (500ms, 30s, 1m30s; a bare number is seconds).
        #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = input::duration())]
        timeout: Duration,
        /// Wait even when a wildcard listener covers the address.
        #[arg(long)]
        allow_foreign: bool,
        #[command(flatten)]
        ports: PortsArg,
        #[command(flatten)]
        sources: SourceArgs,
        #[command(flatten)]
        netns: NetnsArg,
    },
    /// Lease the first free address of a pool and print it.
    #[command(after_long_help = exit::HELP_ACQUIRE)]
    Acquire {
        #[command(flatten)]
        pool: PoolArg,
        /// The process that owns the lease [default: sockcheck's parent]
        #[arg(long, value_name = "PID")]
        owner: Option<u32>,
        /// Wait this long for an address instead of failing at once.
        #[arg(long, value_name = "DURATION", value_parser = input::duration())]
        wait: Option<Duration>,
        /// Keep waiting when every candidate is foreign (a wildcard
        /// listener covers it) instead of failing at once.
        #[arg(long)]
        allow_foreign: bool,
        #[command(flatten)]
        ports: PortsArg,
        #[command(flatten)]
        sources: SourceArgs,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        netns: NetnsArg,
    },
    /// Lease free TCP ports (get-port without the race) and print them,
    /// one per line.
    ///
    /// A port is free on --host when no socket that would make a server's
    /// bind fail is on it (a wildcard of either family included), nobody
    /// has leased it, and a bind with SO_REUSEADDR succeeds; ports with no
    /// TIME_WAIT remnant are chosen first. A port lease holds the port on
    /// every host, until the owner exits or releases it.
    #[command(name = "acquire-port", after_long_help = exit::HELP_ACQUIRE_PORT)]
    AcquirePort {
        /// Ports to choose from: 20000, 20000-20099, or a comma list
        /// [default: 15000-32767 less the kernel's ephemeral
        /// (ip_local_port_range) and reserved ports]
        #[arg(value_name = "RANGE", value_parser = input::port_range())]
        range: Option<input::PortRange>,
        /// The host the ports must be free on.
        #[arg(long, default_value = "127.0.0.1", value_name = "ADDRESS", value_parser = input::Address)]
        host: std::net::IpAddr,
        /// How many ports to lease.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        count: u16,
        /// The process that owns the leases [default: sockcheck's parent]
        #[arg(long, value_name = "PID")]
        owner: Option<u32>,
        /// Wait this long for free ports instead of failing at once.
        #[arg(long, value_name = "DURATION", value_parser = input::duration())]
        wait: Option<Duration>,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        netns: NetnsArg,
    },
    /// Give leased ports back.
    #[command(name = "release-port", after_long_help = exit::HELP_RELEASE_PORT)]
    ReleasePort {
        /// The leased ports to give back.
        #[arg(value_name = "PORT", required = true, value_parser = clap::value_parser!(u16).range(1..))]
        ports: Vec<u16>,
        /// Accepted for symmetry with acquire-port (a port lease holds the
        /// port on every host); checked to be an address.
        #[arg(long, value_name = "ADDRESS", value_parser = input::Address)]
        host: Option<std::net::IpAddr>,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        netns: NetnsArg,
    },
    /// Give a leased address back.
    #[command(after_long_help = exit::HELP_RELEASE)]
    Release {
        /// The leased address to give back.
        #[arg(value_name = "ADDRESS", value_parser = input::Address)]
        address: std::net::IpAddr,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        netns: NetnsArg,
    },
    /// List leases and quarantined addresses.
    #[command(after_long_help = exit::HELP_LEASES)]
    Leases {
        /// Only addresses of this pool (a range, a CIDR or a comma list).
        #[arg(value_name = "POOL", value_parser = input::pool())]
        pool: Option<Pool>,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        netns: NetnsArg,
    },
    /// Lease an address, run CMD with SOCKCHECK_ADDR set, then check for
    /// lingering holders.
    #[command(after_long_help = exit::HELP_RUN)]
    Run(RunArgs),
    /// Stream TCP listeners appearing and disappearing on the ports, with
    /// the process and thread that did it (needs eBPF).
    ///
    /// Prints one line per event (--json: one compact JSON object per line)
    /// until Ctrl-C (SIGINT), SIGTERM, --count or --timeout. Once attached
    /// it says so on stderr. Events the kernel had no room for are counted:
    /// `lost N events` on stderr (--json: also a `lost` event) as soon as
    /// it is noticed, and the watch exits 1.
    #[command(after_long_help = exit::HELP_WATCH)]
    Watch {
        /// Only events whose address covers one of these (the address,
        /// ::ffff:ADDR, or a wildcard) [default: every address]
        #[arg(value_name = "ADDRESS", value_parser = input::Address)]
        addresses: Vec<std::net::IpAddr>,
        /// Stop after this many events.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Stop after this long (500ms, 30s, 1m30s; a bare number is seconds).
        #[arg(long, value_name = "DURATION", value_parser = input::duration())]
        timeout: Option<Duration>,
        /// Only sockets of this network namespace: NAME (under /run/netns,
        /// as `ip netns` names them), a PATH to one, or pid:PID (that
        /// process's) [default: sockcheck's own]
        #[arg(long, value_name = "NAME|PATH|pid:PID", conflicts_with = "all_netns")]
        netns: Option<String>,
        /// Sockets of every network namespace (a line names the namespace
        /// when it is not sockcheck's own).
        #[arg(long)]
        all_netns: bool,
        /// The kernel's buffer of events not yet printed: more holds more
        /// of a burst before events are lost (4096, 256K, 4M: a power of two
        /// multiple of the page size; 80 bytes an event).
        #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = input::ring_size())]
        ring_size: crate::bpf::RingSize,
        #[command(flatten)]
        ports: PortsArg,
    },
    /// What this user and kernel let sockcheck see, and why not.
    #[command(after_long_help = exit::HELP_DOCTOR)]
    Doctor,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_long_help = exit::HELP_GENERATE)]
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `sockcheck man | man -l -`.
    #[command(after_long_help = exit::HELP_GENERATE)]
    Man,
    /// The lease agent (started by acquire and run; not for people).
    #[command(name = "__lease-agent", hide = true)]
    LeaseAgent {
        /// The state directory whose agent this is.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    pool: PoolArg,
    /// How long the address may stay held after CMD exits.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = input::duration())]
    linger: Duration,
    /// Write the forensic report here (.json: JSON, otherwise Markdown).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// SIGTERM lingering holders, then SIGKILL after --grace.
    #[arg(long)]
    reap: bool,
    /// How long --reap waits between SIGTERM and SIGKILL.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = input::duration())]
    grace: Duration,
    /// Wait this long for a free address instead of failing at once.
    #[arg(long, value_name = "DURATION", value_parser = input::duration())]
    wait: Option<Duration>,
    /// Also lease N free TCP ports for CMD (as acquire-port does), export
    /// them as SOCKCHECK_PORT (the first) and SOCKCHECK_PORTS, and check
    /// them for lingering holders after CMD like the address's ports.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=32))]
    lease_ports: u16,
    #[command(flatten)]
    ports: PortsArg,
    #[command(flatten)]
    sources: SourceArgs,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    netns: NetnsArg,
    /// Words before `--` that are not the pool (an error).
    #[arg(hide = true)]
    stray: Vec<OsString>,
    /// The command to run, after `--`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Addresses to inspect: 127.0.0.2, ::1, [::1].
    #[arg(value_name = "ADDRESS", value_parser = input::Address)]
    addresses: Vec<std::net::IpAddr>,
    #[command(flatten)]
    ports: PortsArg,
    #[command(flatten)]
    sources: SourceArgs,
    #[command(flatten)]
    netns: NetnsArg,
}

#[derive(Debug, Args)]
struct PoolArg {
    /// A range (127.0.0.2-127.0.0.33), a CIDR (127.0.0.0/27) or a comma
    /// list [default: $SOCKCHECK_POOL, else 127.0.0.2-127.0.0.33]
    #[arg(value_name = "POOL", value_parser = input::pool())]
    pool: Option<Pool>,
}

#[derive(Debug, Args)]
struct PortsArg {
    /// TCP ports: a list (9925,9926), ranges (9925-9927) or both, at most
    /// 64 [default: $SOCKCHECK_PORTS, else 9925,9926]
    #[arg(long, value_name = "P,..", value_parser = input::ports())]
    ports: Option<Ports>,
}

/// Another network namespace to look into.
#[derive(Debug, Args, Default)]
struct NetnsArg {
    /// Inspect another network namespace: NAME (under /run/netns, as `ip
    /// netns` names them), a PATH to one, or pid:PID (that process's).
    /// Needs CAP_SYS_ADMIN.
    #[arg(long, value_name = "NAME|PATH|pid:PID")]
    netns: Option<String>,
}

/// The optional sources of evidence.
#[derive(Debug, Args)]
struct SourceArgs {
    /// Never run the SO_REUSEPORT bind probe.
    #[arg(long)]
    no_probe: bool,
    /// Never duplicate an owner's fd (pidfd_getfd) to read SO_REUSEPORT.
    #[arg(long)]
    no_pidfd: bool,
    /// When to use eBPF [default: auto]
    ///
    /// eBPF needs root or CAP_BPF+CAP_PERFMON, and kernel BTF. auto: only
    /// where it pays (owners on a machine with many open files;
    /// SO_REUSEPORT when nothing cheaper can tell); always; or never.
    #[arg(long, value_name = "WHEN")]
    bpf: Option<BpfChoice>,
}

#[derive(Debug, Args)]
struct StateArgs {
    /// Where leases live [default: $SOCKCHECK_STATE_DIR, else
    /// $XDG_RUNTIME_DIR/sockcheck, else /run/sockcheck for root, else
    /// $TMPDIR/sockcheck-UID]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// What every command may be asked about its output.
#[derive(Debug, Args)]
struct OutputArgs {
    /// One JSON document on stdout (schemas in schema/).
    #[arg(long, global = true)]
    json: bool,
    /// When to colour the output.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    color: ColorArg,
    /// Show every source's status, every socket, and what was tried.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Nothing on stdout and no notes on stderr: the exit status only
    /// (usage errors and failures still print one line on stderr).
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BpfChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColorArg {
    Auto,
    Always,
    Never,
}

/// Parses the command line and runs the command. Errors are returned for
/// `main` to print once, as one line: whatever a message quotes (a value,
/// a path) has no character left that could break the line or act on the
/// terminal. The command keeps the reduced kernel BTF in the per-kernel
/// cache ([`crate::bpf::use_btf_cache`]).
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> Result<ExitStatus, Error> {
    crate::bpf::use_btf_cache(true);
    run_command(args).map_err(one_line)
}

/// The last line of defence for the messages that quote what a user chose
/// (values are escaped and cut where the message is made, with
/// [`text::echo`]; a path, in a `Usage`, `State` or `Syscall` message, may
/// not be).
/// Escapes what [`text::is_hidden`] names, and nothing else, so text
/// escaped already stays as it is.
fn one_line(error: Error) -> Error {
    match error {
        Error::Usage(message) => Error::Usage(text::escape_hidden(&message)),
        Error::UsageTip { message, tip } => Error::UsageTip {
            message: text::escape_hidden(&message),
            tip: text::escape_hidden(&tip),
        },
        Error::State(message) => Error::State(text::escape_hidden(&message)),
        Error::Syscall { call, source } => Error::Syscall {
            call: text::escape_hidden(&call),
            source,
        },
        other => other,
    }
}

fn run_command<I: IntoIterator<Item = OsString>>(args: I) -> Result<ExitStatus, Error> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return clap_outcome(&e),
    };
    let output = Output {
        json: cli.output.json,
        color: output::use_color(match cli.output.color {
            ColorArg::Auto => ColorChoice::Auto,
            ColorArg::Always => ColorChoice::Always,
            ColorArg::Never => ColorChoice::Never,
        }),
        verbose: cli.output.verbose && !cli.output.quiet,
        quiet: cli.output.quiet,
    };
    let top = Top {
        ports: cli.check.ports.ports,
        sources: cli.check.sources,
        netns: cli.check.netns.netns,
        state_dir: cli.state_dir,
        output,
    };
    match cli.command {
        None => check(cli.check.addresses, &top, CheckArgs::none()),
        Some(Command::Check(args)) => check(args.addresses.clone(), &top, args),
        Some(command) => dispatch(command, &top),
    }
}

/// Help and version are printed and succeed; every other clap error is a
/// usage error of one line, with clap's `tip:` (`--port` → `--ports`)
/// kept for a second line.
fn clap_outcome(e: &clap::Error) -> Result<ExitStatus, Error> {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        output::write_stdout(&e.render().to_string())?;
        return Ok(ExitStatus::Free);
    }
    let rendered = e.render().to_string();
    // A value parser of `input` made the message (clap adds no context to
    // it): its values are escaped and cut already.
    let ours = e.kind() == ErrorKind::ValueValidation && e.context().next().is_none();
    let message = if ours {
        let first = rendered.lines().next().unwrap_or_default();
        text::escape_hidden(first.strip_prefix("error: ").unwrap_or(first))
    } else {
        first_line(&rendered)
    };
    // Only a suggestion of what was meant; not "to pass '--x' as a value,
    // use '-- --x'", which a mistyped flag almost never wants.
    let tip = rendered
        .split("\n\n")
        .filter_map(|block| block.trim_start().strip_prefix("tip: "))
        .find(|tip| tip.starts_with("a similar "))
        .map(|tip| text::echo_line(tip.trim_end(), CLAP_LINE_MAX));
    Err(match tip {
        Some(tip) => Error::UsageTip { message, tip },
        None => Error::Usage(message),
    })
}

/// What was given before the subcommand: `sockcheck --ports P --state-dir
/// D leases` reads as `sockcheck leases --ports P --state-dir D`.
struct Top {
    ports: Option<Ports>,
    sources: SourceArgs,
    netns: Option<String>,
    state_dir: Option<PathBuf>,
    output: Output,
}

impl Top {
    fn gate(
        &self,
        ports: PortsArg,
        sources: Option<SourceArgs>,
        state: Option<StateArgs>,
    ) -> Result<Gate, Error> {
        // Only the lease commands (which pass `state`) use the state
        // directory: the others never look for its default (a stat of /run
        // on a free check's path).
        let state_dir = match state {
            Some(state) => state
                .state_dir
                .or(self.state_dir.clone())
                .unwrap_or_else(gate::state::default_dir),
            None => self.state_dir.clone().unwrap_or_default(),
        };
        Ok(Gate {
            ports: self.ports(ports)?,
            state_dir,
            output: self.output,
            sources: self.sources(sources.unwrap_or_else(SourceArgs::none)),
            netns: None,
        })
    }

    fn ports(&self, given: PortsArg) -> Result<Vec<u16>, Error> {
        input::resolve_ports(given.ports.or(self.ports.clone()))
    }

    fn sources(&self, given: SourceArgs) -> Sources {
        let bpf = given.bpf.or(self.sources.bpf).unwrap_or(BpfChoice::Auto);
        Sources {
            pidfd: !(given.no_pidfd || self.sources.no_pidfd),
            probe: !(given.no_probe || self.sources.no_probe),
            bpf: match bpf {
                BpfChoice::Auto => BpfMode::Auto,
                BpfChoice::Always => BpfMode::Always,
                BpfChoice::Never => BpfMode::Never,
            },
        }
    }
}

impl CheckArgs {
    fn none() -> CheckArgs {
        CheckArgs {
            addresses: Vec::new(),
            ports: PortsArg { ports: None },
            sources: SourceArgs::none(),
            netns: NetnsArg::default(),
        }
    }
}

impl SourceArgs {
    fn none() -> SourceArgs {
        SourceArgs {
            no_probe: false,
            no_pidfd: false,
            bpf: None,
        }
    }
}

/// Every command but `check`: the gate commands go to
/// [`dispatch_inspecting`] or [`dispatch_leasing`], the others run here.
fn dispatch(command: Command, top: &Top) -> Result<ExitStatus, Error> {
    refuse_unused(top, &command)?;
    match command {
        Command::Check(_) => unreachable!("check is dispatched by run_command"),
        command @ (Command::Scan { .. }
        | Command::List { .. }
        | Command::Reap { .. }
        | Command::Wait { .. }) => dispatch_inspecting(command, top),
        command @ (Command::Acquire { .. }
        | Command::Release { .. }
        | Command::AcquirePort { .. }
        | Command::ReleasePort { .. }
        | Command::Leases { .. }
        | Command::Run(_)) => dispatch_leasing(command, top),
        Command::Watch {
            addresses,
            count,
            timeout,
            netns,
            all_netns,
            ring_size,
            ports,
        } => crate::watch::watch(&crate::watch::WatchOptions {
            ports: top.ports(ports)?,
            addresses: input::unique(addresses),
            output: top.output,
            count,
            timeout,
            netns: watch_netns(netns.or(top.netns.clone()), all_netns)?,
            ring_size,
        }),
        Command::Doctor => crate::doctor::doctor(top.output),
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
        Command::LeaseAgent { dir } => crate::lease::agent::serve(&dir),
    }
}

/// Which of the options given before it a command uses: `--ports`, the
/// sources (`--no-probe`, `--no-pidfd`, `--bpf`), `--netns`, `--state-dir`.
fn takes(command: &Command) -> (&'static str, [bool; 4]) {
    match command {
        Command::Check(_) => ("check", [true, true, true, false]),
        Command::Scan { .. } => ("scan", [true, true, true, false]),
        Command::List { .. } => ("list", [true, true, true, false]),
        Command::Reap { .. } => ("reap", [true, true, true, false]),
        Command::Wait { .. } => ("wait", [true, true, true, false]),
        Command::Acquire { .. } => ("acquire", [true, true, true, true]),
        Command::Run(_) => ("run", [true, true, true, true]),
        Command::Release { .. } => ("release", [false, false, true, true]),
        Command::AcquirePort { .. } => ("acquire-port", [false, false, true, true]),
        Command::ReleasePort { .. } => ("release-port", [false, false, true, true]),
        Command::Leases { .. } => ("leases", [true, false, true, true]),
        Command::Watch { .. } => ("watch", [true, false, true, false]),
        Command::Doctor => ("doctor", [false; 4]),
        Command::Completions { .. } => ("completions", [false; 4]),
        Command::Man => ("man", [false; 4]),
        Command::LeaseAgent { .. } => ("__lease-agent", [false; 4]),
    }
}

/// No option is dropped: one given before a command that does not use it
/// is refused (exit 2), naming both, rather than ignored.
fn refuse_unused(top: &Top, command: &Command) -> Result<(), Error> {
    let (name, [ports, sources, netns, state_dir]) = takes(command);
    let given = [
        ("--ports", top.ports.is_some(), ports),
        ("--no-probe", top.sources.no_probe, sources),
        ("--no-pidfd", top.sources.no_pidfd, sources),
        ("--bpf", top.sources.bpf.is_some(), sources),
        ("--netns", top.netns.is_some(), netns),
        ("--state-dir", top.state_dir.is_some(), state_dir),
    ];
    match given.iter().find(|(_, given, used)| *given && !*used) {
        Some((option, _, _)) => Err(Error::Usage(format!(
            "{option} does not apply to 'sockcheck {name}' (nothing it does depends on it)"
        ))),
        None => Ok(()),
    }
}

/// The gate commands that inspect without leasing: `scan`, `list`, `reap`
/// and `wait`. They take no state directory.
fn dispatch_inspecting(command: Command, top: &Top) -> Result<ExitStatus, Error> {
    match command {
        Command::Scan {
            pool,
            ports,
            sources,
            netns,
        } => {
            let gate = top.gate(ports, Some(sources), None)?;
            let pool = input::resolve_pool(pool.pool)?;
            in_netns(netns.netns.or(top.netns.clone()), gate, |gate| {
                gate::scan(&gate, pool)
            })
        }
        Command::List {
            ports,
            sources,
            netns,
        } => in_netns(
            netns.netns.or(top.netns.clone()),
            top.gate(ports, Some(sources), None)?,
            |gate| gate::list(&gate),
        ),
        Command::Reap {
            address,
            grace,
            dry_run,
            ports,
            sources,
            netns,
        } => in_netns(
            netns.netns.or(top.netns.clone()),
            top.gate(ports, Some(sources), None)?,
            |gate| gate::reap_address(&gate, address, grace, dry_run),
        ),
        Command::Wait {
            address,
            timeout,
            allow_foreign,
            ports,
            sources,
            netns,
        } => in_netns(
            netns.netns.or(top.netns.clone()),
            top.gate(ports, Some(sources), None)?,
            |gate| gate::wait(&gate, address, timeout, allow_foreign),
        ),
        _ => unreachable!("only the inspecting gate commands come here"),
    }
}

/// The gate commands that lease from the state directory: `acquire`,
/// `release`, `leases` and `run`.
fn dispatch_leasing(command: Command, top: &Top) -> Result<ExitStatus, Error> {
    match command {
        Command::Acquire {
            pool,
            owner,
            wait,
            allow_foreign,
            ports,
            sources,
            state,
            netns,
        } => {
            let gate = top.gate(ports, Some(sources), Some(state))?;
            let pool = input::resolve_pool(pool.pool)?;
            in_netns(netns.netns.or(top.netns.clone()), gate, |gate| {
                gate::acquire(&gate, &pool, owner, wait, allow_foreign)
            })
        }
        Command::Release {
            address,
            state,
            netns,
        } => in_netns(
            netns.netns.or(top.netns.clone()),
            top.gate(PortsArg { ports: None }, None, Some(state))?,
            |gate| gate::release(&gate, address),
        ),
        Command::AcquirePort {
            range,
            host,
            count,
            owner,
            wait,
            state,
            netns,
        } => in_netns(
            netns.netns.or(top.netns.clone()),
            top.gate(PortsArg { ports: None }, None, Some(state))?,
            |gate| {
                let range = range.map_or_else(gate::ports::default_range, |r| r.0);
                gate::ports::acquire_port(&gate, range, host, count.into(), owner, wait)
            },
        ),
        Command::ReleasePort {
            ports,
            host: _,
            state,
            netns,
        } => in_netns(
            netns.netns.or(top.netns.clone()),
            top.gate(PortsArg { ports: None }, None, Some(state))?,
            |gate| {
                let mut seen = std::collections::BTreeSet::new();
                let ports: Vec<u16> = ports.into_iter().filter(|p| seen.insert(*p)).collect();
                gate::ports::release_port(&gate, &ports)
            },
        ),
        Command::Leases { pool, state, netns } => in_netns(
            netns.netns.or(top.netns.clone()),
            top.gate(PortsArg { ports: None }, None, Some(state))?,
            |gate| gate::leases(&gate, pool.map(|p| p.0)),
        ),
        Command::Run(args) => run_cmd(args, top),
        _ => unreachable!("only the leasing gate commands come here"),
    }
}

fn check(
    addresses: Vec<std::net::IpAddr>,
    top: &Top,
    args: CheckArgs,
) -> Result<ExitStatus, Error> {
    if addresses.is_empty() {
        return Err(Error::Usage(
            "no address given (usage: sockcheck [OPTIONS] ADDRESS...; 'sockcheck list' \
             shows every address with a socket on the ports)"
                .into(),
        ));
    }
    let gate = top.gate(args.ports, Some(args.sources), None)?;
    let query = Query {
        sources: gate.sources,
        ..Query::new(input::unique(addresses), gate.ports.clone())
    };
    let output = top.output;
    let netns = args.netns.netns.or(top.netns.clone());
    let report = in_netns(netns, gate, |gate| {
        inspect::inspect(&Query {
            netns: gate.netns,
            ..query
        })
    })?;
    emit(&report, output)?;
    Ok(if report.all_free() {
        ExitStatus::Free
    } else {
        ExitStatus::NotFree
    })
}

fn run_cmd(args: RunArgs, top: &Top) -> Result<ExitStatus, Error> {
    if !args.stray.is_empty() || args.command.is_empty() {
        return Err(Error::Usage(
            "run: the command must follow '--' (sockcheck run POOL -- CMD [ARGS...])".into(),
        ));
    }
    let gate = top.gate(args.ports, Some(args.sources), Some(args.state))?;
    let pool = input::resolve_pool(args.pool.pool)?;
    let options = RunOptions {
        linger: args.linger,
        report: args.report,
        reap: args.reap,
        grace: args.grace,
        wait: args.wait,
        lease_ports: args.lease_ports.into(),
        command: args.command,
    };
    let netns = args.netns.netns.or(top.netns.clone());
    if netns.is_some() {
        // Before the namespace's thread exists: see block_forwarded.
        gate::child::block_forwarded();
    }
    in_netns(netns, gate, |gate| gate::run(&gate, &pool, &options))
}

/// Runs `command` with `gate` in the network namespace `--netns` names, on
/// a thread of its own that entered it (sock_diag and the canary then see
/// that namespace; /proc and the rest stay sockcheck's), or here.
fn in_netns<T: Send>(
    netns: Option<String>,
    mut gate: Gate,
    command: impl FnOnce(Gate) -> Result<T, Error> + Send,
) -> Result<T, Error> {
    let Some(spec) = netns else {
        return command(gate);
    };
    let namespace = crate::netns::NetNs::open(&spec)?;
    gate.netns = Some(namespace.info());
    namespace.run(|| command(gate))?
}

/// Which namespaces `watch` shows: `--all-netns`, the one `--netns` names
/// (opened here, so a bad one is a usage error before anything loads), or
/// sockcheck's own. Watching needs no `setns`: the tracepoint sees every
/// namespace and each event names its socket's.
fn watch_netns(netns: Option<String>, all: bool) -> Result<crate::watch::NetnsFilter, Error> {
    use crate::watch::NetnsFilter;
    if all {
        return Ok(NetnsFilter::All);
    }
    let Some(spec) = netns else {
        return Ok(NetnsFilter::own());
    };
    Ok(NetnsFilter::Only(crate::netns::NetNs::open(&spec)?.info()))
}

/// `sockcheck completions SHELL`.
fn completions(shell: clap_complete::Shell) -> Result<ExitStatus, Error> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sockcheck", &mut script);
    output::write_stdout(&String::from_utf8_lossy(&script))?;
    Ok(ExitStatus::Free)
}

/// `sockcheck man`: one page, the top-level command's sections, then
/// a COMMANDS IN DETAIL section with each command's synopsis, description,
/// options and exit statuses (clap_mangen alone lists commands by name only),
/// then the top level's exit statuses and version.
fn man() -> Result<ExitStatus, Error> {
    let page = man_page().map_err(|e| Error::syscall("rendering the man page", e))?;
    output::write_stdout(&page)?;
    Ok(ExitStatus::Free)
}

fn man_page() -> std::io::Result<String> {
    let mut cmd = Cli::command();
    cmd.build(); // gives each command its bin name, `sockcheck watch`
    let top = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    top.render_title(&mut page)?;
    top.render_name_section(&mut page)?;
    top.render_synopsis_section(&mut page)?;
    top.render_description_section(&mut page)?;
    top.render_options_section(&mut page)?;
    top.render_subcommands_section(&mut page)?;
    page.extend_from_slice(b".SH \"COMMANDS IN DETAIL\"\n");
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or(sub.get_name());
        page.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
        let man = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut part)?;
        }
        if sub.get_after_long_help().is_some() {
            man.render_extra_section(&mut part)?;
        }
        // Sections of the command become paragraphs of its subsection.
        for line in String::from_utf8_lossy(&part).lines() {
            let line = if line.starts_with(".SH ") {
                ".PP"
            } else {
                line
            };
            page.extend_from_slice(line.as_bytes());
            page.push(b'\n');
        }
    }
    top.render_extra_section(&mut page)?;
    top.render_version_section(&mut page)?;
    Ok(String::from_utf8_lossy(&page).into_owned())
}

/// The command line's definition, for tests and generators.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The most characters of clap's line an error shows: clap quotes the bad
/// value raw, so the line is escaped and cut like any echoed value.
const CLAP_LINE_MAX: usize = 160;

/// clap's message up to its first blank line (a value it quotes may hold a
/// newline), without its `error: ` prefix, escaped and cut to one line.
fn first_line(message: &str) -> String {
    let first = message.split("\n\n").next().unwrap_or(message).trim_end();
    text::echo_line(
        first.strip_prefix("error: ").unwrap_or(first),
        CLAP_LINE_MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
