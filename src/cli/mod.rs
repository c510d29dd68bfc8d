//! The command line: what the user typed ([`args`], clap), the context it
//! resolves to ([`options`]: one table of which shared option each command
//! uses), and each command's `run` ([`commands`]). Only `main` imports this
//! module.

mod args;
mod commands;
mod generate;
mod options;

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

use crate::error::Error;
use crate::exit::ExitStatus;
use crate::output;
use crate::text;
use args::{Cli, Command};

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
    let matches = match command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(e) => return clap_outcome(&e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_outcome(&e),
    };
    let name = matches.subcommand_name().unwrap_or("check");
    let settings = options::Settings::new(cli.shared, &cli.output, name)?;
    let command = cli.command.unwrap_or(Command::Check(cli.check));
    commands::dispatch(command, &settings)
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

/// The command line's definition, for tests and generators.
/// Each command's help lists only the shared options it uses.
pub fn command() -> clap::Command {
    options::hide_unused(Cli::command())
}

/// The same, for the completions and the man page: the shared options are
/// each command's own, on the commands that use them.
fn generated() -> clap::Command {
    let mut cli = options::explicit(Cli::command());
    cli.build(); // gives each command its bin name, `sockcheck watch`
    cli
}

/// The most characters of clap's line an error shows: clap quotes the bad
/// value raw, so the line is escaped and cut like any echoed value.
const CLAP_LINE_MAX: usize = 160;

/// clap's message up to its first blank line (a value it quotes may hold a
/// newline), without its `error: ` prefix, escaped and cut to one line.
fn first_line(message: &str) -> String {
    // clap's first block may span lines ("...not provided:\n  <ADDRESS>"):
    // one line of its trimmed lines.
    let first = message.split("\n\n").next().unwrap_or(message);
    let first = first.lines().map(str::trim).collect::<Vec<_>>().join(" ");
    text::echo_line(
        first.strip_prefix("error: ").unwrap_or(&first),
        CLAP_LINE_MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        command().debug_assert();
    }

    /// A command's own argument never takes a shared option's id (clap
    /// would carry its values up to the shared one), except `watch`'s
    /// `--netns`, which is the shared one with its own help.
    #[test]
    fn no_command_argument_takes_a_shared_id() {
        let cli = command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let shared = ["ports", "no_probe", "no_pidfd", "bpf", "netns", "state_dir"]
                    .contains(&arg.get_id().as_str());
                let global = arg.is_global_set();
                assert!(
                    !shared || global || (sub.get_name() == "watch" && arg.get_id() == "netns"),
                    "{} {}",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    /// No option is dropped: one a command has no use for is refused,
    /// before the command or after it, naming both.
    #[test]
    fn an_option_a_command_does_not_use_is_refused_naming_both() {
        for args in [
            &["--state-dir", "/nonexistent", "doctor"][..],
            &["doctor", "--state-dir", "/nonexistent"],
            &["--no-probe", "leases"],
            &["leases", "--bpf", "never"],
            &["--ports", "9", "release", "127.0.0.2"],
            &["release-port", "9", "--ports", "9"],
            &["--netns", "x", "man"],
            &["--state-dir", "/nonexistent", "127.0.0.2"],
            &["watch", "--no-pidfd"],
        ] {
            let argv = std::iter::once("sockcheck").chain(args.iter().copied());
            let error = run_command(argv.map(OsString::from)).unwrap_err();
            assert!(error.is_usage(), "{args:?}: {error}");
            let option = args.iter().find(|a| a.starts_with("--")).unwrap();
            let command = args
                .iter()
                .find(|a| options::USES.iter().any(|(name, _)| name == *a))
                .unwrap_or(&"check");
            let message = error.to_string();
            assert!(
                message.contains(option) && message.contains(&format!("'sockcheck {command}'")),
                "{args:?}: {message}"
            );
        }
    }

    /// Each command's help lists the shared options it uses, and no other.
    #[test]
    fn help_lists_only_the_shared_options_a_command_uses() {
        let cli = command();
        let shown = |name: &str, id: &str| {
            let sub = cli.find_subcommand(name).unwrap();
            sub.get_arguments()
                .any(|a| a.get_id() == id && !a.is_hide_set())
        };
        assert!(shown("acquire", "state_dir") && shown("acquire", "bpf"));
        assert!(shown("leases", "ports") && !shown("leases", "no_probe"));
        assert!(!shown("doctor", "ports") && !shown("list", "state_dir"));
        assert!(shown("release-port", "leased_ports") && !shown("release-port", "ports"));
    }
}
