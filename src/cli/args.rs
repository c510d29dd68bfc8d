//! What the user can type: clap's definitions, every value parsed by
//! [`input`]. What it resolves to is [`super::options`]'s business.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit;
use crate::input::{self, Pool, Ports};

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
pub(super) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `check`'s addresses, when no command is named.
    #[command(flatten)]
    pub check: CheckArgs,
    #[command(flatten)]
    pub shared: Shared,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Inspect addresses (the default command).
    #[command(after_long_help = exit::HELP_CHECK)]
    Check(CheckArgs),
    /// One line per address of a pool: its verdict and why.
    #[command(after_long_help = exit::HELP_SCAN)]
    Scan(ScanArgs),
    /// Every address with a socket on the ports (wildcard listeners too),
    /// with its verdict, its listeners and their holders.
    #[command(after_long_help = exit::HELP_LIST)]
    List(ListArgs),
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
    Reap(ReapArgs),
    /// Wait until an address is free.
    #[command(after_long_help = exit::HELP_WAIT)]
    Wait(WaitArgs),
    /// Lease the first free address of a pool and print it.
    #[command(after_long_help = exit::HELP_ACQUIRE)]
    Acquire(AcquireArgs),
    /// Lease free TCP ports (get-port without the race) and print them,
    /// one per line.
    ///
    /// A port is free on --host when no socket that would make a server's
    /// bind fail is on it (a wildcard of either family included), nobody
    /// has leased it, and a bind with SO_REUSEADDR succeeds; ports with no
    /// TIME_WAIT remnant are chosen first. A port lease holds the port on
    /// every host, until the owner exits or releases it.
    #[command(name = "acquire-port", after_long_help = exit::HELP_ACQUIRE_PORT)]
    AcquirePort(AcquirePortArgs),
    /// Give leased ports back.
    #[command(name = "release-port", after_long_help = exit::HELP_RELEASE_PORT)]
    ReleasePort(ReleasePortArgs),
    /// Give a leased address back.
    #[command(after_long_help = exit::HELP_RELEASE)]
    Release(ReleaseArgs),
    /// List leases and quarantined addresses.
    #[command(after_long_help = exit::HELP_LEASES)]
    Leases(LeasesArgs),
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
    Watch(WatchArgs),
    /// What this user and kernel let sockcheck see, and why not.
    #[command(after_long_help = exit::HELP_DOCTOR)]
    Doctor,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_long_help = exit::HELP_GENERATE)]
    Completions(CompletionsArgs),
    /// Print the man page (roff): `sockcheck man | man -l -`.
    #[command(after_long_help = exit::HELP_GENERATE)]
    Man,
    /// The lease agent (started by acquire and run; not for people).
    #[command(name = "__lease-agent", hide = true)]
    LeaseAgent(LeaseAgentArgs),
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    pub pool: PoolArg,
    /// How long the address may stay held after CMD exits.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = input::duration(), allow_hyphen_values = true)]
    pub linger: Duration,
    /// Write the forensic report here (.json: JSON, otherwise Markdown).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// SIGTERM lingering holders, then SIGKILL after --grace.
    #[arg(long)]
    pub reap: bool,
    /// How long --reap waits between SIGTERM and SIGKILL.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = input::duration(), allow_hyphen_values = true)]
    pub grace: Duration,
    /// Wait this long for a free address instead of failing at once.
    #[arg(long, value_name = "DURATION", value_parser = input::duration(), allow_hyphen_values = true)]
    pub wait: Option<Duration>,
    /// Also lease N free TCP ports for CMD (as acquire-port does), export
    /// them as SOCKCHECK_PORT (the first) and SOCKCHECK_PORTS, and check
    /// them for lingering holders after CMD like the address's ports.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=32))]
    pub lease_ports: u16,
    /// Words before `--` that are not the pool (an error).
    #[arg(hide = true)]
    pub stray: Vec<OsString>,
    /// The command to run, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// Addresses to inspect: 127.0.0.2, ::1, [::1].
    #[arg(value_name = "ADDRESS", value_parser = input::Address)]
    pub addresses: Vec<std::net::IpAddr>,
}

