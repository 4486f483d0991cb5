//! Where the condensed part goes so that the request stays valid for strict chat
//! templates: roles alternate, and the conversation after the instructions opens
//! with the role it opened with before. Templates such as Mistral's and Gemma's
//! reject two user (or two assistant) messages in a row and a conversation whose
//! first turn is the assistant's; some also reject a `system` message, which is why
//! one is never added.
//!
//! ```text
//!  first kept turn is an assistant's  → [instructions] [user: condensed] [assistant …]
//!  first kept turn is a user's        → [instructions + condensed section] [user …]
//!    …and there are no instructions   → [user: condensed] [assistant: "Noted."] [user …]
//! ```
//!
//! The section appended to the instructions is delimited by its `[thrifty: …]` header,
//! which says it is a record of the conversation, not instructions. This room only
//! decides and splices: it must not count tokens or choose what is condensed.

use crate::chat::{Content, Message, Role};
use crate::dialect;

/// The assistant's turn that closes a condensed user message when a user turn follows.
pub(super) const ACKNOWLEDGEMENT: &str = "Noted.";

/// Where the condensed text goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// Appended to the instruction message at this index.
    Section(usize),
    /// A user message inserted at this index.
    User(usize),
    /// A user message and the assistant's acknowledgement, inserted at this index.
    UserAndAcknowledgement(usize),
}

impl Placement {
    /// Where to put the condensed text in `messages` (the kept ones), whose first
    /// `lead` messages are the leading instructions.
    pub(super) fn choose(messages: &[Message], lead: usize) -> Placement {
        let first = messages[lead..].iter().find(|m| !m.role.is_instruction());
        match first {
            Some(m) if m.role == Role::User && lead > 0 => Placement::Section(lead - 1),
            Some(m) if m.role == Role::User => Placement::UserAndAcknowledgement(0),
            _ => Placement::User(lead),
        }
    }

    /// How many messages it inserts.
    pub(super) fn inserted(self) -> usize {
        match self {
            Placement::Section(_) => 0,
            Placement::User(_) => 1,
            Placement::UserAndAcknowledgement(_) => 2,
        }
    }

    /// Splices `text` into `messages`; returns the indices of the messages it
    /// changed or inserted.
    pub(super) fn apply(self, messages: &mut Vec<Message>, text: String) -> Vec<usize> {
        match self {
            Placement::Section(i) => {
                append_section(&mut messages[i], text);
                vec![i]
            }
            Placement::User(at) => {
                messages.insert(at, Message::text(Role::User, text));
                vec![at]
            }
            Placement::UserAndAcknowledgement(at) => {
                messages.insert(at, Message::text(Role::User, text));
                messages.insert(at + 1, Message::text(Role::Assistant, ACKNOWLEDGEMENT));
                vec![at, at + 1]
            }
        }
    }
}

/// Appends `section` to an instruction message after a blank line, as a text part
/// when its content is a list of parts.
fn append_section(message: &mut Message, section: String) {
    match &mut message.content {
        Content::Text(text) => {
            text.push_str("\n\n");
            text.push_str(&section);
        }
        Content::Parts(parts) => {
            let part = dialect::text_part(section, parts);
            parts.push(part);
        }
        Content::Absent => message.content = Content::Text(section),
    }
}

/// The instruction message's text without an appended section, for checks.
#[cfg(test)]
pub(crate) fn without_section(message: &Message) -> Message {
    let mut message = message.clone();
    match &mut message.content {
        Content::Text(text) => {
            if let Some(at) = text.find("\n\n[thrifty:") {
                text.truncate(at);
            } else if text.starts_with("[thrifty:") {
                message.content = Content::Absent;
            }
        }
        Content::Parts(parts) => {
            parts.retain(|p| !matches!(&p.kind, crate::chat::PartKind::Text(t) if t.starts_with("[thrifty:")));
        }
        Content::Absent => {}
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Part, PartKind};

    fn roles(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(|m| m.role.as_str()).collect()
    }

    fn of(roles: &[Role]) -> Vec<Message> {
        roles
            .iter()
            .map(|r| Message::text(r.clone(), "kept"))
            .collect()
    }

    #[test]
    fn every_shape_keeps_roles_alternating() {
        use Role::{Assistant as A, System as S, User as U};
        for (kept, lead, expected) in [
            (
                vec![S, A, U],
                1,
                vec!["system", "user", "assistant", "user"],
            ),
            (vec![S, U, A], 1, vec!["system", "user", "assistant"]),
            (vec![A, U], 0, vec!["user", "assistant", "user"]),
            (
                vec![U, A],
                0,
                vec!["user", "assistant", "user", "assistant"],
            ),
            (vec![S, S, U], 2, vec!["system", "system", "user"]),
        ] {
            let mut messages = of(&kept);
            let placement = Placement::choose(&messages, lead);
            let changed = placement.apply(&mut messages, "[thrifty: 3 earlier]".to_owned());
            assert_eq!(roles(&messages), expected, "{kept:?}");
            assert_eq!(changed.len(), placement.inserted().max(1));
        }
    }

    #[test]
    fn a_section_is_appended_to_text_or_parts_and_can_be_taken_off() {
        let mut text = Message::text(Role::System, "Be brief.");
        append_section(&mut text, "[thrifty: 3 earlier]".to_owned());
        assert_eq!(text.flat_text(), "Be brief.\n\n[thrifty: 3 earlier]");
        assert_eq!(
            without_section(&text),
            Message::text(Role::System, "Be brief.")
        );

        let part = Part {
            kind: PartKind::Text("Be brief.".to_owned()),
            raw: serde_json::json!({"type": "text", "text": "Be brief."}),
        };
        let original = Message {
            content: Content::Parts(vec![part]),
            ..Message::text(Role::System, "")
        };
        let mut parts = original.clone();
        append_section(&mut parts, "[thrifty: 3 earlier]".to_owned());
        assert!(parts.flat_text().ends_with("[thrifty: 3 earlier]"));
        assert_eq!(without_section(&parts), original);
    }
}
