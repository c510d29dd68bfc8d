//! Everything sockcheck writes to stdout goes through here: the output
//! settings, a report as JSON or for people, and one writer that takes a
//! closed stdout pipe (`sockcheck ... | head`) as success, for every
//! command including `watch`.

use std::io::Write;

use serde::Serialize;

use crate::document::Document;
use crate::error::Error;
use crate::report::Report;

/// Output settings, resolved from the command line and the environment.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON document on stdout (for `watch`, one per line).
    pub json: bool,
    /// Colour the human output.
    pub color: bool,
    /// Every source's status, every socket, and what was tried.
    pub verbose: bool,
    /// `-q`: nothing on stdout and no notes on stderr; the exit status says
    /// it all. Errors still reach stderr (through `main`).
    pub quiet: bool,
}

impl Output {
    /// Writes `text` to stdout, unless quiet.
    pub fn print(&self, text: &str) -> Result<(), Error> {
        if self.quiet {
            return Ok(());
        }
        write_stdout(text)
    }

    /// Writes a document on stdout: JSON with `--json`, else its form for
    /// people; nothing when quiet.
    pub fn document<D: Document>(&self, document: &D) -> Result<(), Error> {
        if self.quiet {
            return Ok(());
        }
        let text = if self.json {
            json(document)
        } else {
            document.human(self)
        };
        write_stdout(&text)
    }

    /// A note for people on stderr (`text` ends with a newline), unless
    /// quiet.
    pub fn note(&self, text: &str) {
        if !self.quiet {
            write_stderr(text);
        }
    }

    /// A failure that does not end the command (a report that could not be
    /// written, a state directory that failed after the command ran): on
    /// stderr even when quiet, as an error would be.
    pub fn warn(&self, text: &str) {
        failure(text);
    }
}

/// A failure on stderr, quiet or not (`text` ends with a newline): what
/// [`Output::warn`] writes, for code that has no [`Output`] (a command
/// that could not be started).
pub fn failure(text: &str) {
    write_stderr(text);
}

/// The error that ended a command, as `main` reports it: one line, and its
/// tip on a second when it has one. On stderr, quiet or not.
pub fn error(error: &Error) {
    let mut text = format!("sockcheck: {error}\n");
    if let Some(tip) = error.tip() {
        text.push_str(&format!("  tip: {tip}\n"));
    }
    write_stderr(&text);
}

/// A line of a trace the environment asked for (`SOCKCHECK_BPF_TRACE=1`),
/// on stderr, quiet or not.
pub fn trace(line: &str) {
    write_stderr(&format!("{line}\n"));
}

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Whether to colour stdout: `--color always|never` decides; `auto` asks
/// anstream, which colours a terminal unless `NO_COLOR` is set (and not
/// empty) or `TERM` is `dumb`, and colours anything when `CLICOLOR_FORCE`
/// is set (and not `0`) without `NO_COLOR`.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => !matches!(
            anstream::AutoStream::choice(&std::io::stdout()),
            anstream::ColorChoice::Never
        ),
    }
}

/// Writes the report as JSON or for people.
pub fn emit(report: &Report, output: Output) -> Result<(), Error> {
    output.document(report)
}

/// A document as sockcheck prints JSON: pretty, with a final newline.
pub fn json<T: Serialize + ?Sized>(document: &T) -> String {
    serde_json::to_string_pretty(document).expect("a document always serializes") + "\n"
}

/// A document on one line, for line-oriented streams (`watch --json`).
pub fn json_line<T: Serialize + ?Sized>(document: &T) -> String {
    serde_json::to_string(document).expect("a document always serializes") + "\n"
}

/// Writes to stderr. A closed stderr drops the text: `eprint!` would
/// panic, and a note (such as `watch`'s, in the middle of its stream) is
/// never worth ending the command for.
fn write_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(text: &str) -> Result<(), Error> {
    write(text).map(|_| ())
}

/// Whether stdout is still open after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    Open,
    /// The reader went away (`| head`): stop writing, and succeed.
    Closed,
}

/// Writes and flushes `text`, and says whether stdout is still open.
pub fn write(text: &str) -> Result<Stdout, Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(Stdout::Open),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Stdout::Closed),
        Err(e) => Err(Error::syscall("write to stdout", e)),
    }
}

#[cfg(test)]
mod tests {
    /// Nothing in `src/` but this file writes to stderr with `eprint!` or
    /// `eprintln!`, tests included: the program's notes go through here
    /// (and `-q`), and a unit test that printed "skipped" passed unseen.
    #[test]
    fn only_output_prints_to_stderr() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && path != src.join("output.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let lines = text.lines().enumerate();
                    found.extend(
                        lines
                            .filter(|(_, line)| {
                                line.contains(concat!("eprint", "!"))
                                    || line.contains(concat!("eprint", "ln!"))
                            })
                            .map(|(n, line)| format!("{}:{}: {line}", path.display(), n + 1)),
                    );
                }
            }
        }
        assert!(found.is_empty(), "{}", found.join("\n"));
    }
}
