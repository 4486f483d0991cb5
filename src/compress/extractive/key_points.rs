//! Key points: lines and sentences worth keeping verbatim, scored by what they
//! mention ([`facts`](super::facts)), older messages ranked lower, chosen within the
//! token budget. With a
//! query (relevant mode), most of the budget first goes to the excerpts most relevant
//! to the latest user message, then the rest to key points. Excerpts are written in
//! conversation order under their speaker, with the session header (`[Session 3, 8 May
//! 2023]`) of the message they come from.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use crate::chat::Role;
use crate::dialect;

use super::Source;
use super::analysis::{Analysis, signature};
use super::relevance::{self, Hits, Query};
use super::text::{clip, text_of};

/// Excerpts longer than this are clipped.
const MAX_EXCERPT: usize = 240;
/// Excerpts are estimated at no more than this many tokens per byte (CJK text is about 0.5).
const MAX_TOKENS_PER_BYTE: f32 = 0.6;
/// With a query, this share of the budget goes to relevant excerpts first; the rest
/// keeps the facts every answer needs.
const RELEVANT_SHARE: f32 = 0.7;
/// A sentence's own relevance counts this much next to its message's.
const SENTENCE_WEIGHT: f32 = 0.5;

struct Candidate<'a> {
    message: usize,
    text: &'a str,
    clipped: bool,
    cost: usize,
    priority: f32,
    hits: Hits,
    relevance: f32,
}

/// The texts key points are taken from: every message's but tool results'.
pub fn texts<'a>(sources: &[Source<'a>]) -> Vec<Option<Cow<'a, str>>> {
    sources
        .iter()
        .map(|s| (s.message.role != Role::Tool).then(|| text_of(s.message)))
        .collect()
}

/// Every excerpt that may be kept, scored once; [`KeyPoints::write`] then chooses
/// within a budget, as often as the caller needs to fit.
pub(super) struct KeyPoints<'a> {
    candidates: Vec<Candidate<'a>>,
    speakers: Vec<Cow<'a, str>>,
    /// The session header each message belongs to.
    headers: Vec<Option<&'a str>>,
    after_request: Vec<bool>,
    split: bool,
    relevance: bool,
    /// Candidates by relevance (those with any), then by priority.
    by_relevance: Vec<usize>,
    by_priority: Vec<usize>,
}

impl<'a> KeyPoints<'a> {
    /// `texts` are [`texts`] of `sources`, `analyses` theirs too.
    pub(super) fn new(
        sources: &[Source<'a>],
        texts: &'a [Option<Cow<'a, str>>],
        analyses: &[Arc<Analysis>],
        split: bool,
        query: Option<&Query>,
    ) -> KeyPoints<'a> {
        let speakers: Vec<Cow<'a, str>> = sources.iter().map(speaker).collect();
        // The session each message belongs to: the latest header at or before it.
        let mut headers: Vec<Option<&'a str>> = Vec::with_capacity(sources.len());
        let mut current: Option<&'a str> = None;
        for (text, analysis) in texts.iter().zip(analyses) {
            if let Some(h) = text.as_deref().and_then(|t| analysis.header(t)) {
                current = Some(h);
            }
            headers.push(current);
        }
        let n = sources.len().max(2) - 1;
        let mut candidates = Vec::new();
        let mut seen: HashSet<Seen<'a>, BuildHasherDefault<Prehashed>> = HashSet::default();
        let stems = query.map_or(&[][..], Query::hashes);
        let signatures = stems.iter().fold(0, |bits, &s| bits | signature(s));
        for (i, ((s, text), analysis)) in sources.iter().zip(texts).zip(analyses).enumerate() {
            let Some(text) = text.as_deref() else {
                continue;
            };
            if !analysis.fits(text) {
                continue;
            }
            // Capped: images and tool calls count towards the message but not its text.
            let per_byte = (s.tokens as f32 / text.len().max(1) as f32).min(MAX_TOKENS_PER_BYTE);
            // Older messages are condensed harder: their excerpts rank lower.
            let age = 0.4 + 0.8 * (i as f32 / n as f32);
            for excerpt in analysis.excerpts() {
                let Some(piece) = text.get(excerpt.range.clone()) else {
                    continue;
                };
                let new = seen.insert(Seen {
                    hash: excerpt.hash,
                    text: piece,
                });
                if !new {
                    continue;
                }
                let shown = piece.len().min(MAX_EXCERPT);
                candidates.push(Candidate {
                    message: i,
                    text: piece,
                    clipped: piece.len() > MAX_EXCERPT,
                    cost: (shown as f32 * per_byte).ceil() as usize + 1,
                    priority: if excerpt.score == 0 {
                        0.05 * age
                    } else {
                        excerpt.score as f32 * age
                    },
                    hits: Hits {
                        terms: analysis.holds(excerpt, stems, signatures),
                        words: excerpt.words,
                    },
                    relevance: 0.0,
                });
            }
        }
        let mut by_relevance = Vec::new();
        if let Some(query) = query {
            score_relevance(query, sources, &speakers, &mut candidates);
            by_relevance = (0..candidates.len())
                .filter(|&i| candidates[i].relevance > 0.0)
                .collect();
            by_relevance.sort_by(|&a, &b| {
                candidates[b]
                    .relevance
                    .total_cmp(&candidates[a].relevance)
                    .then(candidates[b].priority.total_cmp(&candidates[a].priority))
            });
        }
        let mut by_priority: Vec<usize> = (0..candidates.len()).collect();
        by_priority.sort_by(|&a, &b| candidates[b].priority.total_cmp(&candidates[a].priority));
        KeyPoints {
            candidates,
            speakers,
            headers,
            after_request: sources.iter().map(|s| s.after_request).collect(),
            split,
            relevance: query.is_some(),
            by_relevance,
            by_priority,
        }
    }

    /// Writes the excerpts chosen within `budget` tokens: with a query, the most
    /// relevant first within a share of it, then by priority.
    pub(super) fn write(&self, budget: usize, out: &mut String) {
        let candidates = &self.candidates;
        let mut chosen = vec![false; candidates.len()];
        let mut paid: HashSet<&str> = HashSet::new();
        let mut used = 0;
        let mut take = |i: usize, limit: usize| {
            let c = &candidates[i];
            let header = self.headers[c.message].filter(|h| !paid.contains(h));
            let cost = c.cost + 3 + header.map_or(0, |h| h.len() / 3);
            if !chosen[i] && used + cost <= limit {
                used += cost;
                chosen[i] = true;
                if let Some(h) = header {
                    paid.insert(h);
                }
            }
        };
        let limit = (budget as f32 * RELEVANT_SHARE) as usize;
        for &i in &self.by_relevance {
            take(i, limit);
        }
        for &i in &self.by_priority {
            take(i, budget);
        }
        if !chosen.contains(&true) {
            return;
        }
        out.push_str(if self.relevance {
            "Excerpts (the most relevant to the latest user message, then key points), in order:\n"
        } else {
            "Key points:\n"
        });
        let (split, speakers, headers) = (self.split, &self.speakers, &self.headers);
        let mut current: Option<usize> = None;
        let mut session: Option<&str> = None;
        let mut after = false;
        for (c, _) in candidates
            .iter()
            .zip(&chosen)
            .filter(|(_, chosen)| **chosen)
        {
            let after_request = self.after_request[c.message];
            if current != Some(c.message) {
                if current.is_some() {
                    out.push('\n');
                }
                if split && after_request && !after {
                    out.push_str("After the latest user message:\n");
                    after = true;
                } else if split && current.is_none() && !after_request {
                    out.push_str("Before the latest user message:\n");
                }
                if let Some(h) = headers[c.message].filter(|h| session != Some(*h)) {
                    let _ = writeln!(out, "{h}");
                    session = Some(h);
                }
                let _ = write!(out, "- {}: ", speakers[c.message]);
                current = Some(c.message);
            } else {
                out.push_str(" … ");
            }
            if c.clipped {
                out.push_str(&clip(c.text, MAX_EXCERPT));
            } else {
                out.push_str(c.text);
            }
        }
        out.push('\n');
    }
}

