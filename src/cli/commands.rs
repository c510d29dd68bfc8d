//! Each command's `run`: its own arguments, and the context
//! ([`Settings::context`] or [`Settings::lease_context`]) built once from
//! the options it uses.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::args::{
    AcquireArgs, AcquirePortArgs, CheckArgs, Command, LeasesArgs, ListArgs, ReapArgs, ReleaseArgs,
    ReleasePortArgs, RunArgs, ScanArgs, WaitArgs, WatchArgs,
};
use super::generate;
use super::options::Settings;
use crate::context::{Context, LeaseContext};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::gate::{self, RunOptions};
use crate::input;
use crate::inspect;
use crate::output::emit;

/// Runs `command` (`check` when none was named) with the settings resolved
/// for it.
pub(super) fn dispatch(command: Command, settings: &Settings) -> Result<ExitStatus, Error> {
    match command {
        Command::Check(args) => args.run(&settings.context()?),
        Command::Scan(args) => args.run(&settings.context()?),
        Command::List(args) => args.run(&settings.context()?),
        Command::Reap(args) => args.run(&settings.context()?),
        Command::Wait(args) => args.run(&settings.context()?),
        Command::Acquire(args) => args.run(&settings.lease_context()?),
        Command::AcquirePort(args) => args.run(&settings.lease_context()?),
        Command::ReleasePort(args) => args.run(&settings.lease_context()?),
        Command::Release(args) => args.run(&settings.lease_context()?),
        Command::Leases(args) => args.run(&settings.lease_context()?),
        Command::Run(args) => args.run(&settings.lease_context()?),
        Command::Watch(args) => args.run(&settings.context()?),
        Command::Doctor => crate::doctor::doctor(settings.output()),
        Command::Completions(args) => generate::completions(args.shell),
        Command::Man => generate::man(),
        Command::LeaseAgent(args) => crate::lease::agent::serve(&args.dir),
    }
}

impl CheckArgs {
    fn run(self, ctx: &Context) -> Result<ExitStatus, Error> {
        if self.addresses.is_empty() {
            return Err(Error::Usage(
                "no address given (usage: sockcheck [OPTIONS] ADDRESS...; 'sockcheck list' \
                 shows every address with a socket on the ports)"
                    .into(),
            ));
        }
        let query = ctx.query(input::unique(self.addresses), true);
        let report = ctx.in_netns(|| inspect::inspect(&query))?;
        emit(&report, ctx.output)?;
        Ok(if report.all_free() {
            ExitStatus::Free
        } else {
            ExitStatus::NotFree
        })
    }
}

impl ScanArgs {
    fn run(self, ctx: &Context) -> Result<ExitStatus, Error> {
        let pool = input::resolve_pool(self.pool.pool)?;
        ctx.in_netns(|| gate::scan(ctx, pool))
    }
}

impl ListArgs {
    fn run(self, ctx: &Context) -> Result<ExitStatus, Error> {
        ctx.in_netns(|| gate::list(ctx))
    }
}

impl ReapArgs {
    fn run(self, ctx: &Context) -> Result<ExitStatus, Error> {
        ctx.in_netns(|| gate::reap_address(ctx, self.address, self.grace, self.dry_run))
    }
}

impl WaitArgs {
    fn run(self, ctx: &Context) -> Result<ExitStatus, Error> {
        ctx.in_netns(|| gate::wait(ctx, self.address, self.timeout, self.allow_foreign))
    }
}

impl AcquireArgs {
    fn run(self, ctx: &LeaseContext) -> Result<ExitStatus, Error> {
        let pool = input::resolve_pool(self.pool.pool)?;
        ctx.in_netns(|| gate::acquire(ctx, &pool, self.owner, self.wait, self.allow_foreign))
    }
}

impl AcquirePortArgs {
    fn run(self, ctx: &LeaseContext) -> Result<ExitStatus, Error> {
        ctx.in_netns(|| {
            let range = self.range.map_or_else(gate::ports::default_range, |r| r.0);
            let request = gate::ports::PortRequest {
                range,
                host: self.host,
                count: self.count.into(),
                owner: self.owner,
                wait: self.wait,
            };
            gate::ports::acquire_port(ctx, &request)
        })
    }
}

impl ReleasePortArgs {
    fn run(self, ctx: &LeaseContext) -> Result<ExitStatus, Error> {
        let mut seen = BTreeSet::new();
        let ports: Vec<u16> = self.ports.into_iter().filter(|p| seen.insert(*p)).collect();
        ctx.in_netns(|| gate::ports::release_port(ctx, &ports))
    }
}

impl ReleaseArgs {
    fn run(self, ctx: &LeaseContext) -> Result<ExitStatus, Error> {
        ctx.in_netns(|| gate::release(ctx, self.address))
    }
}

impl LeasesArgs {
    fn run(self, ctx: &LeaseContext) -> Result<ExitStatus, Error> {
        let pool: Option<Vec<IpAddr>> = self.pool.map(|p| p.0);
        ctx.in_netns(|| gate::leases(ctx, pool))
    }
}

impl RunArgs {
    /// Under `--netns`, the signals `run` forwards are blocked before the
    /// namespace's thread exists (see [`gate::child::block_forwarded`]).
    fn run(self, ctx: &LeaseContext) -> Result<ExitStatus, Error> {
        if !self.stray.is_empty() || self.command.is_empty() {
            return Err(Error::Usage(
                "run: the command must follow '--' (sockcheck run POOL -- CMD [ARGS...])".into(),
            ));
        }
        let pool = input::resolve_pool(self.pool.pool)?;
        let options = RunOptions {
            linger: self.linger,
            report: self.report,
            reap: self.reap,
            grace: self.grace,
            wait: self.wait,
            lease_ports: self.lease_ports.into(),
            command: self.command,
        };
        if ctx.netns().is_some() {
            gate::child::block_forwarded();
        }
        ctx.in_netns(|| gate::run(ctx, &pool, &options))
    }
}

impl WatchArgs {
    /// Which namespaces: `--all-netns`, the one `--netns` names (opened
    /// with the context, so a bad one is a usage error before anything
    /// loads), or sockcheck's own. Watching needs no `setns`: the
    /// tracepoint sees every namespace and each event names its socket's.
    fn run(self, ctx: &Context) -> Result<ExitStatus, Error> {
        use crate::watch::NetnsFilter;
        let netns = match (self.all_netns, ctx.netns()) {
            // `--netns` given before the command escapes clap's conflict.
            (true, Some(_)) => {
                return Err(Error::Usage(
                    "the argument '--netns <NAME|PATH|pid:PID>' cannot be used with '--all-netns'"
                        .into(),
                ));
            }
            (true, None) => NetnsFilter::All,
            (false, Some(info)) => NetnsFilter::Only(info.clone()),
            (false, None) => NetnsFilter::own(),
        };
        crate::watch::watch(&crate::watch::WatchOptions {
            ports: ctx.ports.clone(),
            addresses: input::unique(self.addresses),
            output: ctx.output,
            count: self.count,
            timeout: self.timeout,
            netns,
            ring_size: self.ring_size,
        })
    }
}
