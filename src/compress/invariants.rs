//! The invariants every compressed request must keep, as one checker shared by the
//! compressor's tests and `eval`'s: instructions verbatim and in place (one of them may
//! carry the condensed section after its own text), the recent tail verbatim, the
//! latest user message kept, no orphaned tool result and no call without its result,
//! at most one condensed part, in a plain user message or an instruction's section,
//! and roles that alternate wherever compression joined messages.
//! Test-only: the compressor keeps these by construction.

use crate::chat::{ChatRequest, Content, Message, Role};

use super::placement::{ACKNOWLEDGEMENT, without_section};

/// Checks the invariants every compressed request must keep.
pub(crate) fn check_invariants(
    before: &ChatRequest,
    after: &ChatRequest,
    recent: usize,
    verbatim_tail: bool,
) -> Result<(), String> {
    let (b, a) = (&before.messages, &after.messages);
    let instructions = |ms: &[Message]| -> Vec<Message> {
        ms.iter()
            .filter(|m| m.role.is_instruction())
            .map(without_section)
            .collect()
    };
    if instructions(b) != instructions(a) {
        return Err("system/developer messages changed".to_owned());
    }
    let lead = b.iter().take_while(|m| m.role.is_instruction()).count();
    let leading: Vec<Message> = a.iter().take(lead).map(without_section).collect();
    if b.get(..lead) != Some(&leading[..]) {
        return Err("leading instructions moved".to_owned());
    }
    let sections = a
        .iter()
        .filter(|m| m.role.is_instruction() && without_section(m) != **m)
        .count();
    if sections > 1 || (sections == 1 && b.iter().any(|m| m.flat_text().contains("[thrifty:"))) {
        return Err("more than one condensed section".to_owned());
    }
    roles_alternate(b, a)?;
    if let Some(u) = b.iter().rposition(|m| m.role == Role::User) {
        if !a.contains(&b[u]) {
            return Err("the latest user message was altered or dropped".to_owned());
        }
    }
    if verbatim_tail {
        let n = recent.min(b.len());
        if a.len() < n || a[a.len() - n..] != b[b.len() - n..] {
            return Err(format!("the last {n} messages are not verbatim"));
        }
    }
    for (i, m) in a.iter().enumerate() {
        if m.role == Role::Tool {
            let owner = a[..i].iter().rposition(|p| p.role != Role::Tool);
            let Some(owner) = owner.filter(|&j| !a[j].tool_calls.is_empty()) else {
                return Err(format!("orphaned tool result at {i}"));
            };
            if let Some(id) = &m.tool_call_id {
                if !a[owner]
                    .tool_calls
                    .iter()
                    .any(|c| c.id.as_ref() == Some(id))
                {
                    return Err(format!(
                        "tool result {i} answers no call of message {owner}"
                    ));
                }
            }
        }
        if !m.tool_calls.is_empty() {
            let results: Vec<&Message> = a[i + 1..]
                .iter()
                .take_while(|r| r.role == Role::Tool)
                .collect();
            if results.len() < m.tool_calls.len() {
                return Err(format!("calls of message {i} lack results"));
            }
            for c in m.tool_calls.iter().filter_map(|c| c.id.as_ref()) {
                if !results.iter().any(|r| r.tool_call_id.as_ref() == Some(c)) {
                    return Err(format!("call {c} of message {i} has no result"));
                }
            }
        }
    }
    // A section of an instruction is counted above, even one that is all its content.
    let condensed: Vec<&Message> = a
        .iter()
        .filter(|m| !m.role.is_instruction() && m.flat_text().starts_with("[thrifty:"))
        .collect();
    if condensed.len() + sections > 1 {
        return Err("more than one condensed message".to_owned());
    }
    if let Some(c) = condensed.first() {
        if c.role != Role::User
            || !matches!(c.content, Content::Text(_))
            || !c.tool_calls.is_empty()
        {
            return Err("the condensed message is not a plain user message".to_owned());
        }
    }
    Ok(())
}

/// Two user or two assistant messages in a row only where the client sent them in a
/// row, and the conversation after the instructions opens with a user turn whenever
/// the client's did.
fn roles_alternate(before: &[Message], after: &[Message]) -> Result<(), String> {
    let talk = |ms: &[Message]| -> Vec<Message> {
        ms.iter()
            .filter(|m| !m.role.is_instruction())
            .cloned()
            .collect()
    };
    let (b, a) = (talk(before), talk(after));
    if b.first().is_some_and(|m| m.role == Role::User)
        && a.first().is_some_and(|m| m.role != Role::User)
    {
        return Err(format!(
            "the conversation now opens with {}",
            a[0].role.as_str()
        ));
    }
    for (i, pair) in a.windows(2).enumerate() {
        let same =
            pair[0].role == pair[1].role && matches!(pair[0].role, Role::User | Role::Assistant);
        let written = |m: &Message| {
            m.flat_text().starts_with("[thrifty:")
                || (m.role == Role::Assistant && m.flat_text() == ACKNOWLEDGEMENT)
        };
        if same
            && (written(&pair[0])
                || written(&pair[1])
                || !b.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1]))
        {
            return Err(format!(
                "messages {i} and {} are both {} and were not adjacent",
                i + 1,
                pair[0].role.as_str()
            ));
        }
    }
    Ok(())
}
