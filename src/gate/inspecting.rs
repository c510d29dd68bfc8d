//! The gate commands that lease nothing: `scan`, `list` and `wait` (`reap`
//! is in [`super::reap`]).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Context;
use super::{POLL, plural, show_duration, summary};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::inspect::{self, KernelView};
use crate::output::emit;
use crate::report::{Report, Verdict};

/// `sockcheck scan POOL`.
///
/// One sock_diag dump for the pool; people's lines (and `-q`'s verdict)
/// are made a slice of the pool at a time and printed as they come, so no
/// whole report of a /16 on 64 ports is ever kept. `-q` prints nothing and
/// so names no owners: it never reads /proc. `--json` is one document.
pub fn scan(ctx: &Context, pool: Vec<IpAddr>) -> Result<ExitStatus, Error> {
    if ctx.output.json {
        let report = inspect::inspect(&ctx.query(pool, true))?;
        emit(&report, ctx.output)?;
        return Ok(if report.all_free() {
            ExitStatus::Free
        } else {
            ExitStatus::NotFree
        });
    }
    let view = inspect::kernel_view(&ctx.ports)?;
    let width = pool.iter().map(|a| a.to_string().len()).max().unwrap_or(0);
    // About 65,536 address-and-port entries a slice, whatever the ports.
    let slice = (SLICE_ENTRIES / ctx.ports.len().max(1)).max(1);
    let mut all_free = true;
    for (n, addresses) in pool.chunks(slice).enumerate() {
        let report =
            inspect::inspect_view(&ctx.query(addresses.to_vec(), !ctx.output.quiet), &view);
        all_free &= report.all_free();
        if !ctx.output.quiet {
            ctx.output.print(&lines(&report, false, width, n == 0))?;
        }
    }
    Ok(if all_free {
        ExitStatus::Free
    } else {
        ExitStatus::NotFree
    })
}

/// How many address-and-port entries `scan` keeps at once.
const SLICE_ENTRIES: usize = 65_536;

/// One line per address: the address (padded to `width`), its verdict,
/// who holds it, and (`counts`) how many sockets it has on the ports;
/// `header`: first the namespace line, when there is one.
fn lines(report: &Report, counts: bool, width: usize, header: bool) -> String {
    let mut text = if header {
        crate::report::human::netns_line(report)
    } else {
        String::new()
    };
    for address in &report.addresses {
        let listeners: usize = address.ports.iter().map(|p| p.listeners.len()).sum();
        let others: usize = address.ports.iter().map(|p| p.other_sockets.total).sum();
        let line = format!(
            "{:<width$}  {:<11}  {}{}",
            address.address.to_string(),
            address.verdict.as_str(),
            summary(address),
            match (listeners, others) {
                _ if !counts => String::new(),
                (0, 0) => String::new(),
                (l, 0) => format!(" ({l} listener{})", plural(l)),
                (0, o) => format!(" ({o} other socket{})", plural(o)),
                (l, o) => format!(
                    " ({l} listener{}, {o} other socket{})",
                    plural(l),
                    plural(o)
                ),
            }
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `sockcheck list`: every address with a socket on the ports (wildcard
/// listeners too, as 0.0.0.0 and ::), each with its verdict and holders,
/// sorted by address; the `check` document with `--json`. Exits 0: it
/// lists, it does not judge.
pub fn list(ctx: &Context) -> Result<ExitStatus, Error> {
    let view = inspect::kernel_view(&ctx.ports)?;
    let report = inspect::inspect_view(&ctx.query(local_addresses(&view), true), &view);
    if ctx.output.json {
        emit(&report, ctx.output)?;
    } else {
        ctx.output.print(&list_text(&report, &ctx.ports))?;
    }
    Ok(ExitStatus::Free)
}

/// The human text of `list`: one line per address (padded to the longest)
/// with its socket counts, or one line saying no socket is on `ports`.
fn list_text(report: &Report, ports: &[u16]) -> String {
    if report.addresses.is_empty() {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        return format!(
            "no socket on port{} {}: nothing listens there, on any address\n",
            plural(ports.len()),
            ports.join(",")
        );
    }
    let width = report
        .addresses
        .iter()
        .map(|a| a.address.to_string().len())
        .max()
        .unwrap_or(0);
    lines(report, true, width, true)
}

/// The local addresses of every socket in the view, each once, sorted; an
/// IPv4-mapped address is the IPv4 address it maps.
fn local_addresses(view: &KernelView) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = view
        .listeners
        .iter()
        .chain(&view.others)
        .map(|s| match s.local.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        })
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

/// `sockcheck wait ADDR`.
pub fn wait(
    ctx: &Context,
    address: IpAddr,
    timeout: Duration,
    allow_foreign: bool,
) -> Result<ExitStatus, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = inspect::kernel_view(&ctx.ports)?;
        let quick = ctx.one(&view, address, false);
        // Waiting cannot fix a wildcard listener (unless asked to wait
        // anyway) nor an address that is not local.
        let hopeless = match quick.verdict {
            Verdict::Foreign => !allow_foreign,
            Verdict::Unavailable => true,
            _ => false,
        };
        if quick.verdict == Verdict::Free {
            if ctx.output.json {
                emit(&single(ctx, &view, address), ctx.output)?;
            }
            return Ok(ExitStatus::Free);
        }
        if hopeless || Instant::now() >= deadline {
            // Who still holds it, with every detail `check` gives.
            let report = single(ctx, &view, address);
            emit(&report, ctx.output)?;
            ctx.output.note(&format!(
                "sockcheck: {address} is {}{}\n",
                quick.verdict.as_str(),
                if quick.verdict == Verdict::Foreign && hopeless {
                    "; waiting will not help (--allow-foreign waits anyway)".to_string()
                } else if hopeless {
                    "; waiting will not help".to_string()
                } else {
                    format!(" after waiting {}", show_duration(timeout))
                }
            ));
            return Ok(ExitStatus::NotFree);
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

fn single(ctx: &Context, view: &KernelView, address: IpAddr) -> Report {
    inspect::inspect_view(&ctx.query(vec![address], true), view)
}

#[cfg(test)]
mod snapshots {
    use super::*;
    use crate::report::shapes;

    /// `sockcheck list --ports 9926-9928` on the fixture machine of
    /// [`shapes::machine`], as an ordinary user.
    #[test]
    fn list() {
        let ports = vec![9926, 9927, 9928];
        let query = inspect::Query::new(local_addresses(&shapes::kernel_view()), ports.clone());
        let report = shapes::inspect(&query, &shapes::unprivileged());
        insta::assert_snapshot!(list_text(&report, &ports));
    }
}
