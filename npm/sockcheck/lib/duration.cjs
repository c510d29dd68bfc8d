'use strict';
// The binary's duration grammar (src/input/mod.rs, parse_duration), for the
// durations this package measures itself (waits, timeouts, the fallback):
// a string the binary takes, this takes, with the same value; one it
// refuses, this refuses. tests/data/durations.json (repo root) holds the
// cases both are held to (src/input/mod.rs and tests/durations.test.mjs).
//
// The grammar is jiff's SignedDuration parser (the "friendly" format and
// ISO 8601 time durations), with the binary's own rules around it:
// - surrounding Unicode whitespace is trimmed;
// - a bare number (digits and at most one `.`) is seconds: `30`, `1.5`, `1.`;
// - friendly: `[+-]? UNIT (,? WS* UNIT)* (WS+ ago)?` where UNIT is
//   `DIGITS WS* LABEL` (`1h`, `2 minutes`), or `DIGITS[.,]FRACTION WS* LABEL`
//   (a fraction ends the list), or `H:M:S[.,FRACTION]` alone; units go from
//   hours down to nanoseconds, each at most once; a comma needs a
//   whitespace after it; `ago` negates;
// - ISO 8601: `[+-]? P T (DIGITS([.,]FRACTION)? [HMS])+`, any case, a
//   fraction only on the last unit; no days, weeks, months or years;
// - the result is never negative (zero is fine, `-0s` too) and at most a year.

/** The longest duration the binary takes: a year of 365 days. */
const MAX_NS = 365n * 86400n * 1_000_000_000n;

const NS = {
  hour: 3_600_000_000_000n,
  minute: 60_000_000_000n,
  second: 1_000_000_000n,
  millisecond: 1_000_000n,
  microsecond: 1_000n,
  nanosecond: 1n,
};
/** Units from the biggest down: a unit must come after every bigger one. */
const RANK = { calendar: 6, hour: 5, minute: 4, second: 3, millisecond: 2, microsecond: 1, nanosecond: 0 };

/** jiff's unit labels; years to days parse, then are refused (no fixed length). */
const LABELS = [
  ['calendar', 'years year yrs yr y months month mos mo weeks week wks wk w days day d'],
  ['hour', 'hours hour hrs hr h'],
  ['minute', 'minutes minute mins min m'],
  ['second', 'seconds second secs sec s'],
  ['millisecond', 'milliseconds millisecond millis milli msecs msec ms'],
  ['microsecond', 'microseconds microsecond micros micro usecs usec \u00b5secs \u00b5sec us \u00b5s'],
  ['nanosecond', 'nanoseconds nanosecond nanos nano nsecs nsec ns'],
]
  .flatMap(([unit, labels]) => labels.split(' ').map((label) => [label, unit]))
  .sort((a, b) => b[0].length - a[0].length);

const WS = /^[ \t\n\r\f]*/;
const TRIM = /^\p{White_Space}+|\p{White_Space}+$/gu;

class Refused extends Error {}
const refuse = () => {
  throw new Refused();
};

/** A reader over the text, as jiff reads bytes. */
class Reader {
  constructor(text) {
    this.text = text;
    this.at = 0;
  }

  rest() {
    return this.text.slice(this.at);
  }

  /** An unsigned integer (at most u64), or null when no digit is here. */
  integer() {
    const digits = /^[0-9]*/.exec(this.rest())[0];
    if (!digits) return null;
    // jiff reads at most 21 digits; a 22nd is left for what follows, where
    // no digit fits.
    if (digits.length > 21) refuse();
    const value = BigInt(digits);
    if (value > 18_446_744_073_709_551_615n) refuse();
    this.at += digits.length;
    return value;
  }

  /** `.` or `,` and 1-9 digits, as nanoseconds-per-unit (10^9 = one unit), or null. */
  fraction() {
    const m = /^[.,]([0-9]*)/.exec(this.rest());
    if (!m) return null;
    if (m[1].length === 0 || m[1].length > 9) refuse();
    this.at += m[0].length;
    return BigInt(m[1].padEnd(9, '0'));
  }

  whitespace() {
    const n = WS.exec(this.rest())[0].length;
    this.at += n;
    return n;
  }

  label() {
    const rest = this.rest();
    const found = LABELS.find(([label]) => rest.startsWith(label));
    if (!found) refuse();
    this.at += found[0].length;
    return found[1];
  }
}

/** The units parsed so far, as jiff's DurationUnits keeps them. */
class Units {
  constructor() {
    this.ns = 0n;
    this.min = null;
    this.calendar = false;
  }

