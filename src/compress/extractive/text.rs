//! Text helpers shared by the extractive strategy and the summarizer's prompt:
//! clipping at character boundaries, and a hasher for maps of words.

use std::borrow::Cow;
use std::hash::Hasher;

use crate::chat::Message;

/// A message's text, borrowed when it is plain text.
pub(super) fn text_of(m: &Message) -> Cow<'_, str> {
    match &m.content {
        crate::chat::Content::Text(t) => Cow::Borrowed(t),
        _ => Cow::Owned(m.flat_text()),
    }
}

/// The text cut to at most `max` bytes at a character boundary, with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let end = floor_boundary(text, max.saturating_sub(3));
    format!("{}…", text[..end].trim_end())
}

pub fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

pub fn ceil_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// FNV-1a, for maps of words: words are a few bytes long, where it beats SipHash many
/// times over. Only for fixed tables, or maps of one message's words, whose worst case
/// the message's length bounds.
#[derive(Default)]
pub(super) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}
