//! Text made safe inside Markdown: the forensic report (`run --report`).

use super::{escape_hidden, is_hidden, push_escaped};

/// The ASCII characters that mean something inside a line of Markdown
/// (CommonMark with GitHub's extensions): escapes, code spans, emphasis and
/// strikethrough, links and images, HTML, autolinks and entities, table
/// cells, math, and a heading's closing sequence. Each may be
/// backslash-escaped, and an escaped one is always literal. The rest of
/// ASCII punctuation (`.`, `:`, `-`, ...) only means something at the start
/// of a line, where untrusted text never is, so it stays as it is and
/// addresses stay readable; see [`markdown`] for `:` and `.` in URLs.
pub(super) const MARKDOWN_SPECIAL: &[char] = &[
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
