//! The forensic report `run` writes when its command left something holding
//! the address: each lingering process, its live threads, its listeners and
//! their SO_REUSEPORT state, and what was done about it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::owners::ProcessInfo;
use crate::report::{AddressReport, SourceStatus, Verdict, display};
use crate::reuseport::Reuseport;
use crate::text::{Bytes, markdown as md, markdown_code, shell_word};

/// The forensic report's JSON schema version.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Forensic {
    pub schema: u32,
    pub address: IpAddr,
    pub ports: Vec<u16>,
    pub command: Vec<Bytes>,
    pub command_status: u8,
    /// Unix seconds when the command exited.
    pub command_exited: u64,
    pub linger_seconds: f64,
    /// The signal (`SIGTERM`, `SIGINT`, …) that cut the linger wait short:
    /// the job was cancelled, and the report was made at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_by: Option<String>,
    pub verdict: Verdict,
    pub holders: Vec<Holder>,
    /// Holders that could not be read (another user's processes).
    pub hidden: Vec<HiddenHolder>,
    pub quarantined: bool,
    pub reaped: Vec<Reaped>,
    /// Whether the thread that opened each listener could be named.
    pub attribution: SourceStatus,
    /// The full inspection the report was made from.
    pub inspection: AddressReport,
}

/// One lingering process.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Holder {
    pub pid: u32,
    #[serde(flatten)]
    pub process: ProcessInfo,
    pub listeners: Vec<HeldListener>,
    pub sockets: Vec<HeldSocket>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HeldListener {
    #[serde(serialize_with = "display")]
    #[schemars(with = "String")]
    pub local: SocketAddr,
    pub inode: u64,
    pub fd: Option<u32>,
    pub reuseport: Option<bool>,
    pub reuseport_evidence: Reuseport,
    pub accept_queue: u32,
    pub backlog: u32,
    /// The thread that called listen(), when a BPF watch saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_by: Option<Opener>,
}

