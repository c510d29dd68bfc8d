//! The command line: what the user typed (clap) apart from what it resolves
//! to (a [`Query`] and output settings), and the dispatch to commands.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};

use clap::{Args, Parser, Subcommand, ValueEnum};

use std::path::PathBuf;

use crate::error::Error;
use crate::exit::{self, ExitStatus};
use crate::gate::{self, Gate, RunOptions, pool};
use crate::inspect::{self, BpfMode, DEFAULT_PORTS, Query};
use crate::report::{Report, human};
use crate::text;

const ABOUT: &str =
    "Can this loopback address go to a new server right now, and if not, who holds it?";

const AFTER_HELP: &str = "\
Verdicts, most severe first:
  foreign      a wildcard listener (0.0.0.0, or [::] dual-stack) covers the address
  busy         a listener bound to the address (or ::ffff:ADDR) holds a port
  conflict     the canary bind fails, but no listener explains it
  unavailable  the address is not local (EADDRNOTAVAIL)
  free         nothing covers it and the canary bind succeeds on every port

Environment:
  SOCKCHECK_PORTS      ports when --ports is not given (default 9925,9926)
  SOCKCHECK_POOL       the pool of scan, acquire and run when none is given
  SOCKCHECK_STATE_DIR  where leases live when --state-dir is not given
  NO_COLOR             disables colour when set and not empty
";

#[derive(Debug, Parser)]
#[command(
    name = "sockcheck",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    check: CheckArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect addresses (the default command).
    Check(CheckArgs),
    /// One line per address of a pool: its verdict and why.
    Scan {
        /// A range (127.0.0.2-127.0.0.33), a CIDR (127.0.0.0/27) or a comma
        /// list [default: $SOCKCHECK_POOL]
        pool: Option<String>,
    },
    /// Wait until an address is free.
    Wait {
        address: String,
        /// Give up after this long (500ms, 30s, 2m).
        #[arg(long, default_value = "30s", value_name = "DURATION")]
        timeout: String,
        /// Wait even when a wildcard listener covers the address.
        #[arg(long)]
        allow_foreign: bool,
    },
    /// Lease the first free address of a pool and print it.
    Acquire {
        /// The pool [default: $SOCKCHECK_POOL]
        pool: Option<String>,
        /// The process that owns the lease [default: sockcheck's parent]
        #[arg(long, value_name = "PID")]
        owner: Option<u32>,
        /// Wait this long for an address instead of failing at once.
        #[arg(long, value_name = "DURATION")]
        wait: Option<String>,
        /// Keep waiting when every candidate is foreign (a wildcard
        /// listener covers it) instead of failing at once.
        #[arg(long)]
        allow_foreign: bool,
    },
    /// Give a leased address back.
    Release { address: String },
    /// List leases and quarantined addresses.
    Leases {
        /// Only addresses of this pool.
        pool: Option<String>,
    },
    /// Lease an address, run CMD with SOCKCHECK_ADDR set, then check for
    /// lingering holders.
    #[command(after_help = "\