#[derive(Debug, Args)]
pub(super) struct PoolArg {
    /// A range (127.0.0.2-127.0.0.33), a CIDR (127.0.0.0/27) or a comma
    /// list [default: $SOCKCHECK_POOL, else 127.0.0.2-127.0.0.33]
    #[arg(value_name = "POOL", value_parser = input::pool())]
    pub pool: Option<Pool>,
}

/// The options several commands share. They are `global`: clap takes them
/// before the command or after it. A command that has no use for one
/// refuses it (see [`super::options`]), and its help does not list it.
#[derive(Debug, Args)]
pub(super) struct Shared {
    /// TCP ports: a list (9925,9926), ranges (9925-9927) or both, at most
    /// 64 [default: $SOCKCHECK_PORTS, else 9925,9926]
    #[arg(long, global = true, value_name = "P,..", value_parser = input::ports())]
    pub ports: Option<Ports>,
    /// Never run the SO_REUSEPORT bind probe.
    #[arg(long, global = true)]
    pub no_probe: bool,
    /// Never duplicate an owner's fd (pidfd_getfd) to read SO_REUSEPORT.
    #[arg(long, global = true)]
    pub no_pidfd: bool,
    /// When to use eBPF [default: auto]
    ///
    /// eBPF needs root or CAP_BPF+CAP_PERFMON, and kernel BTF. auto: only
    /// where it pays (owners on a machine with many open files;
    /// SO_REUSEPORT when nothing cheaper can tell); always; or never.
    #[arg(long, global = true, value_name = "WHEN")]
    pub bpf: Option<BpfChoice>,
    /// Where leases live [default: $SOCKCHECK_STATE_DIR, else
    /// $XDG_RUNTIME_DIR/sockcheck, else /run/sockcheck for root, else
    /// $TMPDIR/sockcheck-UID]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Inspect another network namespace: NAME (under /run/netns, as `ip
    /// netns` names them), a PATH to one, or pid:PID (that process's).
    /// Needs CAP_SYS_ADMIN.
    #[arg(long, global = true, value_name = "NAME|PATH|pid:PID")]
    pub netns: Option<String>,
}

