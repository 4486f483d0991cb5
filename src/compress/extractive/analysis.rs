//! What one message yields whatever the question: its session header, its excerpts
//! (lines, or the sentences of long lines) with what they mention and the stems of their
//! words, the words it adds to the topics, and a tool result's error lines. A chat
//! resends its old messages every turn, so [`memo`](super::memo) keeps this per text and
//! only the scoring against the new question runs again. This room must not look at
//! other messages or at the question.

use std::hash::{BuildHasher, RandomState};
use std::mem::size_of;
use std::ops::Range;
use std::sync::LazyLock;

use crate::chat::{Message, Role};

use super::facts::score;
use super::relevance::term_hashes;
use super::text::text_of;
use super::tools::error_lines;
use super::topics::TopicWords;

/// Lines longer than this are split into sentences (so a fact is kept without its neighbours).
const LONG_LINE: usize = 40;
/// A session header is a bracketed first line with a digit, at most this long.
const MAX_HEADER: usize = 100;

/// The key excerpts are told apart by across messages: random per process, since the
/// text comes from clients.
static EXCERPT_KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// One message, analysed.
pub struct Analysis {
    /// The length of the text it was made from, checked before its ranges are used.
    len: usize,
    /// The session header: the trimmed first line, when it is one.
    header: Option<Range<usize>>,
    excerpts: Vec<Excerpt>,
    /// Whether the stems were worked out: only relevance needs them.
    with_stems: bool,
    /// The stems of the excerpts' words ([`term_hashes`]), excerpt after excerpt.
    stems: Vec<u64>,
    topics: TopicWords,
    /// A tool result's error lines, the first and the last.
    errors: Vec<String>,
}

/// A line, or a sentence of a long line, that may be kept verbatim.
pub(super) struct Excerpt {
    pub(super) range: Range<usize>,
    /// What it mentions ([`score`]).
    pub(super) score: u32,
    /// Its words, as relevance counts them (0 without stems).
    pub(super) words: u32,
    /// Its text's hash under [`EXCERPT_KEYS`], so the same excerpt in two messages is kept once.
    pub(super) hash: u64,
    /// Its words' stems in [`Analysis::stems`].
    stems: Range<u32>,
    /// A bit per stem ([`signature`]): a stem whose bit is not set is not among them.
    signature: u64,
}

/// The bit of a stem in an excerpt's signature.
pub(super) fn signature(stem: u64) -> u64 {
    1 << (stem.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58)
}

impl Analysis {
    /// Analyses `message`, with its words' stems when `with_stems` (for scoring relevance);
    /// tool results get only their error lines, as they give no excerpts.
    pub fn of(message: &Message, with_stems: bool) -> Analysis {
        let text = text_of(message);
        let mut analysis = Analysis {
            len: text.len(),
            header: None,
            excerpts: Vec::new(),
            with_stems,
            stems: Vec::new(),
            topics: TopicWords::default(),
            errors: Vec::new(),
        };
        if message.role == Role::Tool {
            analysis.errors = error_lines(&text);
            return analysis;
        }
        let offset = |part: &str| part.as_ptr() as usize - text.as_ptr() as usize;
        analysis.header = session_header(&text).map(|h| offset(h)..offset(h) + h.len());
        let is_user = message.role == Role::User;
        let header = analysis.header.as_ref().and(text.lines().next());
        let stem_index = |stems: &Vec<u64>| u32::try_from(stems.len()).unwrap_or(u32::MAX);
        for line in text.lines() {
            if Some(line) == header {
                continue;
            }
            for piece in pieces(line) {
                let first = stem_index(&analysis.stems);
                let mut words = 0;
                let mut bits = 0;
                if with_stems {
                    for stem in term_hashes(piece) {
                        words += 1;
                        if let Some(stem) = stem {
                            analysis.stems.push(stem);
                            bits |= signature(stem);
                        }
                    }
                }
                let start = offset(piece);
                analysis.excerpts.push(Excerpt {
                    range: start..start + piece.len(),
                    score: score(piece, is_user),
                    words,
                    hash: EXCERPT_KEYS.hash_one(piece),
                    stems: first..stem_index(&analysis.stems),
                    signature: bits,
                });
            }
        }
        analysis.excerpts.shrink_to_fit();
        analysis.stems.shrink_to_fit();
        analysis.topics = TopicWords::of(message);
        analysis
    }

    /// Whether it was made from a text of `text`'s length, so its ranges fit in `text`.
    pub(super) fn fits(&self, text: &str) -> bool {
        self.len == text.len()
    }

    /// Whether it holds its words' stems.
    pub(super) fn with_stems(&self) -> bool {
        self.with_stems
    }

    /// The session header in `text`, the message's text.
    pub(super) fn header<'t>(&self, text: &'t str) -> Option<&'t str> {
        text.get(self.header.clone()?)
    }

    pub(super) fn excerpts(&self) -> &[Excerpt] {
        &self.excerpts
    }

    /// Which of `stems` (a query's term hashes) `excerpt` holds: bit `i` for `stems[i]`.
    /// `signatures` is the union of their [`signature`]s.
    pub(super) fn holds(&self, excerpt: &Excerpt, stems: &[u64], signatures: u64) -> u64 {
        if excerpt.signature & signatures == 0 {
            return 0;
        }
        let words = self
            .stems
            .get(excerpt.stems.start as usize..excerpt.stems.end as usize)
            .unwrap_or_default();
        let mut held = 0;
        for (i, &stem) in stems.iter().enumerate() {
            if excerpt.signature & signature(stem) != 0 && words.contains(&stem) {
                held |= 1 << i;
            }
        }
        held
    }

    pub(super) fn topics(&self) -> &TopicWords {
        &self.topics
    }

    pub(super) fn errors(&self) -> &[String] {
        &self.errors
    }

    /// About how many bytes it holds, for the cache's bound.
    pub(super) fn bytes(&self) -> usize {
        size_of::<Analysis>()
            + self.excerpts.capacity() * size_of::<Excerpt>()
            + self.stems.capacity() * size_of::<u64>()
            + self.topics.bytes()
            + self
                .errors
                .iter()
                .map(|e| size_of::<String>() + e.capacity())
                .sum::<usize>()
    }
}

/// A message's first line when it is a session header: bracketed, short, with a digit
/// (`[Session 3, 1:14 pm on 25 May, 2023]`).
fn session_header(text: &str) -> Option<&str> {
    let line = text.lines().next()?.trim();
    (line.len() <= MAX_HEADER
        && line.starts_with('[')
        && line.ends_with(']')
        && !line.starts_with("[thrifty:")
        && line.bytes().any(|b| b.is_ascii_digit()))
    .then_some(line)
}

/// A line, or its sentences when it is long, without blank or symbol-only pieces.
fn pieces(line: &str) -> Vec<&str> {
    let line = line.trim();
    let worth = |p: &&str| p.len() >= 3 && p.bytes().any(|b| b.is_ascii_alphanumeric());
    if line.len() <= LONG_LINE {
        return Some(line).filter(worth).into_iter().collect();
    }
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let end_of_sentence =
            matches!(b, b'.' | b'!' | b'?') && bytes.get(i + 1).is_none_or(|n| *n == b' ');
        if end_of_sentence {
            out.push(line[start..=i].trim());
            start = i + 1;
        }
    }
    out.push(line[start..].trim());
    out.retain(worth);
    out
}
