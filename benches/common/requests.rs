//! The requests the benchmarks send, shared by `proxy.rs` and `instructions.rs`.

/// A small chat request: a short system prompt and question.
pub const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a terse assistant."},{"role":"user","content":"Summarise the benefits of connection pooling for an HTTP reverse proxy in one sentence, please."}],"temperature":0.2,"max_tokens":64}"#;

/// The system prompt of the default-configuration scenarios.
pub const SUPPORT_PROMPT: &str =
    "You are a support assistant for an online bookshop. Answer in two sentences at most.";

/// The user's message of the default-configuration miss scenarios after "Ticket N. ": with
/// it, about 1,000 characters (some 200 word pieces, over `semantic.max_question_tokens`).
pub const LONG_MESSAGE: &str = "I ordered three paperback novels and a hardcover atlas from your \
    shop last week, paid by card, and received a confirmation email with a delivery estimate \
    of four to six working days. The tracking page has said that the label was created since \
    Monday, and nothing has changed since then. I contacted the courier, who told me they \
    never received the parcel from your warehouse, so they cannot tell me anything more. \
    Meanwhile my card was charged the full amount, including the express shipping fee that I \
    chose because the atlas is a birthday present for my father. His birthday is on Saturday, \
    so I need to know whether the parcel will arrive in time, and if not, whether you can send \
    the atlas separately by courier or refund the express fee. I would also like to know how \
    your returns work for the novels in case they arrive after I have bought them elsewhere. \
    Please tell me what you can do and what you need from me. Thank you for your help.";

/// A chat with [`SUPPORT_PROMPT`] whose user message is `before`, then the request number
/// goes between the two parts returned; `options` go before the messages.
pub fn support_parts(options: &str, before: &str, after: &str) -> (String, String) {
    (
        format!(
            r#"{{"model":"gpt-4o-mini",{options}"messages":[{{"role":"system","content":"{SUPPORT_PROMPT}"}},{{"role":"user","content":"{before}"#
        ),
        format!(r#"{after}"}}],"temperature":0.2,"max_tokens":64}}"#),
    )
}

/// The long-message miss numbered `n`: a question nobody asked before.
pub fn long_question(n: u64) -> String {
    let (head, tail) = support_parts("", "Ticket ", &format!(". {LONG_MESSAGE}"));
    format!("{head}{n}{tail}")
}
