//! tiktoken's pre-tokenization written out by hand for ASCII text: the pieces its
//! regular expressions cut a text into before byte-pair encoding, which never
//! merges across pieces. `tiktoken-rs` finds them with `fancy-regex`, which is most
//! of its time; this walks the bytes once.
//!
//! The patterns (as `tiktoken-rs` 0.12 has them), tried in order at each position:
//!
//! ```text
//! o200k_base   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//!              | [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//!              | \p{N}{1,3} | ' '?[^\s\p{L}\p{N}]+[\r\n/]* | \s*[\r\n]+ | \s+(?!\S) | \s+
//! cl100k_base  '(?i:[sdmt]|ll|ve|re) | [^\r\n\p{L}\p{N}]?+\p{L}++ | \p{N}{1,3}+
//!              | ' '?[^\s\p{L}\p{N}]++[\r\n]*+ | \s++$ | \s*[\r\n] | \s+(?!\S) | \s
//! ```
//!
//! In ASCII, `\p{L}` is `[A-Za-z]` (upper case `Lu`, lower case `Ll`, no `Lt`, `Lm`,
//! `Lo` or `M`), `\p{N}` is `[0-9]` and `\s` is `[\t\n\x0B\x0C\r ]`. Beyond ASCII,
//! only a few common symbols are handled here (`…`, `×`, `—`, curly quotes, arrows,
//! box drawing: see [`is_symbol`]), all of them neither letter, number, mark nor
//! space. Text with other characters is cut where no piece can cross
//! ([`plain_segments`]) and only its plain segments come here; the rest is left to
//! tiktoken. The tests compare every cut with tiktoken's.
//! This room must not encode or count: it only finds piece boundaries.

/// Which pattern to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pattern {
    O200k,
    Cl100k,
}

const LOWER: u8 = 1;
const UPPER: u8 = 1 << 1;
const DIGIT: u8 = 1 << 2;
/// `\s`.
const SPACE: u8 = 1 << 3;
/// `\r` and `\n` (also `SPACE`).
const NEWLINE: u8 = 1 << 4;
/// Neither `\s`, a letter nor a digit.
const OTHER: u8 = 1 << 5;
const LETTER: u8 = LOWER | UPPER;

/// The class of every byte; bytes of non-ASCII characters are only ever those of
/// symbols ([`is_symbol`]) here.
static CLASS: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = match b as u8 {
            b'a'..=b'z' => LOWER,
            b'A'..=b'Z' => UPPER,
            b'0'..=b'9' => DIGIT,
            b'\r' | b'\n' => SPACE | NEWLINE,
            b'\t' | 0x0B | 0x0C | b' ' => SPACE,
            _ => OTHER,
        };
        b += 1;
    }
    table
};

/// Non-ASCII characters cut here: punctuation and symbols (Unicode categories `P*`
/// and `S*`) common in chat and tool output, so a typographic quote or a `…` does
/// not send a whole segment to tiktoken.
fn is_symbol(c: char) -> bool {
    matches!(
        c,
        '…' | '×'
            | '÷'
            | '—'
            | '–'
            | '‐'
            | '‑'
            | '‒'
            | '―'
            | '‘'
            | '’'
            | '‚'
            | '“'
            | '”'
            | '„'
            | '′'
            | '″'
            | '«'
            | '»'
            | '•'
            | '·'
            | '†'
            | '‡'
            | '§'
            | '¶'
            | '→'
            | '←'
            | '↑'
            | '↓'
            | '⇒'
            | '≈'
            | '≠'
            | '≤'
            | '≥'
            | '±'
            | '°'
            | '€'
            | '£'
            | '¥'
            | '©'
            | '®'
            | '™'
            | '✓'
            | '✔'
            | '✗'
            | '✘'
            | '★'
            | '☆'
            | '▶'
            | '►'
            | '│'
            | '─'
            | '└'
            | '├'
            | '┌'
            | '┐'
            | '┘'
            | '┤'
            | '┬'
            | '┴'
            | '┼'
            | '█'
            | '░'
    )
}

/// Where the pieces of a plain text end, in order: the last end is the text's length.
pub(super) struct PieceEnds<'a> {
    text: &'a [u8],
    at: usize,
    pattern: Pattern,
}

/// Cuts `text`, which must be plain ([`plain_segments`]), into the pieces `pattern` finds.
pub(super) fn piece_ends(text: &[u8], pattern: Pattern) -> PieceEnds<'_> {
    PieceEnds {
        text,
        at: 0,
        pattern,
    }
}

