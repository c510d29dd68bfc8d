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

/// The ASCII characters that mean something inside a line of Markdown
/// (CommonMark with GitHub's extensions): escapes, code spans, emphasis and
/// strikethrough, links and images, HTML, autolinks and entities, table
/// cells, math, and a heading's closing sequence. Each may be
/// backslash-escaped, and an escaped one is always literal. The rest of
/// ASCII punctuation (`.`, `:`, `-`, ...) only means something at the start
/// of a line, where untrusted text never is, so it stays as it is and
/// addresses stay readable; see [`markdown`] for `:` and `.` in URLs.
const MARKDOWN_SPECIAL: &[char] = &[
    '\\', '`', '*', '_', '~', '[', ']', '<', '>', '|', '!', '&', '#', '$', '@',
];

/// The one escaper for Markdown inline text (a paragraph, a list item, a
/// heading, a table cell), given display text: what the terminal would show
/// ([`escape`]'s output, or sockcheck's own words, which may quote it).
///
/// Every character of [`MARKDOWN_SPECIAL`] gets a backslash, so `|` cannot
/// split a table row, `` ` `` cannot open a code span, `[x](http://…)`
/// cannot make a link, `<` cannot open HTML or an autolink, and `*`, `_`,
/// `&`, `$` mean nothing. GitHub also links bare URLs and mail addresses:
/// the `:` of `://` and the `.` of `www.` get a backslash too (and `@`
/// always has one). A hidden character that reaches it anyway (text that
/// skipped [`escape`]) is escaped as the terminal would escape it. The
/// output renders as the input, on one line.
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for (i, c) in text.char_indices() {
        if is_hidden(c) {
            // `\u{2028}` becomes `\\u{2028}`, which renders as `\u{2028}`.
            let mut piece = String::new();
            push_escaped(&mut piece, c);
            out.push_str(&piece.replace('\\', "\\\\"));
            continue;
        }
        let before = &text.as_bytes()[..i];
        let special = MARKDOWN_SPECIAL.contains(&c)
            || (c == ':' && text[i + 1..].starts_with("//"))
            || (c == '.'
                && before.len() >= 3
                && before[before.len() - 3..].eq_ignore_ascii_case(b"www"));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Display text as a Markdown code span, for a command line a reader may
/// want to copy: the fence is one backtick longer than the longest run of
/// backticks inside, so nothing inside can close it, and nothing inside a
/// code span is a link, emphasis or HTML. Hidden characters are escaped as
/// the terminal would escape them. Not for table cells (a `|` would still
/// split the row there): use [`markdown`] in tables.
pub fn markdown_code(text: &str) -> String {
    let inner = escape_hidden(text);
    let mut longest = 0;
    let mut run = 0;
    for c in inner.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    if inner.is_empty() {
        // No code span is empty: one space shows there is nothing.
        return "` `".to_string();
    }
    // A space on each side when the content starts or ends with a backtick
    // or a space; CommonMark strips exactly one from each side, unless the
    // content is all spaces (then it strips none, so none is added).
    let pad = (inner.starts_with(['`', ' ']) || inner.ends_with(['`', ' ']))
        && !inner.bytes().all(|b| b == b' ');
    let pad = if pad { " " } else { "" };
    format!("{fence}{pad}{inner}{pad}{fence}")
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

/// A deterministic pseudo-random generator for the property tests
/// (SplitMix64): a fixed seed gives the same cases on every run and
/// machine, and no dependency is needed.
#[cfg(test)]
pub(crate) struct SplitMix64(pub u64);

#[cfg(test)]
impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// An index into something of length `n` (n > 0).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A u64 of any magnitude: small ones as often as huge ones.
    pub fn number(&mut self) -> u64 {
        let shift = self.below(64) as u32;
        self.next() >> shift
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
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
    fn invisible_and_line_breaking_characters_are_escaped() {
        for (c, escaped) in [
            ('\u{2028}', "\\u{2028}"),   // LINE SEPARATOR (Zl)
            ('\u{2029}', "\\u{2029}"),   // PARAGRAPH SEPARATOR (Zp)
            ('\u{061c}', "\\u{61c}"),    // ARABIC LETTER MARK
            ('\u{200b}', "\\u{200b}"),   // ZERO WIDTH SPACE
            ('\u{200d}', "\\u{200d}"),   // ZERO WIDTH JOINER
            ('\u{feff}', "\\u{feff}"),   // BYTE ORDER MARK
            ('\u{00ad}', "\\u{ad}"),     // SOFT HYPHEN: invisible unless at a break
            ('\u{0085}', "\\u{85}"),     // NEXT LINE (C1)
            ('\u{009b}', "\\u{9b}"),     // CSI (C1)
            ('\u{000b}', "\\x0b"),       // VT
            ('\u{000c}', "\\x0c"),       // FF
            ('\u{007f}', "\\x7f"),       // DEL
            ('\u{202e}', "\\u{202e}"),   // RIGHT-TO-LEFT OVERRIDE
            ('\u{2066}', "\\u{2066}"),   // LEFT-TO-RIGHT ISOLATE
            ('\u{2069}', "\\u{2069}"),   // POP DIRECTIONAL ISOLATE
            ('\u{2060}', "\\u{2060}"),   // WORD JOINER
            ('\u{2064}', "\\u{2064}"),   // INVISIBLE PLUS
            ('\u{206f}', "\\u{206f}"),   // NOMINAL DIGIT SHAPES
            ('\u{fff9}', "\\u{fff9}"),   // INTERLINEAR ANNOTATION ANCHOR
            ('\u{fffb}', "\\u{fffb}"),   // INTERLINEAR ANNOTATION TERMINATOR
            ('\u{0600}', "\\u{600}"),    // ARABIC NUMBER SIGN
            ('\u{180e}', "\\u{180e}"),   // MONGOLIAN VOWEL SEPARATOR
            ('\u{e0001}', "\\u{e0001}"), // LANGUAGE TAG
            ('\u{e0041}', "\\u{e0041}"), // TAG LATIN CAPITAL LETTER A
            ('\u{e007f}', "\\u{e007f}"), // CANCEL TAG
            ('\u{1d173}', "\\u{1d173}"), // MUSICAL SYMBOL BEGIN BEAM
            ('\u{13430}', "\\u{13430}"), // EGYPTIAN HIEROGLYPH VERTICAL JOINER
            ('\u{fe0f}', "\\u{fe0f}"),   // VARIATION SELECTOR-16
            ('\u{3164}', "\\u{3164}"),   // HANGUL FILLER
            ('\u{034f}', "\\u{34f}"),    // COMBINING GRAPHEME JOINER
        ] {
            assert!(is_hidden(c), "{:x}", c as u32);
            let text = format!("a{c}b");
            assert_eq!(escape(text.as_bytes()), format!("a{escaped}b"));
        }
        // What a terminal draws as itself passes.
        for c in [
            'a',
            'é',
            '\u{00a0}',
            '\u{0301}',
            '\u{4e2d}',
            '\u{1f600}',
            '|',
            '`',
            '\u{2027}',
            '\u{2030}',
            '\u{fffd}',
            '\u{10ffff}',
        ] {
            assert!(!is_hidden(c), "{:x}", c as u32);
            assert_eq!(escape(c.to_string().as_bytes()), c.to_string());
        }
    }

    #[test]
    fn markdown_cells_cannot_split_rows_or_open_links() {
        assert_eq!(markdown("a|b"), "a\\|b");
        assert_eq!(markdown("[x](http://e.vil)"), "\\[x\\](http\\://e.vil)");
        assert_eq!(markdown("![i](x)"), "\\!\\[i\\](x)");
        assert_eq!(markdown("`rm -rf`"), "\\`rm -rf\\`");
        assert_eq!(markdown("<b>*_~&lt;$x$"), "\\<b\\>\\*\\_\\~\\&lt;\\$x\\$");
        // Bare URLs and addresses that GitHub would link.
        assert_eq!(
            markdown("https://e.vil WWW.e.vil a@b.c"),
            "https\\://e.vil WWW\\.e.vil a\\@b.c"
        );
        // What sockcheck writes itself stays readable.
        assert_eq!(
            markdown("127.0.0.2:9926 is held by pid 7 (node)"),
            "127.0.0.2:9926 is held by pid 7 (node)"
        );
        assert_eq!(markdown("[::1]:9926"), "\\[::1\\]:9926");
        // Display text keeps its escapes visible: `\x1b` renders as `\x1b`.
        assert_eq!(markdown("a\\x1b"), "a\\\\x1b");
        // A hidden character that skipped the terminal escaper is escaped.
        assert_eq!(markdown("a\u{2028}b\nc"), "a\\\\u{2028}b\\\\nc");
        assert_eq!(Bytes(b"x|\x1b`".to_vec()).markdown(), "x\\|\\\\x1b\\`");
        // Code spans: a longer fence than any backtick run inside.
        assert_eq!(markdown_code("node server.js"), "`node server.js`");
        assert_eq!(markdown_code("a`b``c"), "```a`b``c```");
        assert_eq!(markdown_code("`x"), "`` `x ``");
        assert_eq!(markdown_code("a\u{2029}b"), "`a\\u{2029}b`");
    }

    #[test]
    fn echoed_values_are_escaped_quoted_and_cut() {
        assert_eq!(echo("127.0.0.256"), "'127.0.0.256'");
        assert_eq!(echo("\x1b]0;x\x07"), "'\\x1b]0;x\\x07'");
        assert_eq!(
            echo("x\nsockcheck: 127.0.0.2 free"),
            "'x\\nsockcheck: 127.0.0.2 free'"
        );
        let long = "1".repeat(120_000);
        assert_eq!(
            echo(&long),
            format!("'{}…' (120000 bytes)", "1".repeat(ECHO_MAX))
        );
        // An escape is never cut in two.
        let hidden = "\u{2028}".repeat(100);
        let shown = echo(&hidden);
        assert!(shown.starts_with("'\\u{2028}\\u{2028}"), "{shown}");
        assert!(shown.contains("}…' (300 bytes)"), "{shown}");
        assert_eq!(echo_line("short", 10), "short");
        assert_eq!(echo_line("abcdef\n", 4), "abcd… (7 bytes in all)");
    }

    /// Undoes [`escape`].
    fn unescape(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            match chars.next().expect("a lone backslash") {
                'n' => out.push(b'\n'),
                't' => out.push(b'\t'),
                'r' => out.push(b'\r'),
                '\\' => out.push(b'\\'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(u8::from_str_radix(&hex, 16).unwrap());
                }
                'u' => {
                    assert_eq!(chars.next(), Some('{'));
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let c = char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap();
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                other => panic!("unknown escape \\{other} in {text:?}"),
            }
        }
        out
    }

    /// What a CommonMark renderer shows for [`markdown`]'s output, checking
    /// on the way that nothing with a meaning in Markdown is left raw.
    fn render_markdown(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.char_indices();
        while let Some((i, c)) = chars.next() {
            assert!(!is_hidden(c), "hidden {:x} in {text:?}", c as u32);
            if c == '\\' {
                let (_, next) = chars.next().expect("a lone backslash");
                assert!(next.is_ascii_punctuation(), "\\{next} in {text:?}");
                out.push(next);
                continue;
            }
            assert!(!MARKDOWN_SPECIAL.contains(&c), "raw {c} in {text:?}");
            assert!(
                !(c == ':' && text[i + 1..].starts_with("//")),
                "raw :// in {text:?}"
            );
            assert!(
                !(c == '.' && out.to_ascii_lowercase().ends_with("www")),
                "raw www. in {text:?}"
            );
            out.push(c);
        }
        out
    }

    /// Random text, rich in what the escapers must handle.
    fn random_text(rng: &mut SplitMix64) -> Vec<u8> {
        const LISTED: &[char] = &[
            '\u{2028}',
            '\u{2029}',
            '\u{061c}',
            '\u{200b}',
            '\u{200e}',
            '\u{200f}',
            '\u{feff}',
            '\u{00ad}',
            '\u{0085}',
            '\u{202a}',
            '\u{202e}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{206f}',
            '\u{fff9}',
            '\u{fffb}',
            '\u{e0000}',
            '\u{e0001}',
            '\u{e007f}',
            '\n',
            '\r',
            '\t',
            '\x1b',
            '\x07',
            '\0',
            '\\',
            '|',
            '`',
            '[',
            ']',
            '(',
            ')',
            '<',
            '>',
            '*',
            '_',
            '#',
            '&',
            '!',
            '~',
            ' ',
            'é',
            '\u{4e2d}',
            '\u{1f600}',
            '\u{0301}',
        ];
        let mut bytes = Vec::new();
        for _ in 0..rng.below(48) {
            let c = match rng.below(10) {
                0..=3 => *rng.pick(LISTED),
                4 | 5 => char::from(rng.below(128) as u8),
                6 => {
                    // Anywhere in the hidden ranges' neighbourhood.
                    let base = *rng.pick(&[
                        0x80u32, 0x600, 0x890, 0x180b, 0x2000, 0x2060, 0xfe00, 0xfff0, 0x110bd,
                        0x13430, 0x1bca0, 0x1d170, 0xe0000, 0xe0100,
                    ]);
                    char::from_u32(base + rng.below(48) as u32).unwrap_or('x')
                }
                7 | 8 => char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('\u{fffd}'),
                _ => {
                    // Bytes that are not UTF-8.
                    bytes.push(*rng.pick(&[0x80u8, 0xbf, 0xc0, 0xe2, 0xed, 0xf4, 0xff]));
                    continue;
                }
            };
            let mut buf = [0; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        bytes
    }

    #[test]
    fn escapers_hold_for_random_text() {
        let mut rng = SplitMix64(0x7e47_0000_0000_0001);
        for _ in 0..100_000 {
            let bytes = random_text(&mut rng);
            // Terminal: nothing hidden, one line, and lossless.
            let terminal = escape(&bytes);
            assert!(!terminal.chars().any(is_hidden), "{terminal:?}");
            assert_eq!(unescape(&terminal), bytes, "{terminal:?}");
            // Markdown text: renders as the display text, every Markdown
            // character escaped (so no raw `|`, backtick or bracket).
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let display = escape_hidden(&text);
            assert_eq!(render_markdown(&markdown(&text)), display);
            assert_eq!(render_markdown(&Bytes(bytes.clone()).markdown()), terminal);
            // Markdown code span: no backtick run inside as long as the
            // fence, nothing hidden, and the content comes back.
            let code = markdown_code(&text);
            assert!(!code.chars().any(is_hidden), "{code:?}");
            let fence = code.chars().take_while(|&c| c == '`').count();
            let inner = &code[fence..code.len() - fence];
            assert!(code.ends_with(&"`".repeat(fence)));
            let longest = inner.split(|c| c != '`').map(str::len).max().unwrap_or(0);
            assert!(longest < fence, "{code:?}");
            let all_spaces = inner.bytes().all(|b| b == b' ');
            let inner = if inner.starts_with(' ') && inner.ends_with(' ') && !all_spaces {
                &inner[1..inner.len() - 1]
            } else {
                inner
            };
            if display.is_empty() {
                assert_eq!(code, "` `");
            } else {
                assert_eq!(inner, display, "{code:?}");
            }
            // Echoes: nothing hidden, short.
            let echoed = echo(&text);
            assert!(!echoed.chars().any(is_hidden), "{echoed:?}");
            assert!(echoed.chars().count() <= ECHO_MAX + 30, "{echoed:?}");
        }
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