Exit status: the command's own; 4 when it succeeded but left lingering
holders; 5 when no address of the pool could be leased; 2 bad usage.")]
    Run {
        /// The pool [default: $SOCKCHECK_POOL]
        pool: Option<String>,
        /// How long the address may stay held after CMD exits.
        #[arg(long, default_value = "5s", value_name = "DURATION")]
        linger: String,
        /// Write the forensic report here (.json: JSON, otherwise Markdown).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// SIGTERM lingering holders, then SIGKILL after --grace.
        #[arg(long)]
        reap: bool,
        /// How long --reap waits between SIGTERM and SIGKILL.
        #[arg(long, default_value = "2s", value_name = "DURATION")]
        grace: String,
        /// Wait this long for a free address instead of failing at once.
        #[arg(long, value_name = "DURATION")]
        wait: Option<String>,
        /// Words before `--` that are not the pool (an error).
        #[arg(hide = true)]
        stray: Vec<OsString>,
        /// The command, after `--`.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Stream TCP listeners appearing and disappearing on the ports, with
    /// the process and thread that did it (needs eBPF).
    #[command(after_help = "\
Prints one line per event (--json: one JSON object per line) until
Ctrl-C (SIGINT), SIGTERM, --count or --timeout. Once attached it says so on
stderr. Exit status: 0 after --count events, or at --timeout when no
--count was given; 1 at --timeout before --count events; 130 on SIGINT,
143 on SIGTERM; 2 bad usage; 3 eBPF unavailable (watch needs eBPF).")]
    Watch {
        /// Only events whose address covers one of these (the address,
        /// ::ffff:ADDR, or a wildcard) [default: every address]
        #[arg(value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// Stop after this many events.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Stop after this long (500ms, 30s, 2m).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
    },
    /// What this user and kernel let sockcheck see, and why not.
    Doctor,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Addresses to inspect: 127.0.0.2, ::1, [::1].
    #[arg(value_name = "ADDRESS")]
    addresses: Vec<String>,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// Comma-separated TCP ports [default: $SOCKCHECK_PORTS, else 9925,9926]
    #[arg(long, global = true, value_name = "P,..")]
    ports: Option<String>,
    /// One JSON document on stdout (schema in the README).
    #[arg(long, global = true)]
    json: bool,
    /// When to colour the output.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    color: ColorChoice,
    /// Show every source's status, every socket, and what was tried.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Never run the SO_REUSEPORT bind probe.
    #[arg(long, global = true)]
    no_probe: bool,
    /// Never duplicate an owner's fd (pidfd_getfd) to read SO_REUSEPORT.
    #[arg(long, global = true)]
    no_pidfd: bool,
    /// When to use eBPF (needs root or CAP_BPF+CAP_PERFMON, and kernel BTF):
    /// auto only where it pays (owners on a machine with many open files;
    /// SO_REUSEPORT when nothing cheaper can tell), always, or never.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    bpf: BpfChoice,
    /// Where leases live [default: $SOCKCHECK_STATE_DIR, else
    /// $XDG_RUNTIME_DIR/sockcheck, else /run/sockcheck for root, else
    /// $TMPDIR/sockcheck-UID]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BpfChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Output settings resolved from the command line and the environment.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub color: bool,
    pub verbose: bool,
}

/// Parses the command line and runs the command. Errors are returned for
/// `main` to print once, as one line: whatever a message quotes (a value,
/// a path) has no character left that could break the line or act on the
/// terminal.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> Result<ExitStatus, Error> {
    run_command(args).map_err(one_line)
}

/// The last line of defence for the messages that quote what a user chose
/// (values are escaped and cut where the message is made, with
/// [`text::echo`]; a path, in a `Usage` or `Syscall` message, may not be).
/// Escapes what [`text::is_hidden`] names, and nothing else, so text
/// escaped already stays as it is.
fn one_line(error: Error) -> Error {
    match error {
        Error::Usage(message) => Error::Usage(text::escape_hidden(&message)),
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
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                if e.kind() == ErrorKind::DisplayHelp {
                    println!("\n{}", exit::HELP);
                }
                return Ok(ExitStatus::Free);
            }
            return Err(Error::Usage(first_line(&e.to_string())));
        }
    };
    let ports = resolve_ports(cli.common.ports.as_deref())?;
    let output = Output {
        json: cli.common.json,
        color: use_color(cli.common.color),
        verbose: cli.common.verbose,
    };
    let sources = Sources {
        pidfd: !cli.common.no_pidfd,
        probe: !cli.common.no_probe,
        bpf: match cli.common.bpf {
            BpfChoice::Auto => BpfMode::Auto,
            BpfChoice::Always => BpfMode::Always,
            BpfChoice::Never => BpfMode::Never,
        },
    };
    let gate = || Gate {
        ports: ports.clone(),
        state_dir: cli
            .common
            .state_dir
            .clone()
            .unwrap_or_else(gate::state::default_dir),
        output,
        sources,
    };
    match cli.command {
        None => check(&cli.check.addresses, ports.clone(), sources, output),
        Some(Command::Check(args)) => check(&args.addresses, ports.clone(), sources, output),
        Some(Command::Scan { pool }) => gate::scan(&gate(), resolve_pool(pool)?),
        Some(Command::Wait {
            address,
            timeout,
            allow_foreign,
        }) => {
            let address = inspect::parse_address(&address)?;
            let timeout = pool::parse_duration(&timeout, "--timeout")?;
            gate::wait(&gate(), address, timeout, allow_foreign)
        }
        Some(Command::Acquire {
            pool,
            owner,
            wait,
            allow_foreign,
        }) => {
            let pool = resolve_pool(pool)?;
            let wait = wait
                .map(|w| pool::parse_duration(&w, "--wait"))
                .transpose()?;
            gate::acquire(&gate(), &pool, owner, wait, allow_foreign)
        }
        Some(Command::Release { address }) => {
            gate::release(&gate(), inspect::parse_address(&address)?)
        }
        Some(Command::Leases { pool }) => {
            let pool = match pool {
                Some(text) => Some(pool::parse_pool(&text, "POOL")?),
                None => None,
            };
            gate::leases(&gate(), pool)
        }
        Some(Command::Run {
            pool,
            linger,
            report,
            reap,
            grace,
            wait,
            stray,
            command,
        }) => {
            let linger = pool::parse_duration(&linger, "--linger")?;
            let grace = pool::parse_duration(&grace, "--grace")?;
            let wait = wait
                .map(|w| pool::parse_duration(&w, "--wait"))
                .transpose()?;
            if !stray.is_empty() || command.is_empty() {
                return Err(Error::Usage(
                    "run: the command must follow '--' (sockcheck run POOL -- CMD [ARGS...])"
                        .into(),
                ));
            }
            let options = RunOptions {
                linger,
                report,
                reap,
                grace,
                wait,
                command,
            };
            gate::run(&gate(), &resolve_pool(pool)?, &options)
        }
        Some(Command::Watch {
            addresses,
            count,
            timeout,
        }) => {
            let addresses = parse_addresses(&addresses)?;
            let timeout = timeout
                .map(|t| pool::parse_duration(&t, "--timeout"))
                .transpose()?;
            crate::watch::watch(&crate::watch::WatchOptions {
                ports: ports.clone(),
                addresses,
                json: output.json,
                count,
                timeout,
                verbose: output.verbose,
            })
        }
        Some(Command::Doctor) => crate::doctor::doctor(output),
    }
}

