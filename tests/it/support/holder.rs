//! sockcheck-holder: reproduces, with real sockets, the shapes of holders
//! that sockcheck must recognise. For the integration tests, the Node
//! package's tests, the benchmark and demos.
//!
//! A test fixture, not part of what `cargo install` installs: Cargo.toml
//! declares it as the example `sockcheck-holder`, which `cargo test` builds
//! (at `target/PROFILE/examples/sockcheck-holder`) and `cargo install`
//! leaves out. Build it alone with `cargo build --release --example
//! sockcheck-holder`.
//!
//! Usage: sockcheck-holder SHAPE ADDR PORT [N]
//!
//! Once its sockets are in place it prints one line to stdout,
//! `ready pid=P tids=T,.. child=C` (fields as they apply), and then waits to
//! be killed. `timewait` exits at once instead, leaving only TIME_WAIT.

use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const SHAPES: &str = "\
shapes:
  plain ADDR PORT          one listener
  reuseport ADDR PORT      one listener with SO_REUSEPORT
  group ADDR PORT N        N listeners with SO_REUSEPORT in one process
  lingering ADDR PORT N    N worker threads each hold a SO_REUSEPORT listener;
                           then the main thread exits (the leader is a zombie)
  forked ADDR PORT         a forked child inherits the listener; the parent exits
  stopped ADDR PORT        one listener, then the process stops itself (SIGSTOP)
  mapped ADDR PORT         an AF_INET6 listener on ::ffff:ADDR
  wildcard - PORT          a listener on 0.0.0.0
  dualstack - PORT         a listener on [::] with IPV6_V6ONLY off
  v6only - PORT            a listener on [::] with IPV6_V6ONLY on
  client ADDR PORT         a client socket bound to ADDR:PORT, connected (ESTABLISHED)
  bound ADDR PORT          a socket bound to ADDR:PORT, never listening
  timewait ADDR PORT       leaves one TIME_WAIT socket on ADDR:PORT and exits
  closing ADDR PORT        one listener, closed on SIGUSR1; the process lives on
  draining ADDR PORT       one listener, closed on SIGTERM; the process lives on
                           (as a server draining its connections would)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: sockcheck-holder SHAPE ADDR PORT [N]\n{SHAPES}");
        std::process::exit(2);
    }
    let shape = args[0].as_str();
    let port: u16 = args[2]
        .parse()
        .unwrap_or_else(|_| fail(&format!("bad port '{}'", args[2])));
    let address = || -> IpAddr {
        args[1]
            .parse()
            .unwrap_or_else(|_| fail(&format!("bad address '{}'", args[1])))
    };
    let count: usize = args.get(3).map(|n| n.parse().unwrap_or(2)).unwrap_or(2);
    let mut keep: Vec<Socket> = Vec::new();
    let mut streams: Vec<TcpStream> = Vec::new();
    match shape {
        "plain" => keep.push(listen(SocketAddr::new(address(), port), false, None)),
        "reuseport" => keep.push(listen(SocketAddr::new(address(), port), true, None)),
        "group" => {
            for _ in 0..count {
                keep.push(listen(SocketAddr::new(address(), port), true, None));
            }
        }
        "stopped" => {
            keep.push(listen(SocketAddr::new(address(), port), false, None));
            ready(&[], None);
            // SAFETY: raise has no memory effects.
            unsafe { libc::raise(libc::SIGSTOP) };
            park();
        }
        "mapped" => {
            let IpAddr::V4(v4) = address() else {
                fail("mapped needs an IPv4 address")
            };
            let local = SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port);
            keep.push(listen(local, false, Some(false)));
        }
        "wildcard" => keep.push(listen(
            SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
            false,
            None,
        )),
        "dualstack" => keep.push(listen(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            false,
            Some(false),
        )),
        "v6only" => keep.push(listen(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            false,
            Some(true),
        )),
        "bound" => {
            let socket = socket_for(SocketAddr::new(address(), port));
            socket
                .bind(&SocketAddr::new(address(), port).into())
                .unwrap_or_else(|e| fail(&e.to_string()));
            keep.push(socket);
        }
        "client" => {
            // A server of our own on an ephemeral port, and a client bound to
            // ADDR:PORT that connects to it.
            let server = TcpListener::bind((address(), 0)).unwrap_or_else(|e| fail(&e.to_string()));
            let client = socket_for(SocketAddr::new(address(), port));
            client
                .bind(&SocketAddr::new(address(), port).into())
                .unwrap_or_else(|e| fail(&e.to_string()));
            client
                .connect(&server.local_addr().unwrap().into())
                .unwrap_or_else(|e| fail(&e.to_string()));
            let (accepted, _) = server.accept().unwrap_or_else(|e| fail(&e.to_string()));
            streams.push(accepted);
            keep.push(client);
        }
        "timewait" => {
            let local = SocketAddr::new(address(), port);
            let server = listen(local, false, None);
            let server: TcpListener = server.into();
            let client = TcpStream::connect(local).unwrap_or_else(|e| fail(&e.to_string()));
            let (accepted, _) = server.accept().unwrap_or_else(|e| fail(&e.to_string()));
            // The side that closes first keeps TIME_WAIT: the accepted socket,
            // whose local address is ADDR:PORT.
            drop(accepted);
            std::thread::sleep(Duration::from_millis(50));
            drop(client);
            drop(server);
            std::thread::sleep(Duration::from_millis(50));
            ready(&[], None);
            return;
        }
        "forked" => {
            keep.push(listen(SocketAddr::new(address(), port), false, None));
            // SAFETY: single-threaded here; the child only parks.
            match unsafe { libc::fork() } {
                -1 => fail("fork failed"),
                0 => park(),
                child => {
                    ready(&[], Some(child as u32));
                    std::process::exit(0);
                }
            }
        }
        "lingering" => {
            let local = SocketAddr::new(address(), port);
            let (tx, rx) = mpsc::channel();
            for _ in 0..count {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let listener = listen(local, true, None);
                    tx.send(rustix::thread::gettid().as_raw_nonzero().get() as u32)
                        .unwrap();
                    let _hold = listener;
                    park();
                });
            }
            let mut tids: Vec<u32> = (0..count).map(|_| rx.recv().unwrap()).collect();
            tids.sort_unstable();
            ready(&tids, None);
            // Exit the main thread alone (SYS_exit, not exit_group): the
            // leader becomes a zombie and /proc/PID/fd goes empty while the
            // workers keep the listeners.
            // SAFETY: nothing on this thread is used again.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
            unreachable!();
        }
        "closing" | "draining" => {
            let listener = listen(SocketAddr::new(address(), port), false, None);
            LISTENER.store(
                std::os::fd::IntoRawFd::into_raw_fd(listener),
                std::sync::atomic::Ordering::SeqCst,
            );
            let signal = if shape == "closing" {
                libc::SIGUSR1
            } else {
                libc::SIGTERM
            };
            // SAFETY: the handler only swaps an atomic and calls close(2),
            // both async-signal-safe.
            unsafe { libc::signal(signal, close_listener as *const () as libc::sighandler_t) };
        }
        other => fail(&format!("unknown shape '{other}'\n{SHAPES}")),
    }
    ready(&[], None);
    let _hold = (keep, streams);
    park();
}

