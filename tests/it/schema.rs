//! The JSON Schemas under `schema/` are the ones the Rust types give
//! (`sockcheck::schema::schemas`), and real documents fit them.
//! `SOCKCHECK_BLESS=1 cargo test --release --test it schema::` rewrites the
//! files from the types. Addresses 127.89.0.0/24 and ports 45650-45659
//! belong to this file.

use crate::support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{Holder, TempDir, sockcheck};

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

/// A schema as committed: pretty JSON and a final newline.
fn rendered(schema: &Value) -> String {
    serde_json::to_string_pretty(schema).unwrap() + "\n"
}

/// Whether to write the schemas rather than compare them.
fn blessing() -> bool {
    std::env::var_os("SOCKCHECK_BLESS").is_some_and(|v| !v.is_empty())
}

/// The committed schema of the document `name` (the one the types give
/// when blessing: the files may be being written).
fn committed(name: &str) -> Value {
    if blessing() {
        return sockcheck::schema::schemas()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no schema {name}"))
            .1;
    }
    let path = schema_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn committed_schemas_are_the_types() {
    let dir = schema_dir();
    let schemas = sockcheck::schema::schemas();
    if blessing() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, schema) in &schemas {
            std::fs::write(dir.join(format!("{name}.json")), rendered(schema)).unwrap();
        }
    }
    let mut stale = Vec::new();
    for (name, schema) in &schemas {
        let path = dir.join(format!("{name}.json"));
        if std::fs::read_to_string(&path).ok().as_deref() != Some(&rendered(schema)) {
            stale.push(format!("schema/{name}.json"));
        }
    }
    // A file no type gives any more (a document renamed or dropped).
    let names: Vec<String> = schemas.iter().map(|(n, _)| format!("{n}.json")).collect();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !names.contains(&file) {
            stale.push(format!("schema/{file} (no document has this name)"));
        }
    }
    assert!(
        stale.is_empty(),
        "the committed JSON Schemas differ from the Rust types: {}\n\
         if the change to the JSON is meant, regenerate them with \
         `SOCKCHECK_BLESS=1 cargo test --release --test it schema::` and commit them",
        stale.join(", ")
    );
}

fn every_schema_names_its_version_and_requires_it() {
    for (name, schema) in sockcheck::schema::schemas() {
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        assert_eq!(schema["title"], name);
        assert_eq!(schema["properties"]["schema"]["const"], 1, "{name}");
        let required = schema["required"].as_array().unwrap();
        assert!(required.contains(&Value::from("schema")), "{name}");
    }
}

