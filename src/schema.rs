//! JSON Schemas (draft 2020-12) of every document `--json` prints, made
//! from the very types that are serialized, so they cannot drift apart.
//!
//! They are committed under `schema/` in the repository; `tests/it/schema.rs`
//! fails when these and the committed files differ, and
//! `SOCKCHECK_BLESS=1 cargo test --release --test it schema::` rewrites the files.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

use crate::document::Document;
use crate::{doctor, gate, report, watch};

/// Every document, as `(name, schema)`: the schema of `schema/NAME.json`.
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        entry::<report::Report>(),
        entry::<gate::acquire::Acquired>(),
        entry::<gate::acquire::NotAcquired>(),
        entry::<gate::ports::PortsAcquired>(),
        entry::<gate::reap::ReapReport>(),
        entry::<gate::ledger::Released>(),
        entry::<gate::ports::PortsReleased>(),
        entry::<gate::ledger::Leases>(),
        entry::<gate::forensic::Forensic>(),
        entry::<watch::WatchLine>(),
        entry::<doctor::Doctor>(),
    ]
}

/// A document's name and schema, from its [`Document`] impl.
fn entry<T: Document>() -> (&'static str, Value) {
    (T::NAME, document::<T>(T::NAME, T::DESCRIPTION, T::SCHEMA))
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
