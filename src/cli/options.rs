//! Which of the shared options each command uses, and the [`Context`] they
//! resolve to. One table ([`USES`]): a command refuses an option it has no
//! use for (exit 2, naming both), its help does not list it, and only what
//! it uses is resolved (no state directory for a command that leases
//! nothing; no ports for one that inspects none).

use std::path::PathBuf;

use super::args::{BpfChoice, ColorArg, OutputArgs, Shared};
use crate::context::{Context, LeaseContext};
use crate::error::Error;
use crate::gate;
use crate::input;
use crate::inspect::{BpfMode, Sources};
use crate::netns::NetNs;
use crate::output::{self, ColorChoice, Output};

/// The shared options a command uses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Uses {
    ports: bool,
    /// `--no-probe`, `--no-pidfd`, `--bpf`.
    sources: bool,
    netns: bool,
    state_dir: bool,
}

const fn uses(ports: bool, sources: bool, netns: bool, state_dir: bool) -> Uses {
    Uses {
        ports,
        sources,
        netns,
        state_dir,
    }
}

const NOTHING: Uses = uses(false, false, false, false);
const INSPECTS: Uses = uses(true, true, true, false);
const LEASES: Uses = uses(true, true, true, true);
const LEDGER: Uses = uses(false, false, true, true);

/// What each command uses; `check` is also the command when none is named.
pub(super) const USES: &[(&str, Uses)] = &[
    ("check", INSPECTS),
    ("scan", INSPECTS),
    ("list", INSPECTS),
    ("reap", INSPECTS),
    ("wait", INSPECTS),
    ("acquire", LEASES),
    ("run", LEASES),
    ("release", LEDGER),
    ("acquire-port", LEDGER),
    ("release-port", LEDGER),
    ("leases", uses(true, false, true, true)),
    ("watch", uses(true, false, true, false)),
    ("doctor", NOTHING),
    ("completions", NOTHING),
    ("man", NOTHING),
    ("__lease-agent", NOTHING),
];

fn uses_of(command: &str) -> Uses {
    USES.iter()
        .find(|(name, _)| *name == command)
        .map_or(NOTHING, |(_, uses)| *uses)
}

/// The command line's definition for the generators (completions, the man
/// page): each command has the shared options it uses as its own, and no
/// other (the completion scripts offer hidden options too).
pub(super) fn explicit(cli: clap::Command) -> clap::Command {
    let shared: Vec<clap::Arg> = cli
        .get_arguments()
        .filter(|a| OPTIONS.iter().any(|o| a.get_id() == o.id))
        .map(|a| a.clone().global(false))
        .collect();
    cli.mut_args(|arg| match OPTIONS.iter().any(|o| arg.get_id() == o.id) {
        true => hide_if_unused(arg.global(false), uses_of("check")),
        false => arg,
    })
    .mut_subcommands(|mut sub| {
        let uses = uses_of(sub.get_name());
        for arg in &shared {
            let own = sub.get_arguments().any(|a| a.get_id() == arg.get_id());
            let used = OPTIONS
                .iter()
                .any(|o| arg.get_id() == o.id && (o.used)(uses));
            if used && !own {
                sub = sub.arg(arg.clone());
            }
        }
        sub
    })
}

/// A shared option: its flag, its clap id, and whether a command uses it.
struct SharedOption {
    flag: &'static str,
    id: &'static str,
    used: fn(Uses) -> bool,
}

const fn option(flag: &'static str, id: &'static str, used: fn(Uses) -> bool) -> SharedOption {
    SharedOption { flag, id, used }
}

const OPTIONS: [SharedOption; 6] = [
    option("--ports", "ports", |u| u.ports),
    option("--no-probe", "no_probe", |u| u.sources),
    option("--no-pidfd", "no_pidfd", |u| u.sources),
    option("--bpf", "bpf", |u| u.sources),
    option("--netns", "netns", |u| u.netns),
    option("--state-dir", "state_dir", |u| u.state_dir),
];

/// The command line's definition with each command's help listing only
/// the shared options it uses (clap gives every command the `global` ones).
/// Built first, so that the subcommands have them; changed in place (the
/// order of arguments and commands is the built one).
pub(super) fn hide_unused(mut cli: clap::Command) -> clap::Command {
    cli.build();
    cli.mut_args(|arg| hide_if_unused(arg, uses_of("check")))
        .mut_subcommands(|sub| {
            let uses = uses_of(sub.get_name());
            sub.mut_args(|arg| hide_if_unused(arg, uses))
        })
}

