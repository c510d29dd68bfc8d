//! Text a process chose (its comm, its cmdline) can be any bytes. JSON carries
//! it losslessly; a terminal gets it escaped, so no control character of a
//! holder's choosing reaches the user's terminal.

use std::fmt;

use serde::{Serialize, Serializer};

/// Bytes that are usually, but not always, UTF-8.
///
/// In JSON: a string when the bytes are valid UTF-8, otherwise
/// `{"bytes": "<base64>"}` (standard alphabet, padded), as ripgrep does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// Escaped for a terminal: printable UTF-8 passes, control characters
    /// and invalid bytes become `\xNN` / `\u{N}` / `\n`-style escapes.
    pub fn escaped(&self) -> String {
        escape(&self.0)
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

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.escaped())
    }
}

/// Escapes anything that could move the cursor, change colours or otherwise
/// act on a terminal.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                // C1 controls and bidi/format overrides.
                c if ('\u{80}'..='\u{9f}').contains(&c)
                    || ('\u{200e}'..='\u{200f}').contains(&c)
                    || ('\u{202a}'..='\u{202e}').contains(&c)
                    || ('\u{2066}'..='\u{2069}').contains(&c) =>
                {
                    out.push_str(&format!("\\u{{{:x}}}", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_terminal_controls() {
        assert_eq!(escape(b"nginx"), "nginx");
        assert_eq!(escape(b"a\x1b[31mred"), "a\\x1b[31mred");
        assert_eq!(escape(b"a\nb"), "a\\nb");
        assert_eq!(escape(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(escape("bidi\u{202e}x".as_bytes()), "bidi\\u{202e}x");
        assert_eq!(escape("héllo".as_bytes()), "héllo");
    }

    #[test]
    fn json_is_lossless() {
        assert_eq!(
            serde_json::to_string(&Bytes(b"node".to_vec())).unwrap(),
            "\"node\""
        );
        assert_eq!(
            serde_json::to_string(&Bytes(b"a\xffb".to_vec())).unwrap(),
            r#"{"bytes":"Yf9i"}"#
        );
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn shell_word_quotes_when_needed() {
        assert_eq!(shell_word(b"--port=9926"), "--port=9926");
        assert_eq!(shell_word(b"a b"), "'a b'");
        assert_eq!(shell_word(b"it's"), "'it'\\''s'");
    }
}