impl Iterator for PieceEnds<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.at >= self.text.len() {
            return None;
        }
        self.at = match self.pattern {
            Pattern::O200k => o200k(self.text, self.at),
            Pattern::Cl100k => cl100k(self.text, self.at),
        };
        Some(self.at)
    }
}

/// Splits a text at points no piece of either pattern crosses: after a `\n` that is
/// followed by an ASCII character other than whitespace and `/`. Yields each segment
/// with whether it is plain (ASCII and [`is_symbol`] characters only); the segments
/// concatenate to the text.
pub(super) fn plain_segments(text: &str) -> impl Iterator<Item = (&str, bool)> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut plain = true;
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let b = bytes[i];
            if b >= 0xC0 && plain {
                // The first byte of a character: see which.
                plain = text[i..].chars().next().is_some_and(is_symbol);
            }
            i += 1;
            if b == b'\n'
                && bytes
                    .get(i)
                    .is_some_and(|&n| n < 0x80 && class(n) & SPACE == 0 && n != b'/')
            {
                let segment = (&text[start..i], plain);
                start = i;
                plain = true;
                return Some(segment);
            }
        }
        if start < bytes.len() {
            let segment = (&text[start..], plain);
            start = bytes.len();
            return Some(segment);
        }
        None
    })
}

fn class(b: u8) -> u8 {
    CLASS[usize::from(b)]
}

fn is(text: &[u8], i: usize, classes: u8) -> bool {
    text.get(i).is_some_and(|&b| class(b) & classes != 0)
}

/// The end of the run of `classes` starting at `i`.
fn run(text: &[u8], mut i: usize, classes: u8) -> usize {
    while is(text, i, classes) {
        i += 1;
    }
    i
}

/// `[^\r\n\p{L}\p{N}]`: whitespace other than line breaks, or `OTHER`.
fn prefix(b: u8) -> bool {
    let c = class(b);
    c & (LETTER | DIGIT | NEWLINE) == 0
}