/// The listener `closing` and `draining` close on their signal.
static LISTENER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn close_listener(_: libc::c_int) {
    let fd = LISTENER.swap(-1, std::sync::atomic::Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: the fd is ours, and closed once (it was swapped out).
        unsafe { libc::close(fd) };
    }
}

fn socket_for(local: SocketAddr) -> Socket {
    Socket::new(
        Domain::for_address(local),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .unwrap_or_else(|e| fail(&e.to_string()))
}

fn listen(local: SocketAddr, reuseport: bool, v6only: Option<bool>) -> Socket {
    let socket = socket_for(local);
    if let Some(only) = v6only {
        socket
            .set_only_v6(only)
            .unwrap_or_else(|e| fail(&e.to_string()));
    }
    socket
        .set_reuse_address(true)
        .unwrap_or_else(|e| fail(&e.to_string()));
    if reuseport {
        socket
            .set_reuse_port(true)
            .unwrap_or_else(|e| fail(&e.to_string()));
    }
    socket
        .bind(&local.into())
        .unwrap_or_else(|e| fail(&format!("bind {local}: {e}")));
    socket.listen(128).unwrap_or_else(|e| fail(&e.to_string()));
    socket
}

fn ready(tids: &[u32], child: Option<u32>) {
    let mut line = format!("ready pid={}", std::process::id());
    if !tids.is_empty() {
        let list: Vec<String> = tids.iter().map(u32::to_string).collect();
        line.push_str(&format!(" tids={}", list.join(",")));
    }
    if let Some(child) = child {
        line.push_str(&format!(" child={child}"));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("sockcheck-holder: {message}");
    std::process::exit(1);
}
