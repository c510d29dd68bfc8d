// The package's TypeScript declarations (lib/sockcheck.d.cts) against the
// JSON Schemas of the binary's documents (schema/*.json at the repo root,
// which the Rust types give): for every declared type that mirrors a
// document, the field names, which fields are optional, which may be null,
// and the values of every string enum. The declarations also describe the
// JS fallback's documents, which differ in a few places; each difference
// is listed in ALLOWED with the reason, and a listed difference that no
// longer exists fails too, so the list stays true.
//
// Needs the TypeScript compiler (npm/node_modules, from `npm ci` in npm/);
// without it the test is skipped, or fails under SOCKCHECK_TEST_STRICT=1.
// Run: node --test npm/sockcheck/tests/ (nothing is inspected or leased).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import helpers from './helpers.cjs';

const require = createRequire(import.meta.url);
// The copy under test (installed, in npm/ci.sh).
const DECLARATIONS = path.join(path.dirname(require.resolve('sockcheck')), 'sockcheck.d.cts');
const SCHEMAS = path.join(helpers.REPO, 'schema');

/** Declared type (interface or alias) → the schema file and `$defs` entry (null: the root) it mirrors. */
const MIRRORS = {
  CheckReport: ['check', null],
  AddressReport: ['check', 'AddressReport'],
  PortReport: ['check', 'PortReport'],
  Canary: ['check', 'Canary'],
  OtherSockets: ['check', 'OtherSockets'],
  OtherSocket: ['check', 'OtherSocket'],
  Listener: ['check', 'ListenerReport'],
  Owner: ['check', 'Owner'],
  Reason: ['check', 'Reason'],
  ReuseportEvidence: ['check', 'Reuseport'],
  SourceStatus: ['check', 'SourceStatus'],
  Verdict: ['check', 'Verdict'],
  TcpState: ['check', 'TcpState'],
  Errno: ['check', 'Errno'],
  ProcessState: ['check', 'ProcessState'],
  SkippedAddress: ['acquire-refusal', 'Skipped'],
  SkipReason: ['acquire-refusal', 'SkipReason'],
  SkippedPort: ['acquire-port', 'SkippedPort'],
  LeaseOwner: ['acquire', 'LeaseOwner'],
};

/**
 * Where the declarations differ from the binary's documents, and why.
 * `TYPE.FIELD extra`: a field only the package has; `optional`: optional
 * though the binary always writes it; `nullable`: null allowed though the
 * binary never writes null; `values`: enum values only the fallback gives.
 */
const ALLOWED = {
  'CheckReport.source extra': 'the package adds which backend answered',
  'CheckReport.free extra': 'the package adds whether every address is free',
  'CheckReport.sockcheck nullable': 'the fallback has no sockcheck version',
  'PortReport.connect extra': "the fallback's connect probe",
  'PortReport.other_sockets optional': 'the fallback cannot list sockets',
  'LeaseOwner.alive optional': 'the fallback does not say',
};

function loadTypeScript() {
  try {
    return createRequire(path.join(helpers.REPO, 'npm', 'package.json'))('typescript');
  } catch (e) {
    return null;
  }
}

/** Every interface, class and type alias of the declaration file, by name. */
function declarations(ts) {
  const text = fs.readFileSync(DECLARATIONS, 'utf8');
  const file = ts.createSourceFile(DECLARATIONS, text, ts.ScriptTarget.Latest, true);
  const byName = new Map();
  for (const s of file.statements) {
    if (ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s)) byName.set(s.name.text, s);
  }
  return byName;
}

const schemaFiles = new Map();
function schemaFile(name) {
  if (!schemaFiles.has(name)) {
    schemaFiles.set(name, JSON.parse(fs.readFileSync(path.join(SCHEMAS, `${name}.json`), 'utf8')));
  }
  return schemaFiles.get(name);
}

/** A schema with its `$ref` followed (within its file). */
function deref(file, schema) {
  while (schema && schema.$ref) {
    schema = file.$defs[schema.$ref.replace('#/$defs/', '')];
  }
  return schema;
}

