//! The human-readable report: the verdict and its reasons first, then per
//! port the listeners with their owners, the other sockets, and the canary.
//!
//! Text a process chose (comm, cmdline) goes through [`Bytes::escaped`] or
//! [`shell_word`], the terminal escaper; messages that quote it were made
//! with it. Every other free text (reasons, notes, evidence, source
//! details) passes [`escape_hidden`] on its way out, which leaves escaped
//! text as it is and escapes whatever [`is_hidden`](crate::text::is_hidden)
//! names that reached it unescaped, so no line of the report can be broken,
//! reordered or hidden by what it quotes.
//!
//! [`Bytes::escaped`]: crate::text::Bytes::escaped

use std::fmt::Write;

use anstyle::{AnsiColor, Color, Style as Ansi};

use crate::owners::ProcessState;
use crate::report::{AddressReport, ListenerReport, Owner, PortReport, Report, Verdict};
use crate::text::{escape_hidden, shell_word};

/// ANSI styling (anstyle), or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

const BOLD: Ansi = Ansi::new().bold();
const DIM: Ansi = Ansi::new().dimmed();
const WARN: Ansi = BOLD.fg_color(Some(Color::Ansi(AnsiColor::Yellow)));

impl Style {
    fn paint(&self, style: Ansi, text: &str) -> String {
        if self.color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }

    /// The style of a verdict: green free, yellow busy, red foreign and
    /// conflict, magenta unavailable.
    pub fn of(verdict: Verdict) -> Ansi {
        let color = match verdict {
            Verdict::Free => AnsiColor::Green,
            Verdict::Busy => AnsiColor::Yellow,
            Verdict::Foreign | Verdict::Conflict => AnsiColor::Red,
            Verdict::Unavailable => AnsiColor::Magenta,
        };
        BOLD.fg_color(Some(Color::Ansi(color)))
    }

    fn verdict(&self, verdict: Verdict) -> String {
        self.paint(Style::of(verdict), verdict.as_str())
    }

    fn dim(&self, text: &str) -> String {
        self.paint(DIM, text)
    }

    fn bold(&self, text: &str) -> String {
        self.paint(BOLD, text)
    }
}

/// Renders the whole report.
/// `network namespace ci-7 (inode 4026532281)`, as a first line, when the
/// report is of another network namespace (`--netns`).
pub fn netns_line(report: &Report) -> String {
    match &report.netns {
        Some(ns) => format!(
            "network namespace {}(inode {})\n",
            ns.name
                .as_deref()
                .map(|n| format!("{} ", crate::text::escape(n.as_bytes())))
                .unwrap_or_default(),
            ns.inode
        ),
        None => String::new(),
    }
}

pub fn render(report: &Report, style: Style, verbose: bool) -> String {
    let mut out = netns_line(report);
    for (i, address) in report.addresses.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_address(&mut out, address, style, verbose);
    }
    if verbose {
        out.push_str("\nsources:\n");
        let s = &report.sources;
        for (name, status) in [
            ("sock_diag", &s.sock_diag),
            ("proc", &s.proc),
            ("pidfd_getfd", &s.pidfd_getfd),
            ("bind_probe", &s.bind_probe),
            ("bpf", &s.bpf),
        ] {
            let _ = writeln!(
                out,
                "  {name:<12} {:<11} {}",
                status.status,
                escape_hidden(&status.detail)
            );
        }
    }
    out
}

fn render_address(out: &mut String, address: &AddressReport, style: Style, verbose: bool) {
    let _ = writeln!(
        out,
        "{}  {}",
        style.bold(&address.address.to_string()),
        style.verdict(address.verdict)
    );
    for reason in &address.reasons {
        let _ = writeln!(out, "  reason: {}", escape_hidden(&reason.message));
    }
    for note in &address.notes {
        let _ = writeln!(out, "  {} {}", style.dim("note:"), escape_hidden(note));
    }
    for port in &address.ports {
        render_port(out, port, style, verbose);
    }
}

fn render_port(out: &mut String, port: &PortReport, style: Style, verbose: bool) {
    let canary = if port.canary.is_ok() {
        "ok".to_string()
    } else {
        port.canary.result.to_string()
    };
    let _ = writeln!(
        out,
        "  port {}: {} {}",
        port.port,
        if port.listeners.is_empty() {
            "no listener".to_string()
        } else {
            format!(
                "{} listener{}",
                port.listeners.len(),
                if port.listeners.len() == 1 { "" } else { "s" }
            )
        },
        style.dim(&format!("(canary bind: {canary})"))
    );
    for listener in &port.listeners {
        render_listener(out, listener, style, verbose);
    }
    let others = &port.other_sockets;
    if others.total > 0 {
        let counts: Vec<String> = others
            .by_state
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect();
        let _ = writeln!(out, "    other sockets: {}", counts.join(", "));
        let shown = if verbose { others.sockets.len() } else { 5 };
        for socket in others.sockets.iter().filter(|s| s.inode != 0).take(shown) {
            let _ = writeln!(
                out,
                "      {} {} -> {} inode {} uid {}",
                socket.state, socket.local, socket.remote, socket.inode, socket.uid
            );
            for owner in &socket.owners {
                render_owner(out, owner, "        ", style, verbose);
            }
        }
    }
}

