//! Unit and property tests of the escapers.

use super::markdown::MARKDOWN_SPECIAL;
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

/// Characters [`random_text`] favours: the hidden ones, controls, and what
/// Markdown or a terminal gives meaning to.
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

/// Random text, rich in what the escapers must handle.
fn random_text(rng: &mut SplitMix64) -> Vec<u8> {
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
