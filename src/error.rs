//! Errors of the inspection itself. A missing privilege is not an error: it is
//! an observation carried in the report.

use std::io;

/// Something went wrong that stops the inspection (exit status 3), or the
/// input was bad (exit status 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A netlink syscall failed.
    #[error("{what} failed: {}", errno_label(source))]
    Netlink {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The kernel's reply could not be trusted (truncated, out of sequence,
    /// NLMSG_ERROR).
    #[error("{what}: {detail}")]
    NetlinkReply {
        what: String,
        detail: String,
        /// The errno the kernel answered with, when it answered with one
        /// (NLMSG_ERROR): match on this, not on `detail`.
        errno: Option<i32>,
    },
    /// /proc could not be read at all.
    #[error("reading {path} failed: {}", errno_label(source))]
    Proc {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A value given on the command line or in the environment is malformed.
    #[error("{0}")]
    Usage(String),
    /// An eBPF program could not be loaded, attached or read (`watch`
    /// needs it; elsewhere eBPF is optional and its failure a note).
    #[error("{what}: {}", bpf_detail(source))]
    Bpf {
        what: String,
        /// Boxed: an aya error is large, and errors travel by value.
        #[source]
        source: Box<crate::bpf::BpfError>,
    },
    /// A malformed command line, with clap's suggestion (`tip: a similar
    /// argument exists: '--ports'`) for a second line.
    #[error("{message}")]
    UsageTip { message: String, tip: String },
    /// The lease gate's state directory cannot be used: one line,
    /// `state directory DIR: why, and what to do`. A failure (exit status
    /// 3), not bad usage: nothing the command line said was malformed, and
    /// a script must not read it as "bad input, retrying will not help".
    #[error("{0}")]
    State(String),
    /// Any other failed system call.
    #[error("{call} failed: {}", errno_label(source))]
    Syscall {
        call: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn netlink(call: &str, source: io::Error) -> Error {
        Error::Netlink {
            what: call.to_string(),
            source,
        }
    }

    pub(crate) fn netlink_for(what: String, call: &str, source: io::Error) -> Error {
        Error::Netlink {
            what: format!("{what} ({call})"),
            source,
        }
    }

    pub fn syscall(call: impl Into<String>, source: io::Error) -> Error {
        Error::Syscall {
            call: call.into(),
            source,
        }
    }

    /// Whether this error is the user's (exit 2) rather than the system's (exit 3).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_) | Error::UsageTip { .. })
    }

    /// A suggestion to print on a line of its own after the error.
    pub fn tip(&self) -> Option<&str> {
        match self {
            Error::UsageTip { tip, .. } => Some(tip),
            _ => None,
        }
    }
}

impl Error {
    /// An eBPF failure: `what` sockcheck was doing.
    pub fn bpf(what: impl Into<String>, source: crate::bpf::BpfError) -> Error {
        Error::Bpf {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// An eBPF error without a repeated "eBPF unavailable" after a `what`
/// that says eBPF already.
fn bpf_detail(error: &crate::bpf::BpfError) -> String {
    match error {
        crate::bpf::BpfError::Unavailable(reason) => reason.to_string(),
        other => other.to_string(),
    }
}

/// The symbolic name of an errno value.
pub fn errno_name(code: i32) -> &'static str {
    match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ECONNREFUSED => "ECONNREFUSED",
        _ => "errno",
    }
}

/// `EADDRINUSE` rather than "Address already in use (os error 98)": the
/// name is what people search for and what ss/strace print; the number when
/// the name is unknown.
pub fn errno_label(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) if errno_name(code) != "errno" => errno_name(code).to_string(),
        Some(code) => format!("errno {code}"),
        None => error.to_string(),
    }
}
