//! Every document sockcheck prints with `--json`: its name (the file
//! `schema/NAME.json`), what it is, its schema version (the value of its
//! `schema` field, from here only), and its form for people.

use schemars::JsonSchema;
use serde::Serialize;

use crate::gate::acquire::{Acquired, NotAcquired};
use crate::gate::forensic::{self, Forensic};
use crate::gate::ledger::{Leases, Released};
use crate::gate::ports::{PortsAcquired, PortsReleased};
use crate::gate::reap::ReapReport;
use crate::output::Output;
use crate::report::{Report, human};
use crate::watch::{WatchEvent, WatchLine};
use crate::{doctor, report, watch};

/// A document of `--json`.
pub trait Document: Serialize + JsonSchema {
    /// Its name: the title of its schema, `schema/NAME.json`.
    const NAME: &'static str;
    /// Which command prints it, and when.
    const DESCRIPTION: &'static str;
    /// Its `schema` field.
    const SCHEMA: u32;

    /// The same for people (where it goes, stdout or a note on stderr, is
    /// the command's business).
    fn human(&self, output: &Output) -> String;
}

impl Document for Report {
    const NAME: &'static str = "check";
    const DESCRIPTION: &'static str = "`sockcheck --json [check] ADDR...`, `scan --json POOL` and \
         `wait --json ADDR`: the verdict for every address and the evidence for it.";
    const SCHEMA: u32 = report::SCHEMA;

    fn human(&self, output: &Output) -> String {
        let style = human::Style {
            color: output.color,
        };
        human::render(self, style, output.verbose)
    }
}

impl Document for Acquired {
    const NAME: &'static str = "acquire";
    const DESCRIPTION: &'static str =
        "`sockcheck acquire --json POOL` when it leased an address (exit status 0).";
    const SCHEMA: u32 = 1;

    fn human(&self, _: &Output) -> String {
        format!("{}\n", self.address)
    }
}

impl Document for NotAcquired<'_> {
    const NAME: &'static str = "acquire-refusal";
    const DESCRIPTION: &'static str = "`sockcheck acquire --json POOL` (and `run --json`) when no \
         address could be leased (exit status 1): why each address of the pool was passed over.";
    const SCHEMA: u32 = 1;

    fn human(&self, _: &Output) -> String {
        self.render()
    }
}

impl Document for PortsAcquired {
    const NAME: &'static str = "acquire-port";
    const DESCRIPTION: &'static str = "`sockcheck acquire-port --json [RANGE]`: the ports leased \
         (exit status 0), or null and why each port of the range was passed over (exit status 1).";
    const SCHEMA: u32 = 1;

    fn human(&self, _: &Output) -> String {
        self.render()
    }
}

impl Document for ReapReport {
    const NAME: &'static str = "reap";
    const DESCRIPTION: &'static str = "`sockcheck reap --json ADDR`: what was done to each \
         holder, and the verdict before and after.";
    const SCHEMA: u32 = 1;

    fn human(&self, _: &Output) -> String {
        crate::gate::reap::render(self)
    }
}

impl Document for Released {
    const NAME: &'static str = "release";
    const DESCRIPTION: &'static str = "`sockcheck release --json ADDR`.";
    const SCHEMA: u32 = 1;

    fn human(&self, _: &Output) -> String {
        self.render()
    }
}

impl Document for PortsReleased {
    const NAME: &'static str = "release-port";
    const DESCRIPTION: &'static str =
        "`sockcheck release-port --json PORT...`: whether each port's lease ended.";
    const SCHEMA: u32 = 1;

    fn human(&self, _: &Output) -> String {
        self.render()
    }
}

impl Document for Leases<'_> {
    const NAME: &'static str = "leases";
    const DESCRIPTION: &'static str =
        "`sockcheck leases --json [POOL]`: the leases and the quarantined addresses.";
    const SCHEMA: u32 = 1;

    fn human(&self, _: &Output) -> String {
        self.render()
    }
}

impl Document for Forensic {
    const NAME: &'static str = "run-report";
    const DESCRIPTION: &'static str = "The forensic report `sockcheck run --report FILE.json` \
         writes when its command left something holding the address.";
    const SCHEMA: u32 = forensic::SCHEMA;

    fn human(&self, _: &Output) -> String {
        forensic::markdown(self)
    }
}

impl Document for WatchLine<'_> {
    const NAME: &'static str = "watch-event";
    const DESCRIPTION: &'static str = "One line of `sockcheck watch --json`: a TCP socket \
         entering or leaving LISTEN, or events lost because the kernel's ring buffer was full.";
    const SCHEMA: u32 = watch::SCHEMA;

    /// The event's fields on one line (`watch` itself prints its own lines
    /// as events arrive, with the local time).
    fn human(&self, _: &Output) -> String {
        let (kind, t) = match &self.event {
            WatchEvent::Listen(t) => ("LISTEN", t),
            WatchEvent::Close(t) => ("CLOSE", t),
            WatchEvent::Lost(lost) => {
                return format!("lost {} events ({} in all)\n", lost.count, lost.total);
            }
        };
        format!(
            "{}  {kind:<6}  {}  pid {}  tid {}  comm {}  inode {}  reuseport {}\n",
            t.time,
            t.local,
            t.pid,
            t.tid,
            t.comm.escaped(),
            t.inode,
            if t.reuseport { "yes" } else { "no" }
        )
    }
}

impl Document for doctor::Doctor {
    const NAME: &'static str = "doctor";
    const DESCRIPTION: &'static str =
        "`sockcheck doctor --json`: what this user, on this kernel, lets sockcheck see.";
    const SCHEMA: u32 = doctor::SCHEMA;

    fn human(&self, _: &Output) -> String {
        doctor::render(self)
    }
}