/// `arg`, hidden when it is a shared option the command does not use.
fn hide_if_unused(arg: clap::Arg, uses: Uses) -> clap::Arg {
    match OPTIONS.iter().find(|o| arg.get_id() == o.id) {
        Some(option) if !(option.used)(uses) => arg.hide(true),
        _ => arg,
    }
}

/// The command line's settings, checked against what the command uses.
pub(super) struct Settings {
    shared: Shared,
    output: Output,
    uses: Uses,
}

impl Settings {
    /// Refuses a shared option `command` has no use for: no option is
    /// dropped.
    pub(super) fn new(
        shared: Shared,
        output: &OutputArgs,
        command: &str,
    ) -> Result<Settings, Error> {
        let uses = uses_of(command);
        let given = [
            shared.ports.is_some(),
            shared.no_probe,
            shared.no_pidfd,
            shared.bpf.is_some(),
            shared.netns.is_some(),
            shared.state_dir.is_some(),
        ];
        if let Some((option, _)) = OPTIONS
            .iter()
            .zip(given)
            .find(|(option, given)| *given && !(option.used)(uses))
        {
            return Err(Error::Usage(format!(
                "{} does not apply to 'sockcheck {command}' (nothing it does depends on it)",
                option.flag
            )));
        }
        refuse_output_options(output, command)?;
        Ok(Settings {
            shared,
            output: resolve_output(output),
            uses,
        })
    }

    pub(super) fn output(&self) -> Output {
        self.output
    }

    /// The context of a command that leases nothing: its ports (from
    /// `--ports`, `$SOCKCHECK_PORTS` or the default), its sources, and the
    /// namespace `--netns` names, opened.
    pub(super) fn context(&self) -> Result<Context, Error> {
        let ports = if self.uses.ports {
            input::resolve_ports(self.shared.ports.clone())?
        } else {
            Vec::new()
        };
        let netns = match (&self.shared.netns, self.uses.netns) {
            (Some(spec), true) => Some(NetNs::open(spec)?),
            _ => None,
        };
        Ok(Context::new(self.output, ports, self.sources()).with_netns(netns))
    }

    /// The context of a lease command: as [`Settings::context`], and the
    /// state directory (`--state-dir`, else `$SOCKCHECK_STATE_DIR` or the
    /// per-user default).
    pub(super) fn lease_context(&self) -> Result<LeaseContext, Error> {
        let state_dir: PathBuf = self
            .shared
            .state_dir
            .clone()
            .unwrap_or_else(gate::state::default_dir);
        Ok(LeaseContext {
            context: self.context()?,
            state_dir,
        })
    }

    fn sources(&self) -> Sources {
        let shared = &self.shared;
        Sources {
            pidfd: !shared.no_pidfd,
            probe: !shared.no_probe,
            bpf: match shared.bpf.unwrap_or(BpfChoice::Auto) {
                BpfChoice::Auto => BpfMode::Auto,
                BpfChoice::Always => BpfMode::Always,
                BpfChoice::Never => BpfMode::Never,
            },
        }
    }
}

/// `completions` and `man` print a script or a page, whole: an output
/// option would be dropped there, so it is refused (exit 2, naming both).
fn refuse_output_options(output: &OutputArgs, command: &str) -> Result<(), Error> {
    if !matches!(command, "completions" | "man") {
        return Ok(());
    }
    let given = [
        (output.json, "--json"),
        (output.quiet, "--quiet"),
        (output.verbose, "--verbose"),
        (!matches!(output.color, ColorArg::Auto), "--color"),
    ];
    match given.into_iter().find(|(given, _)| *given) {
        Some((_, flag)) => Err(Error::Usage(format!(
            "{flag} does not apply to 'sockcheck {command}' (it prints the {} whole)",
            if command == "man" {
                "man page"
            } else {
                "completion script"
            }
        ))),
        None => Ok(()),
    }
}

/// The output settings: `--color` against the terminal and the
/// environment; `-q` wins over `-v`.
fn resolve_output(args: &OutputArgs) -> Output {
    Output {
        json: args.json,
        color: output::use_color(match args.color {
            ColorArg::Auto => ColorChoice::Auto,
            ColorArg::Always => ColorChoice::Always,
            ColorArg::Never => ColorChoice::Never,
        }),
        verbose: args.verbose && !args.quiet,
        quiet: args.quiet,
    }
}