/// What every command may be asked about its output.
#[derive(Debug, Args)]
pub(super) struct OutputArgs {
    /// One JSON document on stdout (schemas in schema/).
    #[arg(long, global = true)]
    pub json: bool,
    /// When to colour the output.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: ColorArg,
    /// Show every source's status, every socket, and what was tried.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Nothing on stdout and no notes on stderr: the exit status only
    /// (usage errors and failures still print one line on stderr).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum BpfChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub(super) struct ScanArgs {
    #[command(flatten)]
    pub pool: PoolArg,
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {}

#[derive(Debug, Args)]
pub(super) struct ReapArgs {
    /// The address whose holders to end: 127.0.0.2, ::1, [::1].
    #[arg(value_name = "ADDRESS", value_parser = input::Address)]
    pub address: std::net::IpAddr,
    /// How long to wait between SIGTERM and SIGKILL.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = input::duration(), allow_hyphen_values = true)]
    pub grace: Duration,
    /// Say what would be signalled, and signal nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub(super) struct WaitArgs {
    /// The address to wait for: 127.0.0.2, ::1, [::1].
    #[arg(value_name = "ADDRESS", value_parser = input::Address)]
    pub address: std::net::IpAddr,
    /// Give up after this long (500ms, 30s, 1m30s; a bare number is seconds).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = input::duration(), allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Wait even when a wildcard listener covers the address.
    #[arg(long)]
    pub allow_foreign: bool,
}

#[derive(Debug, Args)]
pub(super) struct AcquireArgs {
    #[command(flatten)]
    pub pool: PoolArg,
    /// The process that owns the lease [default: sockcheck's parent]
    #[arg(long, value_name = "PID")]
    pub owner: Option<u32>,
    /// Wait this long for an address instead of failing at once.
    #[arg(long, value_name = "DURATION", value_parser = input::duration(), allow_hyphen_values = true)]
    pub wait: Option<Duration>,
    /// Keep waiting when every candidate is foreign (a wildcard
    /// listener covers it) instead of failing at once.
    #[arg(long)]
    pub allow_foreign: bool,
}

#[derive(Debug, Args)]
pub(super) struct AcquirePortArgs {
    /// Ports to choose from: 20000, 20000-20099, or a comma list
    /// [default: 15000-32767 less the kernel's ephemeral
    /// (ip_local_port_range) and reserved ports]
    #[arg(value_name = "RANGE", value_parser = input::port_range())]
    pub range: Option<input::PortRange>,
    /// The host the ports must be free on.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDRESS", value_parser = input::Address)]
    pub host: std::net::IpAddr,
    /// How many ports to lease.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub count: u16,
    /// The process that owns the leases [default: sockcheck's parent]
    #[arg(long, value_name = "PID")]
    pub owner: Option<u32>,
    /// Wait this long for free ports instead of failing at once.
    #[arg(long, value_name = "DURATION", value_parser = input::duration(), allow_hyphen_values = true)]
    pub wait: Option<Duration>,
}

#[derive(Debug, Args)]
pub(super) struct ReleasePortArgs {
    /// The leased ports to give back.
    // Not the id `ports`: that is the shared `--ports`.
    #[arg(id = "leased_ports", value_name = "PORT", required = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Accepted for symmetry with acquire-port (a port lease holds the
    /// port on every host); checked to be an address.
    #[arg(long, value_name = "ADDRESS", value_parser = input::Address)]
    pub host: Option<std::net::IpAddr>,
}

#[derive(Debug, Args)]
pub(super) struct ReleaseArgs {
    /// The leased address to give back.
    #[arg(value_name = "ADDRESS", value_parser = input::Address)]
    pub address: std::net::IpAddr,
}

#[derive(Debug, Args)]
pub(super) struct LeasesArgs {
    /// Only addresses of this pool (a range, a CIDR or a comma list).
    #[arg(value_name = "POOL", value_parser = input::pool())]
    pub pool: Option<Pool>,
}

#[derive(Debug, Args)]
pub(super) struct WatchArgs {
    /// Only events whose address covers one of these (the address,
    /// ::ffff:ADDR, or a wildcard) [default: every address]
    #[arg(value_name = "ADDRESS", value_parser = input::Address)]
    pub addresses: Vec<std::net::IpAddr>,
    /// Stop after this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after this long (500ms, 30s, 1m30s; a bare number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = input::duration(), allow_hyphen_values = true)]
    pub timeout: Option<Duration>,
    /// Only sockets of this network namespace: NAME (under /run/netns,
    /// as `ip netns` names them), a PATH to one, or pid:PID (that
    /// process's) [default: sockcheck's own]
    // Its own help; its value reaches the context through the shared
    // `netns` (the same id), as one given before the command would.
    #[arg(long, value_name = "NAME|PATH|pid:PID", conflicts_with = "all_netns")]
    #[allow(dead_code)]
    pub netns: Option<String>,
    /// Sockets of every network namespace (a line names the namespace
    /// when it is not sockcheck's own).
    #[arg(long)]
    pub all_netns: bool,
    /// The kernel's buffer of events not yet printed: more holds more
    /// of a burst before events are lost (4096, 256K, 4M: a power of two
    /// multiple of the page size; 80 bytes an event).
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = input::ring_size())]
    pub ring_size: crate::bpf::RingSize,
}

#[derive(Debug, Args)]
pub(super) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(super) struct LeaseAgentArgs {
    /// The state directory whose agent this is.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}