  set(unit, value) {
    if (this.min !== null && RANK[this.min] <= RANK[unit]) refuse();
    this.min = unit;
    if (unit === 'calendar') this.calendar = true;
    else this.ns += value * NS[unit];
  }

  /** A fraction of the smallest unit so far: hours down to microseconds. */
  fraction(billionths) {
    if (this.min === 'calendar' || this.min === 'nanosecond') refuse();
    this.ns += (billionths * NS[this.min]) / 1_000_000_000n;
  }

  total() {
    if (this.calendar || this.min === null) refuse();
    return this.ns;
  }
}

/** jiff's friendly format; nanoseconds, signed. */
function friendly(text) {
  const r = new Reader(text);
  const prefix = /^[+-]/.test(text) ? text[r.at++] : null;
  const units = new Units();
  let value = r.integer();
  if (value === null) refuse();
  let afterComma = false;
  for (;;) {
    if (r.rest().startsWith(':')) {
      r.at += 1;
      hms(r, units, value);
      break;
    }
    const fraction = r.fraction();
    r.whitespace();
    units.set(r.label(), value);
    if (r.rest().startsWith(',')) {
      if (!/^,[ \t\n\r\f]/.test(r.rest())) refuse();
      r.at += 2;
      afterComma = true;
    }
    if (fraction !== null) {
      units.fraction(fraction);
      break;
    }
    const before = r.at;
    r.whitespace();
    value = r.integer();
    if (value === null) {
      r.at = before;
      break;
    }
    afterComma = false;
  }
  if (afterComma) refuse();
  let negative = prefix === '-';
  if (r.whitespace() > 0 && r.rest().startsWith('ago')) {
    if (prefix !== null) refuse();
    r.at += 3;
    negative = true;
  }
  if (r.rest() !== '') refuse();
  const ns = units.total();
  return negative ? -ns : ns;
}

/** `H:M:S[.fraction]`, after `H:`: only where no unit came before (no days here). */
function hms(r, units, hours) {
  if (units.min !== null) refuse();
  const minutes = r.integer();
  if (minutes === null || !r.rest().startsWith(':')) refuse();
  r.at += 1;
  const seconds = r.integer();
  if (seconds === null) refuse();
  units.set('hour', hours);
  units.set('minute', minutes);
  units.set('second', seconds);
  const fraction = r.fraction();
  if (fraction !== null) units.fraction(fraction);
}

/** An ISO 8601 time duration (`PT1M30S`); nanoseconds, signed. */
function iso(text) {
  const r = new Reader(text);
  const negative = text[0] === '-';
  if (/^[+-]/.test(text)) r.at += 1;
  if (!/^[Pp][Tt]/.test(r.rest())) refuse();
  r.at += 2;
  const units = new Units();
  for (;;) {
    const value = r.integer();
    if (value === null) break;
    const fraction = r.fraction();
    const designator = r.rest()[0];
    const unit = { h: 'hour', m: 'minute', s: 'second' }[designator?.toLowerCase()];
    if (!unit) refuse();
    r.at += 1;
    units.set(unit, value);
    if (fraction !== null) {
      units.fraction(fraction);
      break;
    }
  }
  if (r.rest() !== '') refuse();
  const ns = units.total();
  return negative ? -ns : ns;
}

/**
 * The duration `text` stands for, in nanoseconds (a BigInt), or null when
 * the binary would refuse it.
 */
function parseDurationNs(text) {
  const trimmed = String(text).replace(TRIM, '');
  if (trimmed !== '' && /^[0-9.]+$/.test(trimmed)) {
    if (!/^([0-9]+\.?[0-9]*|\.[0-9]+)$/.test(trimmed)) return null;
    const seconds = Number(trimmed);
    if (seconds > Number(MAX_NS / NS.second)) return null;
    return BigInt(Math.round(seconds * 1e9));
  }
  let ns;
  try {
    ns = /^[+-]?[Pp]/.test(trimmed) ? iso(trimmed) : friendly(trimmed);
  } catch (e) {
    if (e instanceof Refused) return null;
    throw e;
  }
  return ns < 0n || ns > MAX_NS ? null : ns;
}

/** The same in milliseconds (a number), or null. */
function parseDuration(text) {
  const ns = parseDurationNs(text);
  return ns === null ? null : Number(ns) / 1e6;
}

module.exports = { parseDuration, parseDurationNs, MAX_NS };
