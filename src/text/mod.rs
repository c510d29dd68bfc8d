//! Text a process chose (its comm, its cmdline) can be any bytes. JSON carries
//! it losslessly; a terminal gets it escaped, so no control character of a
//! holder's choosing reaches the user's terminal.

use std::fmt;

use serde::{Serialize, Serializer};

pub use markdown::{markdown, markdown_code};
#[cfg(test)]
pub(crate) use rng::SplitMix64;

mod markdown;
#[cfg(test)]
mod rng;
#[cfg(test)]
mod tests;

/// Bytes that are usually, but not always, UTF-8.
///
/// In JSON: a string when the bytes are valid UTF-8, otherwise
/// `{"bytes": "<base64>"}` (standard alphabet, padded), as ripgrep does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// Escaped for a terminal: printable UTF-8 passes; hidden characters
    /// (see [`is_hidden`]) and invalid bytes become `\xNN` / `\u{N}` /
    /// `\n`-style escapes.
    pub fn escaped(&self) -> String {
        escape(&self.0)
    }

    /// Escaped for Markdown inline text: [`markdown`] of [`Bytes::escaped`].
    pub fn markdown(&self) -> String {
        markdown(&self.escaped())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("bytes", &base64(&self.0))?;
                map.end()
            }
        }
    }
}

/// The schema of what [`Bytes`] serializes to: a string, or
/// `{"bytes": "<base64>"}`.
impl schemars::JsonSchema for Bytes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Bytes".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Text a process chose: a string when it is valid UTF-8, otherwise its bytes in base64 (standard alphabet, padded).",
            "anyOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "properties": {
                        "bytes": {"type": "string", "contentEncoding": "base64"}
                    },
                    "required": ["bytes"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.escaped())
    }
}

/// Whether `c` must not reach a terminal or a document raw: it is
/// invisible, or it moves the cursor, breaks or reorders lines, or changes
/// how the text around it is drawn.
///
/// Every character of Unicode general category Cc (C0 and C1 controls, DEL;
/// U+0085 NEL among them), Cf (format: the soft hyphen, bidi marks,
/// embeddings, overrides and isolates, zero-width spaces and joiners, word
/// joiner and invisible operators, the byte order mark, interlinear
/// annotations, tag characters, ...), Zl and Zp (U+2028, U+2029), and the
/// other default-ignorable code points (fillers and variation selectors,
/// which draw nothing). Hand-written from the Unicode 16 character database,
/// so no dependency is needed; `tests::invisible_and_line_breaking_characters_are_escaped`
/// pins it.
pub fn is_hidden(c: char) -> bool {
    matches!(
        c as u32,
        // Cc
        0x00..=0x1f | 0x7f..=0x9f
        // Cf
        | 0xad
        | 0x600..=0x605
        | 0x61c
        | 0x6dd
        | 0x70f
        | 0x890..=0x891
        | 0x8e2
        | 0x180e
        | 0x200b..=0x200f
        // Zl, Zp, then the bidi embeddings and overrides (Cf)
        | 0x2028..=0x202e
        // word joiner, invisible operators, bidi isolates, deprecated
        // format characters (U+2065 is unassigned but default-ignorable)
        | 0x2060..=0x206f
        | 0xfeff
        | 0xfff9..=0xfffb
        | 0x110bd
        | 0x110cd
        | 0x13430..=0x1343f
        | 0x1bca0..=0x1bca3
        | 0x1d173..=0x1d17a
        // tag characters and the variation selectors supplement: the whole
        // default-ignorable block
        | 0xe0000..=0xe0fff
        // Other default-ignorable code points (Mn, Lo, unassigned): the
        // combining grapheme joiner, Hangul and halfwidth fillers, Khmer
        // inherent vowels, Mongolian free variation selectors, variation
        // selectors, reserved U+FFF0..U+FFF8.
        | 0x34f
        | 0x115f..=0x1160
        | 0x17b4..=0x17b5
        | 0x180b..=0x180f
        | 0x3164
        | 0xfe00..=0xfe0f
        | 0xffa0
        | 0xfff0..=0xfff8
    )
}

/// Appends the terminal form of one character: `\n`, `\xNN`, `\u{N}`, or
/// the character itself.
fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\\' => out.push_str("\\\\"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if is_hidden(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// The one escaper for the terminal (and any plain-text output: stderr,
/// scan/wait/watch lines, the human report): printable UTF-8 passes; every
/// character [`is_hidden`] and every invalid byte becomes an escape
/// (`\n`, `\x1b`, `\u{2028}`, `\xff`), and a backslash is doubled, so an
/// escape in the output always stands for exactly one input character or
/// byte. The output is one line.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c);
        }
        for b in chunk.invalid() {
            use std::fmt::Write as _;
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Text with every character [`is_hidden`] escaped as [`escape`] would
/// escape it, and everything else (backslashes too) as it is: for text that
/// may hold escapes already, such as a message quoting escaped values.
pub fn escape_hidden(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_hidden(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// The most characters of an echoed value an error message shows.
pub const ECHO_MAX: usize = 64;

/// A value a user gave (an argument, an environment variable), as an error
/// message echoes it: escaped for the terminal, in single quotes, and cut
/// to [`ECHO_MAX`] characters with `…` and its full length, so no value can
/// forge a line, act on the terminal, or flood it.
///
/// `'127.0.0.256'`, `'\x1b]0;x\x07'`, `'1111…' (120000 bytes)`.
pub fn echo(value: &str) -> String {
    let (shown, cut) = cut_escaped(&escape(value.as_bytes()), ECHO_MAX);
    if cut {
        format!("'{shown}…' ({} bytes)", value.len())
    } else {
        format!("'{shown}'")
    }
}

/// A line of someone else's text (clap's error message, which quotes the
/// bad value raw) made safe the same way: escaped, and cut to `max`
/// characters with `…` and its full length.
pub fn echo_line(line: &str, max: usize) -> String {
    let (shown, cut) = cut_escaped(&escape(line.as_bytes()), max);
    if cut {
        format!("{shown}… ({} bytes in all)", line.len())
    } else {
        shown
    }
}

/// The first `max` characters of escaped text, never splitting an escape
/// (`\u{2028}` stays whole or goes), and whether anything was cut.
fn cut_escaped(escaped: &str, max: usize) -> (String, bool) {
    if escaped.chars().count() <= max {
        return (escaped.to_string(), false);
    }
    let mut shown = String::new();
    let mut chars = escaped.chars();
    let mut count = 0;
    while let Some(c) = chars.next() {
        let mut piece = String::from(c);
        if c == '\\' {
            // An escape: `\\`, `\n`, `\xNN` or `\u{...}`.
            match chars.next() {
                Some('x') => {
                    piece.push('x');
                    piece.extend(chars.by_ref().take(2));
                }
                Some('u') => {
                    piece.push('u');
                    for d in chars.by_ref() {
                        piece.push(d);
                        if d == '}' {
                            break;
                        }
                    }
                }
                Some(d) => piece.push(d),
                None => {}
            }
        }
        let len = piece.chars().count();
        if count + len > max {
            break;
        }
        count += len;
        shown.push_str(&piece);
    }
    (shown, true)
}

/// Quotes one argument of a command line for display if it needs it.
pub fn shell_word(bytes: &[u8]) -> String {
    let escaped = escape(bytes);
    let plain = !escaped.is_empty()
        && escaped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        escaped
    } else {
        format!("'{}'", escaped.replace('\'', "'\\''"))
    }
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
