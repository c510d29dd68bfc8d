//! The plain-bind canary: what the next server would see if it bound now.
//!
//! A bind of ADDR:PORT with SO_REUSEADDR on and SO_REUSEPORT off — what
//! Node's libuv and most servers do — closed at once and never listened on,
//! so it cannot take a connection or disturb anyone.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Errno;

/// The result of one canary bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Canary {
    /// `ok`, or the errno name (`EADDRINUSE`, `EADDRNOTAVAIL`, `EACCES`, …).
    pub result: BindResult,
    /// The raw errno, when the bind failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

/// What a bind gave: `ok`, or the errno it failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum BindResult {
    #[serde(rename = "ok")]
    Ok,
    #[serde(untagged)]
    Failed(Errno),
}

impl std::fmt::Display for BindResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindResult::Ok => f.write_str("ok"),
            BindResult::Failed(errno) => errno.fmt(f),
        }
    }
}

impl Canary {
    pub fn ok() -> Canary {
        Canary {
            result: BindResult::Ok,
            errno: None,
        }
    }

    pub fn failed(errno: i32) -> Canary {
        Canary {
            result: BindResult::Failed(Errno::from_raw(errno)),
            errno: Some(errno),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.errno.is_none()
    }

    pub fn is(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }
}

/// Binds `local` the way a server would, and closes the socket.
pub fn bind(local: SocketAddr) -> Canary {
    let attempt = || -> std::io::Result<()> {
        let socket = Socket::new(
            Domain::for_address(local),
            Type::STREAM.cloexec(),
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.bind(&local.into())
    };
    match attempt() {
        Ok(()) => Canary::ok(),
        Err(error) => Canary::failed(error.raw_os_error().unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_sees_a_listener_and_leaves_no_trace() {
        let listener = std::net::TcpListener::bind("127.81.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let canary = bind(local);
        assert_eq!(canary.result, BindResult::Failed(Errno::Eaddrinuse));
        assert_eq!(
            serde_json::to_value(&canary).unwrap()["result"],
            "EADDRINUSE"
        );
        drop(listener);
        assert!(bind(local).is_ok());
        // The canary itself never holds the port afterwards.
        assert!(bind(local).is_ok());
    }

    #[test]
    fn canary_reports_a_non_local_address() {
        let canary = bind("192.0.2.1:40001".parse().unwrap());
        assert_eq!(canary.result, BindResult::Failed(Errno::Eaddrnotavail));
        assert_eq!(Canary::ok().result.to_string(), "ok");
        assert_eq!(serde_json::to_value(Canary::ok()).unwrap()["result"], "ok");
        assert_eq!(Canary::failed(200).result.to_string(), "errno 200");
    }
}