fn render_listener(out: &mut String, listener: &ListenerReport, style: Style, verbose: bool) {
    let reuseport = match listener.reuseport {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let mut line = format!(
        "    LISTEN {}  inode {}  uid {}  accept queue {}/{}",
        listener.local, listener.inode, listener.uid, listener.accept_queue, listener.backlog
    );
    if let Some(v6only) = listener.v6only {
        let _ = write!(line, "  v6only {}", if v6only { "yes" } else { "no" });
    }
    let _ = writeln!(out, "{line}");
    let _ = writeln!(
        out,
        "      reuseport {reuseport} {}",
        style.dim(&format!(
            "({}: {})",
            listener.reuseport_evidence.source,
            escape_hidden(&listener.reuseport_evidence.detail)
        ))
    );
    if verbose {
        for tried in &listener.reuseport_evidence.tried {
            let _ = writeln!(
                out,
                "        {} {}",
                style.dim("tried:"),
                escape_hidden(tried)
            );
        }
        if let Some(cgroup) = listener.cgroup_id {
            let _ = writeln!(
                out,
                "      cookie {:#x}  cgroup id {cgroup}",
                listener.cookie
            );
        }
    }
    if listener.owners.is_empty() {
        let _ = writeln!(out, "      owner: none (no process has it in an fd table)");
    }
    for owner in &listener.owners {
        render_owner(out, owner, "      ", style, verbose);
    }
    if !listener.owners_complete && listener.owners.iter().all(|o| !o.hidden) {
        let _ = writeln!(
            out,
            "      {} some processes could not be read; other owners may be hidden",
            style.dim("note:")
        );
    }
}

fn render_owner(out: &mut String, owner: &Owner, indent: &str, style: Style, verbose: bool) {
    if owner.hidden {
        render_hidden_owner(out, owner, indent, style, verbose);
        return;
    }
    let Some(process) = &owner.process else {
        return;
    };
    let mut line = format!(
        "{indent}owner: pid {}{} {}  {}{}",
        owner.pid.unwrap_or(0),
        whereabouts(process),
        style.bold(&process.comm.escaped()),
        process.state,
        threads(process)
    );
    if let Some(uid) = process.uid {
        let _ = write!(line, "  uid {uid}");
    }
    if let Some(ppid) = process.ppid {
        let _ = write!(line, "  ppid {ppid}");
    }
    if let Some(age) = process.age_seconds {
        let _ = write!(line, "  age {}", human_age(age));
    }
    let _ = writeln!(out, "{line}  {}", fd_list(owner));
    if !process.cmdline.is_empty() {
        let words: Vec<String> = process.cmdline.iter().map(|w| shell_word(&w.0)).collect();
        let mut cmd = words.join(" ");
        if !verbose && cmd.chars().count() > 160 {
            cmd = cmd.chars().take(157).collect::<String>() + "...";
        }
        let _ = writeln!(out, "{indent}  {}", style.dim(&cmd));
    }
}

/// `owner: hidden by permissions (uid 1001); it is one of pid 4300, 4301`.
fn render_hidden_owner(out: &mut String, owner: &Owner, indent: &str, style: Style, verbose: bool) {
    let who = match owner.candidates.len() {
        0 => String::new(),
        n if n <= 8 || verbose => format!(
            "; it is one of pid {}",
            owner
                .candidates
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        n => format!("; it is one of {n} unreadable processes of that uid"),
    };
    let _ = writeln!(
        out,
        "{indent}owner: {} (uid {}){who}",
        style.paint(WARN, "hidden by permissions"),
        owner.uid.unwrap_or(0)
    );
}

/// ` (live threads 6641,6642)` for a zombie leader, ` (4 threads)` for a
/// process with several, else nothing.
fn threads(process: &crate::owners::ProcessInfo) -> String {
    if process.state == ProcessState::ZombieLeader {
        let tids: Vec<String> = process.tids.iter().map(u32::to_string).collect();
        format!(" (live threads {})", tids.join(","))
    } else if process.tids.len() > 1 {
        format!(" ({} threads)", process.tids.len())
    } else {
        String::new()
    }
}

/// `fd 4`, `fd 4 via threads 6641,6642`, …
fn fd_list(owner: &Owner) -> String {
    let fds: Vec<String> = owner
        .fds
        .iter()
        .map(|r| {
            if r.via_tids.is_empty() {
                format!("fd {}", r.fd)
            } else {
                format!(
                    "fd {} via thread{} {}",
                    r.fd,
                    if r.via_tids.len() == 1 { "" } else { "s" },
                    r.via_tids
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        })
        .collect();
    fds.join(", ")
}

/// ` (pid 1 in its namespace), container docker 3f2a3f2a3f2a`: where a
/// holder in a container lives; empty for one in sockcheck's own.
fn whereabouts(process: &crate::owners::ProcessInfo) -> String {
    let mut text = String::new();
    if let Some(ns_pid) = process.ns_pid {
        let _ = write!(text, " (pid {ns_pid} in its namespace)");
    }
    if let Some(container) = &process.container {
        let id: String = container.id.chars().take(12).collect();
        let _ = write!(
            text,
            ", container {} {}",
            container.runtime,
            crate::text::escape(id.as_bytes())
        );
    }
    if process.container.is_none()
        && process.ns_pid.is_some()
        && let Some(cgroup) = &process.cgroup
    {
        let _ = write!(text, ", cgroup {}", crate::text::escape(cgroup.as_bytes()));
    }
    text
}

/// `42s`, `3m12s`, `5h03m`, `2d04h`.
pub fn human_age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(192), "3m12s");
        assert_eq!(human_age(5 * 3600 + 180), "5h03m");
        assert_eq!(human_age(2 * 86400 + 4 * 3600), "2d04h");
    }
}
