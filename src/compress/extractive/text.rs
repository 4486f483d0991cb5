//! Text helpers shared by the extractive strategy and the summarizer's prompt:
//! clipping at character boundaries.

use std::borrow::Cow;

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