/** The members of a schema union (anyOf/oneOf), or the schema itself. */
function alternatives(file, schema) {
  const s = deref(file, schema);
  const list = s.anyOf || s.oneOf;
  return list ? list.flatMap((m) => alternatives(file, m)) : [s];
}

/** The string values a schema allows, whether it allows null, and whether other strings (a pattern, any string) fit. */
function schemaValues(file, schema) {
  const out = { values: new Set(), nullable: false, pattern: false, enum: false, other: false };
  for (const alt of alternatives(file, schema)) {
    const types = [].concat(alt.type ?? []);
    if (types.includes('null')) out.nullable = true;
    if (alt.enum) {
      out.enum = true;
      for (const v of alt.enum) if (v === null) out.nullable = true; else out.values.add(v);
    } else if (typeof alt.const === 'string') {
      out.enum = true;
      out.values.add(alt.const);
    } else if (alt.pattern) {
      out.pattern = true;
    } else if (types.some((t) => t !== 'null')) {
      out.other = true;
    }
  }
  return out;
}

/** What a declared type allows: string literals, null, a template literal, open (`string & {}`) or any string. */
function declaredValues(ts, decls, node, out = { values: new Set(), nullable: false, template: false, open: false, string: false, refs: [] }) {
  if (ts.isUnionTypeNode(node)) {
    for (const t of node.types) declaredValues(ts, decls, t, out);
  } else if (ts.isParenthesizedTypeNode(node)) {
    declaredValues(ts, decls, node.type, out);
  } else if (ts.isLiteralTypeNode(node)) {
    if (node.literal.kind === ts.SyntaxKind.NullKeyword) out.nullable = true;
    else if (ts.isStringLiteral(node.literal)) out.values.add(node.literal.text);
  } else if (ts.isTemplateLiteralTypeNode(node)) {
    out.template = true;
  } else if (ts.isIntersectionTypeNode(node)) {
    out.open = true; // `string & {}`: any string, with the literals suggested
  } else if (node.kind === ts.SyntaxKind.StringKeyword) {
    out.string = true;
  } else if (ts.isTypeReferenceNode(node)) {
    const target = decls.get(node.typeName.getText());
    if (target && ts.isTypeAliasDeclaration(target)) declaredValues(ts, decls, target.type, out);
    else out.refs.push(node);
  } else {
    out.refs.push(node);
  }
  return out;
}

/** The members of an interface or type literal, by name: [optional, type node]. */
function members(ts, node) {
  const out = new Map();
  for (const m of node.members) {
    if (ts.isPropertySignature(m)) out.set(m.name.getText().replace(/^'|'$/g, ''), [Boolean(m.questionToken), m.type]);
  }
  return out;
}

/** Compares one declared type with one schema; pushes differences as `TYPE.FIELD kind: detail`. */
function compare(ts, decls, name, node, file, schema, found, seen) {
  const key = `${name}@${JSON.stringify(schema)}`;
  if (seen.has(key)) return;
  seen.add(key);
  const s = deref(file, schema);
  const objectNode = ts.isInterfaceDeclaration(node) || ts.isTypeLiteralNode(node) ? node : null;
  if (objectNode && s.properties) {
    const declared = members(ts, objectNode);
    const required = new Set(s.required ?? []);
    for (const [field, sub] of Object.entries(s.properties)) {
      const d = declared.get(field);
      if (!d) {
        found.add(`${name}.${field} missing: the binary writes it`);
        continue;
      }
      const [optional, type] = d;
      if (optional && required.has(field)) found.add(`${name}.${field} optional: the binary always writes it`);
      if (!optional && !required.has(field)) found.add(`${name}.${field} required: the binary may leave it out`);
      compareField(ts, decls, `${name}.${field}`, type, file, sub, found, seen, required.has(field));
    }
    for (const field of declared.keys()) {
      if (!(field in s.properties)) found.add(`${name}.${field} extra: not in schema`);
    }
  } else if (ts.isTypeAliasDeclaration(node)) {
    compareField(ts, decls, name, node.type, file, schema, found, seen);
  }
}