/// A `check` document with listeners, owners and other sockets in it fits
/// `schema/check.json`: every key is a property of its schema, every
/// required one is there, and every value has its type.
fn a_check_document_fits_its_schema() {
    let _group = Holder::start("group", "127.89.0.2", 45650, &["2"]);
    let _client = Holder::start("client", "127.89.0.2", 45651, &[]);
    let run = sockcheck(&[
        "--json",
        "check",
        "127.89.0.2",
        "127.89.0.3",
        "--ports",
        "45650,45651",
    ]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let document = run.json();
    let schema = committed("check");
    // The cheap part first, named plainly when it fails.
    let properties = schema["properties"].as_object().unwrap();
    for key in document.as_object().unwrap().keys() {
        assert!(
            properties.contains_key(key),
            "`{key}` is not in schema/check.json"
        );
    }
    assert_eq!(document["schema"], schema["properties"]["schema"]["const"]);
    // The document really has the parts worth checking.
    let ports = &document["addresses"][0]["ports"];
    assert!(
        ports[0]["listeners"][0]["owners"][0]["pid"].is_u64(),
        "{document}"
    );
    assert!(
        ports[1]["other_sockets"]["total"].as_u64() > Some(0),
        "{document}"
    );
    assert_fits(&document, &schema);
}

/// `acquire`, its refusal, `leases` and `release`, on a state directory of
/// their own, each fit their schema.
fn gate_documents_fit_their_schemas() {
    let state = TempDir::new("schema");
    let me = std::process::id().to_string();
    let gate = |args: &[&str]| {
        // release has no use for --ports (and refuses it).
        let mut all = vec!["--state-dir", state.path(), "--json"];
        if args[0] != "release" {
            all.extend(["--ports", "45652"]);
        }
        all.extend_from_slice(args);
        sockcheck(&all)
    };
    let acquired = gate(&["acquire", "127.89.0.10", "--owner", &me]);
    assert_eq!(acquired.status, 0, "{}", acquired.stderr);
    assert_fits(&acquired.json(), &committed("acquire"));

    let refused = gate(&["acquire", "127.89.0.10", "--owner", &me]);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    let refusal = refused.json();
    assert_eq!(refusal["skipped"][0]["reason"], "leased", "{refusal}");
    assert_fits(&refusal, &committed("acquire-refusal"));

    let leases = gate(&["leases", "127.89.0.10"]);
    assert_eq!(leases.status, 0, "{}", leases.stderr);
    let leases = leases.json();
    assert_eq!(leases["leases"][0]["address"], "127.89.0.10", "{leases}");
    assert_fits(&leases, &committed("leases"));

    for status in [0, 1] {
        let released = gate(&["release", "127.89.0.10"]);
        assert_eq!(released.status, status, "{}", released.stderr);
        assert_fits(&released.json(), &committed("release"));
    }
}

/// `watch --json` lines of every kind fit `schema/watch-event.json`: a
/// listen and a close, and a `lost` line (made by 300 listen/close cycles
/// while the watch is stopped, with a one-page ring buffer).
fn watch_lines_of_every_kind_fit_their_schema() {
    if !support::require_bpf("watch --json") {
        return;
    }
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.to_string();
    let mut watch = support::command()
        .args(["watch", "--json", "--timeout", "2s", "--ring-size", &page])
        .args(["--ports", "45653", "127.89.0.20"])
        .env_remove("SOCKCHECK_PORTS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(watch.stderr.take().unwrap());
    let mut attached = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut attached).unwrap();
    assert!(attached.contains("watching"), "{attached}");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(watch.id() as i32, libc::SIGSTOP) };
    support::sockets::listen_close("127.89.0.20:45653".parse().unwrap(), 300);
    unsafe { libc::kill(watch.id() as i32, libc::SIGCONT) };
    let output = watch.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "it lost events");
    let schema = committed("watch-event");
    let mut kinds = std::collections::BTreeSet::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let document: Value = serde_json::from_str(line).unwrap();
        kinds.insert(document["event"].as_str().unwrap().to_owned());
        assert_fits(&document, &schema);
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["close", "listen", "lost"]
    );
    // The flattened fields are still checked: an unknown key, or a kind
    // with another kind's fields, does not fit.
    for wrong in [
        r#"{"schema":1,"event":"lost","count":1,"total":1,"bogus":2}"#,
        r#"{"schema":1,"event":"listen","count":1,"total":1}"#,
        r#"{"schema":1,"event":"gone","count":1,"total":1}"#,
    ] {
        let mut errors = Vec::new();
        fits(
            &serde_json::from_str(wrong).unwrap(),
            &schema,
            &schema,
            "$",
            &mut errors,
            true,
        );
        assert!(!errors.is_empty(), "{wrong} fits");
    }
}