/// Addresses as typed, each once: `127.0.0.2 ::ffff:127.0.0.2` is one
/// address, inspected once, in the order first given.
fn parse_addresses(texts: &[String]) -> Result<Vec<std::net::IpAddr>, Error> {
    let mut addresses = Vec::with_capacity(texts.len());
    for text in texts {
        let address = inspect::parse_address(text)?;
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    Ok(addresses)
}

/// POOL, else SOCKCHECK_POOL.
fn resolve_pool(pool: Option<String>) -> Result<Vec<std::net::IpAddr>, Error> {
    match pool {
        Some(text) => pool::parse_pool(&text, "POOL"),
        None => match std::env::var("SOCKCHECK_POOL") {
            Ok(text) if !text.trim().is_empty() => pool::parse_pool(&text, "SOCKCHECK_POOL"),
            _ => Err(Error::Usage(
                "no pool given (give POOL or set SOCKCHECK_POOL)".into(),
            )),
        },
    }
}

/// Which optional sources of evidence may be used.
#[derive(Debug, Clone, Copy)]
pub struct Sources {
    pub pidfd: bool,
    pub probe: bool,
    pub bpf: BpfMode,
}

impl Sources {
    /// A full query of `addresses` with these sources.
    pub fn query(&self, addresses: Vec<std::net::IpAddr>, ports: Vec<u16>) -> Query {
        Query {
            reuseport_pidfd: self.pidfd,
            reuseport_probe: self.probe,
            bpf: self.bpf,
            ..Query::new(addresses, ports)
        }
    }
}

fn check(
    addresses: &[String],
    ports: Vec<u16>,
    sources: Sources,
    output: Output,
) -> Result<ExitStatus, Error> {
    if addresses.is_empty() {
        return Err(Error::Usage(
            "no address given (usage: sockcheck [OPTIONS] ADDRESS...)".into(),
        ));
    }
    let addresses = parse_addresses(addresses)?;
    let report = inspect::inspect(&sources.query(addresses, ports))?;
    emit(&report, output)?;
    Ok(if report.all_free() {
        ExitStatus::Free
    } else {
        ExitStatus::NotFree
    })
}

/// Writes the report as JSON or for people.
pub fn emit(report: &Report, output: Output) -> Result<(), Error> {
    let text = if output.json {
        let mut text = serde_json::to_string_pretty(report).expect("a report always serializes");
        text.push('\n');
        text
    } else {
        human::render(
            report,
            human::Style {
                color: output.color,
            },
            output.verbose,
        )
    };
    write_stdout(&text)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::syscall("write to stdout", e))
        }
        _ => Ok(()),
    }
}

/// `--ports`, else SOCKCHECK_PORTS, else 9925,9926.
fn resolve_ports(flag: Option<&str>) -> Result<Vec<u16>, Error> {
    match flag {
        Some(text) => inspect::parse_ports(text, "--ports"),
        None => match std::env::var("SOCKCHECK_PORTS") {
            Ok(text) if !text.trim().is_empty() => inspect::parse_ports(&text, "SOCKCHECK_PORTS"),
            _ => Ok(DEFAULT_PORTS.to_vec()),
        },
    }
}

fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
                && std::io::stdout().is_terminal()
        }
    }
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