/// Each candidate's relevance: its message's BM25 score in context (scaled to at most
/// 1), plus a share of its own sentence's.
fn score_relevance(
    query: &Query,
    sources: &[Source<'_>],
    speakers: &[Cow<'_, str>],
    candidates: &mut [Candidate<'_>],
) {
    // Per message: its words, and per term how many of its excerpts hold it.
    let mut lengths = vec![0u32; sources.len()];
    let mut counts = vec![0u8; sources.len() * query.len()];
    for c in candidates.iter() {
        lengths[c.message] += c.hits.words;
        add_hits(&mut counts, query.len(), c.message, c.hits.terms);
    }
    // The speaker's name counts as a word of the message ("What did Joanna paint?").
    for (m, name) in speakers.iter().enumerate() {
        if lengths[m] > 0 && dialect::message_name(sources[m].message).is_some() {
            let hits = query.hits(name);
            add_hits(&mut counts, query.len(), m, hits.terms);
        }
    }
    // Messages without text (tool results) are not documents.
    let documents: Vec<usize> = (0..sources.len()).filter(|&m| lengths[m] > 0).collect();
    let doc_lengths: Vec<u32> = documents.iter().map(|&m| lengths[m]).collect();
    let scores = relevance::bm25(query, &doc_lengths, |d, t| {
        u32::from(counts[documents[d] * query.len() + t])
    });
    let mut message = vec![0.0f32; sources.len()];
    for (d, score) in relevance::in_context(&scores).into_iter().enumerate() {
        message[documents[d]] = score;
    }
    let piece_lengths: Vec<u32> = candidates.iter().map(|c| c.hits.words).collect();
    let pieces = relevance::bm25(query, &piece_lengths, |d, t| {
        u32::from(candidates[d].hits.terms & (1 << t) != 0)
    });
    let top = pieces.iter().copied().fold(0.0, f32::max);
    for (c, piece) in candidates.iter_mut().zip(pieces) {
        let own = if top > 0.0 { piece / top } else { 0.0 };
        c.relevance = message[c.message] + SENTENCE_WEIGHT * own;
    }
}

fn add_hits(counts: &mut [u8], terms: usize, message: usize, mask: u64) {
    for t in 0..terms {
        if mask & (1 << t) != 0 {
            let slot = &mut counts[message * terms + t];
            *slot = slot.saturating_add(1);
        }
    }
}

/// Who said it: the message's `name`, else its role.
fn speaker<'a>(source: &Source<'a>) -> Cow<'a, str> {
    match dialect::message_name(source.message) {
        Some(name) if !name.trim().is_empty() && name.len() <= 64 => Cow::Borrowed(name.trim()),
        _ => Cow::Borrowed(source.message.role.as_str()),
    }
}

/// An excerpt's text with the hash its analysis made of it: the set of excerpts already
/// taken compares texts, without hashing them again.
#[derive(PartialEq, Eq)]
struct Seen<'a> {
    hash: u64,
    text: &'a str,
}

impl Hash for Seen<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a hash made earlier through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).rotate_left(5);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}
