//! An upstream answer read once when its body ends, for everything that learns from it: the
//! savings record (its usage, or its text to count) and the cache's recorder (the whole answer,
//! when it is a complete success).

use serde_json::Value;

use super::{stream, usage};
use crate::chat::{Dialect, Endpoint, Tokens};

/// What an answer's bytes hold, parsed once.
#[derive(Debug)]
pub struct Observed {
    pub dialect: Dialect,
    pub streamed: bool,
    /// The body, or every event of the stream that parsed.
    pub values: Vec<Value>,
    /// A complete success: a JSON answer with its finish, or a stream that ended cleanly.
    pub complete: bool,
}

/// Reads an answer's bytes as the dialect and endpoint write them.
pub fn observe(dialect: Dialect, endpoint: Endpoint, streamed: bool, bytes: &[u8]) -> Observed {
    let read = stream::read(dialect, streamed, bytes);
    let complete = if streamed {
        stream::is_whole_stream(dialect, endpoint, &read)
    } else {
        read.all_parsed
            && read
                .values
                .first()
                .is_some_and(|v| stream::is_complete(dialect, endpoint, v))
    };
    Observed {
        dialect,
        streamed,
        values: read.values,
        complete,
    }
}

impl Observed {
    /// The usage the upstream reported; a truncated stream still yields what it reported.
    pub fn usage(&self) -> Option<Tokens> {
        usage::from_chunks(self.dialect, &self.values)
    }

    /// The text the answer holds, for counting its tokens when no usage was reported.
    pub fn text(&self) -> String {
        usage::text_of(self.dialect, &self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_stream_is_complete_and_a_cut_one_still_reports_what_arrived() {
        let whole = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
                     data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                     data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n\
                     data: [DONE]\n\n";
        let seen = observe(Dialect::OpenAi, Endpoint::Chat, true, whole.as_bytes());
        assert!(seen.complete);
        assert_eq!(seen.values.len(), 3);
        assert_eq!(seen.usage().map(|u| (u.prompt, u.completion)), Some((5, 1)));
        assert_eq!(seen.text(), "Hi");
        let cut = &whole[..whole.find("data: [DONE]").unwrap_or(0) - 10];
        let seen = observe(Dialect::OpenAi, Endpoint::Chat, true, cut.as_bytes());
        assert!(!seen.complete, "no [DONE], a cut-off last event");
        assert_eq!(seen.text(), "Hi");
    }

    #[test]
    fn a_json_answer_is_complete_only_with_its_finish() {
        let done = br#"{"model":"m","message":{"role":"assistant","content":"Yes"},"done":true,"prompt_eval_count":3,"eval_count":1}"#;
        let seen = observe(Dialect::Ollama, Endpoint::Chat, false, done);
        assert!(seen.complete);
        assert_eq!(seen.usage().map(|u| (u.prompt, u.completion)), Some((3, 1)));
        let open = br#"{"model":"m","message":{"role":"assistant","content":"Ye"},"done":false}"#;
        assert!(!observe(Dialect::Ollama, Endpoint::Chat, false, open).complete);
        assert!(!observe(Dialect::Ollama, Endpoint::Chat, false, b"{not json").complete);
    }
}
