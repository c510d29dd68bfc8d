//! Errors of the inspection itself. A missing privilege is not an error: it is
//! an observation carried in the report.

use std::io;

use schemars::JsonSchema;
use serde::Serialize;

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

/// Defines [`Errno`]: each variant with the libc constant it stands for.
/// Its serialized name is the constant's (`rename_all = "UPPERCASE"`).
macro_rules! errnos {
    ($($variant:ident = $code:ident),* $(,)?) => {
        /// An errno value, by the name ss(8) and strace print for it
        /// (`EADDRINUSE`), or `errno N` for one this list has no name for.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
        #[serde(rename_all = "UPPERCASE")]
        pub enum Errno {
            $($variant,)*
            /// An errno with no name here.
            #[serde(untagged)]
            Other(UnnamedErrno),
        }

        impl Errno {
            /// The errno `code` stands for.
            pub fn from_raw(code: i32) -> Errno {
                match code {
                    $(libc::$code => Errno::$variant,)*
                    _ => Errno::Other(UnnamedErrno(code)),
                }
            }

            /// The symbolic name (`EPERM`), if this list has one.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Errno::$variant => Some(stringify!($code)),)*
                    Errno::Other(_) => None,
                }
            }

            /// The raw value.
            pub fn code(self) -> i32 {
                match self {
                    $(Errno::$variant => libc::$code,)*
                    Errno::Other(UnnamedErrno(code)) => code,
                }
            }
        }
    };
}

errnos! {
    Eperm = EPERM,
    Enoent = ENOENT,
    Esrch = ESRCH,
    Eintr = EINTR,
    Ebadf = EBADF,
    Eagain = EAGAIN,
    Enomem = ENOMEM,
    Eacces = EACCES,
    Ebusy = EBUSY,
    Einval = EINVAL,
    Emfile = EMFILE,
    Enfile = ENFILE,
    Enosys = ENOSYS,
    Enotsock = ENOTSOCK,
    Eprotonosupport = EPROTONOSUPPORT,
    Eopnotsupp = EOPNOTSUPP,
    Eafnosupport = EAFNOSUPPORT,
    Eaddrinuse = EADDRINUSE,
    Eaddrnotavail = EADDRNOTAVAIL,
    Enetunreach = ENETUNREACH,
    Enobufs = ENOBUFS,
    Eisconn = EISCONN,
    Econnrefused = ECONNREFUSED,
}

/// An errno [`Errno`] has no name for, serialized as `errno N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnnamedErrno(pub i32);

impl Serialize for UnnamedErrno {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Errno::Other(*self))
    }
}

impl JsonSchema for UnnamedErrno {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UnnamedErrno".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An errno with no symbolic name in sockcheck: `errno N`.",
            "type": "string",
            "pattern": "^errno -?[0-9]+$",
        })
    }
}

/// `EADDRINUSE`, or `errno 200` for an errno with no name here.
impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "errno {}", self.code()),
        }
    }
}

/// The symbolic name of an errno value, if sockcheck knows one.
pub fn errno_name(code: i32) -> Option<&'static str> {
    Errno::from_raw(code).name()
}

/// `EADDRINUSE` rather than "Address already in use (os error 98)": the
/// name is what people search for and what ss/strace print; the number when
/// the name is unknown.
pub fn errno_label(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => Errno::from_raw(code).to_string(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_serialize_as_their_names() {
        for code in 1..200 {
            let errno = Errno::from_raw(code);
            assert_eq!(errno.code(), code);
            let json = serde_json::to_value(errno).unwrap();
            assert_eq!(json, errno.to_string(), "{errno:?}");
            if let Some(name) = errno.name() {
                assert_eq!(json, name);
                assert_eq!(errno_name(code), Some(name));
            } else {
                assert_eq!(json, format!("errno {code}"));
            }
        }
        assert_eq!(Errno::from_raw(libc::EADDRINUSE), Errno::Eaddrinuse);
        assert_eq!(errno_name(libc::EPERM), Some("EPERM"));
        assert_eq!(errno_name(200), None);
        assert_eq!(
            errno_label(&io::Error::from_raw_os_error(libc::EACCES)),
            "EACCES"
        );
        assert_eq!(errno_label(&io::Error::from_raw_os_error(200)), "errno 200");
    }
}