/// Where the letters of a letter piece start: at `i`, or after a one-byte prefix.
fn letters_from(text: &[u8], i: usize) -> Option<usize> {
    if is(text, i, LETTER) {
        Some(i)
    } else if prefix(text[i]) {
        // The prefix is one character: a symbol takes two or three bytes.
        let width = match text[i] {
            0..0x80 => 1,
            0x80..0xE0 => 2,
            0xE0..0xF0 => 3,
            _ => 4,
        };
        is(text, i + width, LETTER).then_some(i + width)
    } else {
        None
    }
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `i`, or the o200k one: the end either way.
fn contraction(text: &[u8], i: usize) -> usize {
    if text.get(i) != Some(&b'\'') {
        return i;
    }
    let lower = |k: usize| text.get(k).map(u8::to_ascii_lowercase);
    match (lower(i + 1), lower(i + 2)) {
        (Some(b's' | b't' | b'm' | b'd'), _) => i + 2,
        (Some(b'r'), Some(b'e')) | (Some(b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => i + 3,
        _ => i,
    }
}

/// `' '?[^\s\p{L}\p{N}]+` then `tail`: the end, if it matches at `i`.
fn symbols(text: &[u8], i: usize, tail: &[u8]) -> Option<usize> {
    let from = if text[i] == b' ' && is(text, i + 1, OTHER) {
        i + 1
    } else if is(text, i, OTHER) {
        i
    } else {
        return None;
    };
    let mut end = run(text, from, OTHER);
    while text.get(end).is_some_and(|b| tail.contains(b)) {
        end += 1;
    }
    Some(end)
}

/// The whitespace at `i` up to and including its last line break (`\s*[\r\n]+`).
fn through_last_newline(text: &[u8], i: usize, spaces_end: usize) -> Option<usize> {
    (i..spaces_end)
        .rev()
        .find(|&k| class(text[k]) & NEWLINE != 0)
        .map(|k| k + 1)
}

fn o200k(text: &[u8], i: usize) -> usize {
    if let Some(from) = letters_from(text, i) {
        let upper_end = run(text, from, UPPER);
        let end = if is(text, upper_end, LOWER) {
            run(text, upper_end, LOWER)
        } else {
            upper_end
        };
        return contraction(text, end);
    }
    if is(text, i, DIGIT) {
        return run(text, i, DIGIT).min(i + 3);
    }
    if let Some(end) = symbols(text, i, b"\r\n/") {
        return end;
    }
    let spaces_end = run(text, i, SPACE);
    if let Some(end) = through_last_newline(text, i, spaces_end) {
        return end;
    }
    if spaces_end == text.len() || spaces_end - i == 1 {
        spaces_end
    } else {
        spaces_end - 1
    }
}

fn cl100k(text: &[u8], i: usize) -> usize {
    let apostrophe = contraction(text, i);
    if apostrophe > i {
        return apostrophe;
    }
    if let Some(from) = letters_from(text, i) {
        return run(text, from, LETTER);
    }
    if is(text, i, DIGIT) {
        return run(text, i, DIGIT).min(i + 3);
    }
    if let Some(end) = symbols(text, i, b"\r\n") {
        return end;
    }
    let spaces_end = run(text, i, SPACE);
    if spaces_end == text.len() {
        return spaces_end;
    }
    if let Some(end) = through_last_newline(text, i, spaces_end) {
        return end;
    }
    if spaces_end - i >= 2 {
        spaces_end - 1
    } else {
        i + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::bpe::tokenizer;
    use crate::config::Encoding;

    /// Where tiktoken's tokens of `text` end, as byte offsets.
    fn token_ends(encoding: Encoding, text: &str) -> Vec<usize> {
        let bpe = tokenizer(encoding);
        let mut at = 0;
        bpe.encode_ordinary(text)
            .into_iter()
            .map(|token| {
                at += bpe.decode_bytes(&[token]).expect("a known token").len();
                at
            })
            .collect()
    }

    /// Every piece ends where a token ends, and the pieces cover the text.
    fn check(text: &str) {
        for (encoding, pattern) in [
            (Encoding::O200kBase, Pattern::O200k),
            (Encoding::Cl100kBase, Pattern::Cl100k),
        ] {
            let ends = token_ends(encoding, text);
            let mut last = 0;
            for at in piece_ends(text.as_bytes(), pattern) {
                assert!(at > last);
                assert!(
                    ends.binary_search(&at).is_ok(),
                    "{pattern:?} cut {text:?} at {at}, inside a token: {:?}",
                    &text[..at]
                );
                last = at;
            }
            assert_eq!(last, text.len());
        }
    }

    #[test]
    fn pieces_end_where_tiktoken_tokens_end() {
        const PARTS: &[&str] = &[
            "a",
            "Z",
            "word",
            " word",
            "Word",
            " Word",
            "HTTPServer",
            "camelCase",
            "ALLCAPS",
            "don't",
            "DON'T",
            "'s",
            "'S",
            "'ll",
            "'Re",
            "'ve",
            "'m",
            "'d",
            "'x",
            "'",
            "''",
            "0",
            "12",
            "1234567",
            " 42",
            "3.14",
            "_",
            "__init__",
            "-",
            "--flag",
            "/",
            "//",
            "/usr/local/bin",
            "./a.out",
            "...",
            "!?",
            "(",
            ")",
            "{}",
            "[]",
            "=>",
            "::",
            " ",
            "  ",
            "   ",
            "\t",
            "\t\t",
            " \t",
            "\n",
            "\n\n",
            "\r\n",
            " \n",
            "\n ",
            "  \n  ",
            "\x0b",
            "\x0c",
            "\x00",
            "\x1f",
            "\x7f",
            ".\n/",
            ";\r\n",
            "#",
            " #",
            " .",
            "x1",
            "1x",
            "A1b",
            "…",
            "…a",
            " …",
            "×",
            "×12",
            "—",
            " — ",
            "’s",
            "’",
            "“Quote”",
            "→x",
            "│ ├─",
            "°C",
            " •",
            "\n•",
        ];
        // A fixed xorshift stream, so a failure can be replayed.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..4_000 {
            let mut text = String::new();
            for _ in 0..next() % 24 {
                text.push_str(PARTS[(next() % PARTS.len() as u64) as usize]);
            }
            check(&text);
        }
        check("fn main() {\n    println!(\"hello, world\");\n}\n");
        check("    \n\n\tindented\n  trailing   ");
    }

    #[test]
    fn segments_cut_after_line_breaks_only_where_no_piece_continues() {
        let text = "héllo\nworld\n  next\n/root\n\n\u{3000}x\nlast … ×\n";
        let segments: Vec<(&str, bool)> = plain_segments(text).collect();
        assert_eq!(
            segments,
            vec![
                ("héllo\n", false),
                ("world\n  next\n/root\n\n\u{3000}x\n", false),
                ("last … ×\n", true),
            ]
        );
        assert_eq!(plain_segments("").count(), 0);
    }
}