/** Compares a field's declared type with its schema: null, enum values, and nested objects and arrays. */
function compareField(ts, decls, where, type, file, schema, found, seen, required = true) {
  const s = deref(file, schema);
  const want = schemaValues(file, s);
  const got = declaredValues(ts, decls, type);
  if (got.nullable && !want.nullable) found.add(`${where} nullable: the binary never writes null`);
  // (An optional field's schema allows null, but the binary leaves the
  // field out instead.)
  if (required && want.nullable && !got.nullable && !got.refs.some((r) => r.kind === ts.SyntaxKind.UnknownKeyword)) {
    found.add(`${where} not nullable: the binary may write null`);
  }
  if (want.enum) {
    const missing = [...want.values].filter((v) => !got.values.has(v));
    const extra = [...got.values].filter((v) => !want.values.has(v));
    if (got.string || (missing.length && !got.values.size)) {
      found.add(`${where} string: the schema has an enum (${[...want.values].join(', ')})`);
    } else if (missing.length) {
      found.add(`${where} values: missing ${missing.join(', ')}`);
    }
    if (extra.length && !want.other) found.add(`${where} values: ${extra.join(', ')} not in the schema`);
    if (want.pattern && !got.template && !got.open) found.add(`${where} values: no template for the schema's pattern`);
  }
  // Nested: an object (inline, or an interface) or an array of them.
  for (const ref of got.refs) {
    let node = ref;
    let sub = s;
    if (ts.isArrayTypeNode(node) || (ts.isTypeReferenceNode(node) && node.typeName.getText() === 'Array')) {
      node = ts.isArrayTypeNode(node) ? node.elementType : node.typeArguments?.[0];
      const items = alternatives(file, s).find((a) => a.items);
      if (!node || !items) continue;
      sub = items.items;
      compareField(ts, decls, `${where}[]`, node, file, sub, found, seen);
      continue;
    }
    const objectSchema = alternatives(file, s).find((a) => a.properties);
    if (!objectSchema) continue;
    if (ts.isTypeLiteralNode(node)) {
      compare(ts, decls, where, node, file, objectSchema, found, seen);
    } else if (ts.isTypeReferenceNode(node)) {
      const target = decls.get(node.typeName.getText());
      // A named type is checked under its own name (see MIRRORS).
      if (target && !MIRRORS[node.typeName.getText()]) compare(ts, decls, where, target, file, objectSchema, found, seen);
    }
  }
}

const ts = loadTypeScript();
const skip = ts ? false : 'the TypeScript compiler is not installed (run npm ci in npm/)';
if (skip && process.env.SOCKCHECK_TEST_STRICT === '1') throw new Error(`types-schema: ${skip}`);

test('the declarations mirror the JSON Schemas, but for the listed differences', { skip }, () => {
  const decls = declarations(ts);
  const found = new Set();
  const seen = new Set();
  for (const [name, [fileName, def]] of Object.entries(MIRRORS)) {
    const node = decls.get(name);
    assert.ok(node, `sockcheck.d.cts declares no ${name}`);
    const file = schemaFile(fileName);
    const schema = def === null ? file : file.$defs?.[def];
    assert.ok(schema, `schema/${fileName}.json has no ${def}`);
    compare(ts, decls, name, node, file, schema, found, seen);
  }
  const key = (f) => f.replace(/:.*/, '');
  const unexplained = [...found].filter((f) => !(key(f) in ALLOWED));
  const stale = Object.keys(ALLOWED).filter((k) => ![...found].some((f) => key(f) === k));
  assert.deepEqual(unexplained, [], `sockcheck.d.cts differs from schema/: ${unexplained.join('; ')}`);
  assert.deepEqual(stale, [], `listed in ALLOWED but no longer different: ${stale.join('; ')}`);
});
