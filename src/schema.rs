//! JSON Schemas (draft 2020-12) of every document `--json` prints, made
//! from the very types that are serialized, so they cannot drift apart.
//!
//! They are committed under `schema/` in the repository; `tests/it/schema.rs`
//! fails when these and the committed files differ, and
//! `SOCKCHECK_BLESS=1 cargo test --release --test it schema::` rewrites the files.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

use crate::{doctor, gate, report, watch};

/// Makes a document's schema from its name, description and version.
type Maker = fn(&str, &str, u32) -> Value;

/// Every document: its name (the file `schema/NAME.json`), what prints it,
/// its `schema` number, and the type that is serialized.
const DOCUMENTS: [(&str, &str, u32, Maker); 10] = [
    (
        "check",
        "`sockcheck --json [check] ADDR...`, `scan --json POOL` and `wait --json ADDR`: \
         the verdict for every address and the evidence for it.",
        report::SCHEMA,
        document::<report::Report>,
    ),
    (
        "acquire",
        "`sockcheck acquire --json POOL` when it leased an address (exit status 0).",
        1,
        document::<gate::acquire::Acquired>,
    ),
    (
        "acquire-refusal",
        "`sockcheck acquire --json POOL` (and `run --json`) when no address could be \
         leased (exit status 1): why each address of the pool was passed over.",
        1,
        document::<gate::acquire::NotAcquired>,
    ),
    (
        "acquire-port",
        "`sockcheck acquire-port --json [RANGE]`: the ports leased (exit status 0), or \
         null and why each port of the range was passed over (exit status 1).",
        1,
        document::<gate::ports::PortsAcquired>,
    ),
    (
        "reap",
        "`sockcheck reap --json ADDR`: what was done to each holder, and the verdict \
         before and after.",
        1,
        document::<gate::reap::ReapReport>,
    ),
    (
        "release",
        "`sockcheck release --json ADDR`.",
        1,
        document::<gate::ledger::Released>,
    ),
    (
        "leases",
        "`sockcheck leases --json [POOL]`: the leases and the quarantined addresses.",
        1,
        document::<gate::ledger::Leases>,
    ),
    (
        "run-report",
        "The forensic report `sockcheck run --report FILE.json` writes when its command \
         left something holding the address.",
        gate::forensic::SCHEMA,
        document::<gate::forensic::Forensic>,
    ),
    (
        "watch-event",
        "One line of `sockcheck watch --json`: a TCP socket entering or leaving LISTEN, \
         or events lost because the kernel's ring buffer was full.",
        watch::SCHEMA,
        document::<watch::WatchLine>,
    ),
    (
        "doctor",
        "`sockcheck doctor --json`: what this user, on this kernel, lets sockcheck see.",
        doctor::SCHEMA,
        document::<doctor::Doctor>,
    ),
];

/// Every document, as `(name, schema)`: the schema of `schema/NAME.json`.
pub fn schemas() -> Vec<(&'static str, Value)> {
    DOCUMENTS
        .iter()
        .map(|&(name, description, version, make)| (name, make(name, description, version)))
        .collect()
}

/// The schema of `T` as it is serialized (fields skipped when empty are
/// optional, every other field required), titled `name`, with the
/// document's `schema` number as a constant.
fn document<T: JsonSchema>(name: &str, description: &str, version: u32) -> Value {
    let schema: Schema = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut value = schema.to_value();
    let object = value.as_object_mut().expect("a root schema is an object");
    object.insert("title".into(), Value::from(name));
    object.insert("description".into(), Value::from(description));
    let version_field = object
        .get_mut("properties")
        .and_then(|p| p.get_mut("schema"))
        .and_then(Value::as_object_mut)
        .expect("every document has a `schema` field");
    version_field.insert("const".into(), Value::from(version));
    value
}