fn a_doctor_document_fits_its_schema() {
    let run = sockcheck(&["doctor", "--json"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_fits(&run.json(), &committed("doctor"));
}

/// Fails the test, naming every place where `document` does not fit
/// `schema`.
fn assert_fits(document: &Value, schema: &Value) {
    let mut errors = Vec::new();
    fits(document, schema, schema, "$", &mut errors, true);
    assert!(
        errors.is_empty(),
        "the document does not fit schema `{}`:\n  {}\n{document:#}",
        schema["title"],
        errors.join("\n  ")
    );
}

/// A small check of `value` against `schema`: the keywords schemars emits
/// for these types (`$ref` into `$defs`, `anyOf`/`oneOf`/`allOf`, `type`,
/// `const`, `enum`, `minimum`, `properties`, `required`,
/// `additionalProperties`, `items`). An object key that no `properties`
/// names is an error unless `additionalProperties` allows it, so a field
/// the types emit but the schema misses is caught. The `properties` that
/// count are those of the schema and of its `$ref`, `allOf` and matching
/// `anyOf`/`oneOf` branches (a flattened enum spreads an object's fields
/// over them): `strict` is false inside such a branch, where the keys are
/// checked by the schema that holds it. Formats are not checked.
fn fits(
    value: &Value,
    schema: &Value,
    root: &Value,
    at: &str,
    errors: &mut Vec<String>,
    strict: bool,
) {
    let Some(rules) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            errors.push(format!("{at}: nothing is allowed here"));
        }
        return;
    };
    if let Some(reference) = rules.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .unwrap_or_else(|| panic!("{at}: unresolved $ref {reference}"));
        fits(value, target, root, at, errors, false);
    }
    for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        if let Some(branches) = rules.get(keyword).and_then(Value::as_array) {
            let matching = branches
                .iter()
                .filter(|branch| {
                    let mut inner = Vec::new();
                    fits(value, branch, root, at, &mut inner, false);
                    inner.is_empty()
                })
                .count();
            if matching == 0 || (exactly_one && matching > 1) {
                errors.push(format!(
                    "{at}: {matching} of the {keyword} branches match {value}"
                ));
            }
        }
    }
    if let Some(all) = rules.get("allOf").and_then(Value::as_array) {
        for branch in all {
            fits(value, branch, root, at, errors, false);
        }
    }
    if let Some(types) = rules.get("type") {
        let types: Vec<&str> = match types {
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        if !types.iter().any(|t| has_type(value, t)) {
            errors.push(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(constant) = rules.get("const")
        && constant != value
    {
        errors.push(format!("{at}: {value} is not {constant}"));
    }
    if let Some(allowed) = rules.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(minimum), Some(number)) =
        (rules.get("minimum").and_then(Value::as_f64), value.as_f64())
        && number < minimum
    {
        errors.push(format!("{at}: {value} is below {minimum}"));
    }
    if let Some(object) = value.as_object() {
        let properties = rules.get("properties").and_then(Value::as_object);
        let additional = rules.get("additionalProperties");
        let mut known = Vec::new();
        let describes_objects = strict && named_keys(value, schema, root, &mut known);
        for (key, item) in object {
            let here = format!("{at}.{key}");
            match (properties.and_then(|p| p.get(key)), additional) {
                (Some(property), _) => fits(item, property, root, &here, errors, true),
                (None, Some(extra)) => fits(item, extra, root, &here, errors, true),
                (None, None) if describes_objects && !known.contains(key) => {
                    errors.push(format!("{here}: not a property of the schema"))
                }
                (None, None) => {}
            }
        }
        for name in rules
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                errors.push(format!("{at}: `{name}` is required"));
            }
        }
    }
    if let (Some(items), Some(array)) = (rules.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            fits(item, items, root, &format!("{at}[{i}]"), errors, true);
        }
    }
}

/// Adds to `known` the keys the `properties` of `schema` name, and of its
/// `$ref`, `allOf` and `anyOf`/`oneOf` branches that `value` fits; true if
/// any of them describes objects (`properties` or `additionalProperties`).
fn named_keys(value: &Value, schema: &Value, root: &Value, known: &mut Vec<String>) -> bool {
    let Some(rules) = schema.as_object() else {
        return false;
    };
    let mut describes = rules.contains_key("additionalProperties");
    if let Some(properties) = rules.get("properties").and_then(Value::as_object) {
        describes = true;
        known.extend(properties.keys().cloned());
    }
    if let Some(target) = rules
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
    {
        describes |= named_keys(value, target, root, known);
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        for branch in rules
            .get(keyword)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut inner = Vec::new();
            fits(value, branch, root, "", &mut inner, false);
            if keyword == "allOf" || inner.is_empty() {
                describes |= named_keys(value, branch, root, known);
            }
        }
    }
    describes
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other} in a schema"),
    }
}

crate::tests![
    committed_schemas_are_the_types,
    every_schema_names_its_version_and_requires_it,
    a_check_document_fits_its_schema,
    gate_documents_fit_their_schemas,
    watch_lines_of_every_kind_fit_their_schema,
    a_doctor_document_fits_its_schema,
];
