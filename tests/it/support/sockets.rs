//! Sockets made in the test process itself, with exactly the options a
//! test asks for (std's TcpListener always sets SO_REUSEADDR).

use std::{
    io,
    mem::size_of,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// Socket options set before bind().
#[derive(Default, Clone, Copy)]
pub struct Opts {
    pub reuseport: bool,
    pub reuseaddr: bool,
    /// Some(..) sets IPV6_V6ONLY explicitly (IPv6 only).
    pub v6only: Option<bool>,
}

fn check(ret: libc::c_int, what: &str) -> io::Result<()> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: bool,
    what: &str,
) -> io::Result<()> {
    let v: libc::c_int = value.into();
    // SAFETY: valid fd, pointer to a c_int of the given size.
    check(
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&raw const v).cast(),
                size_of::<libc::c_int>() as u32,
            )
        },
        what,
    )
}

/// A TCP listener with exactly the given options (std's TcpListener always
/// sets SO_REUSEADDR, so it cannot make a "plain" one).
pub fn listen(addr: SocketAddr, opts: Opts) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall; the fd is owned right away.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    check(raw, "socket")?;
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if opts.reuseport {
        set_int(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            true,
            "SO_REUSEPORT",
        )?;
    }
    if opts.reuseaddr {
        set_int(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            true,
            "SO_REUSEADDR",
        )?;
    }
    if let Some(v6only) = opts.v6only {
        set_int(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            v6only,
            "IPV6_V6ONLY",
        )?;
    }
    let ret = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            unsafe {
                libc::bind(
                    raw,
                    (&raw const sin).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            unsafe {
                libc::bind(
                    raw,
                    (&raw const sin6).cast(),
                    size_of::<libc::sockaddr_in6>() as u32,
                )
            }
        }
    };
    check(ret, &format!("bind {addr}"))?;
    check(unsafe { libc::listen(raw, 16) }, "listen")?;
    Ok(fd)
}

/// st_ino of an fd (for a socket: its inode, as `socket:[N]` shows it).
pub fn inode(fd: &OwnedFd) -> u64 {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0, "fstat");
    st.st_ino
}

pub fn gettid() -> u32 {
    unsafe { libc::gettid() as u32 }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `cycles` plain TCP sockets put into LISTEN on `addr` and closed again,
/// one after the other: two `inet_sock_set_state` events each (CLOSE to
/// LISTEN, LISTEN to CLOSE). A bind that finds the port taken is retried
/// (for up to 10 s): on a shared machine, anyone's socket bound to the
/// wildcard address on port 0 may draw this port from the ephemeral range
/// for a while. A failed bind makes no event, so the count stays exact.
pub fn listen_close(addr: SocketAddr, cycles: u64) {
    let mut busy_since = None;
    let mut done = 0;
    while done < cycles {
        match listen(addr, Opts::default()) {
            Ok(fd) => {
                drop(fd);
                done += 1;
                busy_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                let since = *busy_since.get_or_insert_with(std::time::Instant::now);
                assert!(
                    since.elapsed() < std::time::Duration::from_secs(10),
                    "cycle {done}: {addr} stayed taken for 10 s: {e}"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("cycle {done}: listen on {addr}: {e}"),
        }
    }
}