/// The thread that put a socket into LISTEN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Opener {
    pub tid: u32,
    pub comm: Bytes,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HeldSocket {
    pub state: crate::diag::TcpState,
    #[serde(serialize_with = "display")]
    #[schemars(with = "String")]
    pub local: SocketAddr,
    #[serde(serialize_with = "display")]
    #[schemars(with = "String")]
    pub remote: SocketAddr,
    pub inode: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HiddenHolder {
    pub uid: u32,
    pub inode: u64,
    pub candidates: Vec<u32>,
}

/// What `--reap` did to one process.
pub use super::reap::Reaped;

/// Groups an address report's sockets by the process that holds them.
pub fn holders(
    report: &AddressReport,
    openers: &BTreeMap<u64, Opener>,
) -> (Vec<Holder>, Vec<HiddenHolder>) {
    let mut by_pid: BTreeMap<u32, Holder> = BTreeMap::new();
    let mut hidden = Vec::new();
    for port in &report.ports {
        for listener in &port.listeners {
            for owner in &listener.owners {
                match (owner.pid, &owner.process) {
                    (Some(pid), Some(process)) => {
                        let holder = by_pid.entry(pid).or_insert_with(|| Holder {
                            pid,
                            process: process.clone(),
                            listeners: Vec::new(),
                            sockets: Vec::new(),
                        });
                        holder.listeners.push(HeldListener {
                            local: listener.local,
                            inode: listener.inode,
                            fd: owner.fds.first().map(|f| f.fd),
                            reuseport: listener.reuseport,
                            reuseport_evidence: listener.reuseport_evidence.clone(),
                            accept_queue: listener.accept_queue,
                            backlog: listener.backlog,
                            opened_by: openers.get(&listener.inode).cloned(),
                        });
                    }
                    _ => hidden.push(HiddenHolder {
                        uid: owner.uid.unwrap_or(listener.uid),
                        inode: listener.inode,
                        candidates: owner.candidates.clone(),
                    }),
                }
            }
        }
        for socket in &port.other_sockets.sockets {
            for owner in &socket.owners {
                if let (Some(pid), Some(process)) = (owner.pid, &owner.process) {
                    let holder = by_pid.entry(pid).or_insert_with(|| Holder {
                        pid,
                        process: process.clone(),
                        listeners: Vec::new(),
                        sockets: Vec::new(),
                    });
                    holder.sockets.push(HeldSocket {
                        state: socket.state,
                        local: socket.local,
                        remote: socket.remote,
                        inode: socket.inode,
                    });
                }
            }
        }
    }
    (by_pid.into_values().collect(), hidden)
}

/// Writes the report: JSON for a `.json` file, Markdown otherwise.
pub fn write(report: &Forensic, path: &Path) -> Result<(), Error> {
    let text = if path.extension().is_some_and(|e| e == "json") {
        let mut text = serde_json::to_string_pretty(report).expect("a report always serializes");
        text.push('\n');
        text
    } else {
        markdown(report)
    };
    super::report_file::write(path, text.as_bytes())
}

/// The report for people: Markdown, which also reads well on a terminal.
///
/// Every text a process or a user chose (comm, command lines, messages that
/// quote them) goes through [`md`] (inline text, table cells) or
/// [`markdown_code`] (command lines), so none can split a table row, open
/// a link, HTML or a code span, or reach the terminal raw when the report
/// is printed.
pub fn markdown(report: &Forensic) -> String {
    let mut out = String::new();
    markdown_header(&mut out, report);
    for holder in &report.holders {
        markdown_holder(&mut out, holder);
    }
    markdown_hidden(&mut out, &report.hidden);
    markdown_attribution(&mut out, report);
    markdown_reaped(&mut out, &report.reaped);
    out
}

/// The ports something still holds (a reason names the port), sorted and
/// once each; every port checked when no reason names one.
fn held_ports(report: &Forensic) -> Vec<u16> {
    let mut held: Vec<u16> = report
        .inspection
        .reasons
        .iter()
        .filter_map(|r| r.port)
        .collect();
    held.sort_unstable();
    held.dedup();
    if held.is_empty() {
        held = report.ports.clone();
    }
    held
}

/// The title, the one-sentence summary (command, exit status, linger time,
/// verdict and held ports), the signal that cut the wait short if any, and
/// the inspection's reasons as a list.
fn markdown_header(out: &mut String, report: &Forensic) {
    let command: Vec<String> = report.command.iter().map(|w| shell_word(&w.0)).collect();
    let _ = writeln!(out, "# Lingering holders on {}\n", report.address);
    // The ports something still holds, not every port checked.
    let held = held_ports(report);
    let _ = writeln!(
        out,
        "{} exited with status {}; {:.1}s later {} was still **{}** on port{} {}.\n",
        markdown_code(&command.join(" ")),
        report.command_status,
        report.linger_seconds,
        report.address,
        report.verdict.as_str(),
        if held.len() == 1 { "" } else { "s" },
        held.iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(signal) = &report.interrupted_by {
        let _ = writeln!(
            out,
            "sockcheck was sent {signal} (a cancelled job?), so it stopped waiting and \
             made this report at once.\n"
        );
    }
    for reason in &report.inspection.reasons {
        let _ = writeln!(out, "- {}", md(&reason.message));
    }
    out.push('\n');
}

/// One lingering process's section: its /proc facts, its listeners as a
/// table and its other sockets as a list.
fn markdown_holder(out: &mut String, holder: &Holder) {
    markdown_process(out, holder.pid, &holder.process);
    if !holder.listeners.is_empty() {
        markdown_listeners(out, &holder.listeners);
    }
    for s in &holder.sockets {
        let _ = writeln!(
            out,
            "- {} socket {} → {} (inode {})",
            s.state, s.local, s.remote, s.inode
        );
    }
    out.push('\n');
}

/// The heading and the list of what /proc says about the process: state,
/// live threads (tids), command line, parent, uid and age; a field /proc
/// did not give is left out.
fn markdown_process(out: &mut String, pid: u32, p: &ProcessInfo) {
    let _ = writeln!(out, "## pid {} ({})\n", pid, p.comm.markdown());
    let _ = writeln!(out, "- state: {}", p.state);
    let tids: Vec<String> = p.tids.iter().map(u32::to_string).collect();
    let _ = writeln!(
        out,
        "- live threads: {}",
        if tids.is_empty() {
            "none".into()
        } else {
            tids.join(", ")
        }
    );
    if !p.cmdline.is_empty() {
        let words: Vec<String> = p.cmdline.iter().map(|w| shell_word(&w.0)).collect();
        let _ = writeln!(out, "- command line: {}", markdown_code(&words.join(" ")));
    }
    if let Some(ppid) = p.ppid {
        let _ = writeln!(out, "- parent: {ppid}");
    }
    if let Some(uid) = p.uid {
        let _ = writeln!(out, "- uid: {uid}");
    }
    if let Some(age) = p.age_seconds {
        let _ = writeln!(out, "- age: {}", crate::report::human::human_age(age));
    }
}

/// The table of a process's listeners: local address, inode, fd, whether
/// SO_REUSEPORT is set and the evidence for it, the accept queue against
/// the backlog, and the thread that opened the socket.
fn markdown_listeners(out: &mut String, listeners: &[HeldListener]) {
    let _ = writeln!(
        out,
        "\n| listener | inode | fd | SO_REUSEPORT | evidence | accept queue | opened by |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for l in listeners {
        let reuseport = match l.reuseport {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        let opener = match &l.opened_by {
            Some(o) => format!("thread {} ({})", o.tid, o.comm.markdown()),
            None => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {reuseport} | {}: {} | {}/{} | {opener} |",
            l.local,
            l.inode,
            l.fd.map(|f| f.to_string()).unwrap_or_default(),
            md(l.reuseport_evidence.source.as_str()),
            md(&l.reuseport_evidence.detail),
            l.accept_queue,
            l.backlog
        );
    }
}

/// One line per socket inode whose holder could not be read: its uid and
/// the pids that may hold it.
fn markdown_hidden(out: &mut String, hidden: &[HiddenHolder]) {
    for h in hidden {
        let _ = writeln!(
            out,
            "- inode {} is held by a process of uid {} that could not be read (candidates: {})",
            h.inode,
            h.uid,
            h.candidates
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Whether the opening threads could be named, and the quarantine notice
/// when the address was quarantined.
fn markdown_attribution(out: &mut String, report: &Forensic) {
    let _ = writeln!(
        out,
        "Thread attribution: {} ({})",
        report.attribution.status,
        md(&report.attribution.detail)
    );
    if report.quarantined {
        let _ = writeln!(
            out,
            "\n{} is quarantined: `sockcheck acquire` skips it until it is free again.",
            report.address
        );
    }
}

/// The `Reaped` section: each process `--reap` acted on, what was done and
/// whether it exited; nothing when none was.
fn markdown_reaped(out: &mut String, reaped: &[Reaped]) {
    if reaped.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Reaped\n");
    for r in reaped {
        let _ = writeln!(
            out,
            "- pid {}: {}{}",
            r.pid,
            md(r.action.as_str()),
            if r.exited {
                ", exited"
            } else {
                ", still alive"
            }
        );
    }
}
