//! Header hygiene between downstream and upstream (RFC 9110 §7.6.1 hop-by-hop fields).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Header names that belong to thrifty itself and never travel upstream.
pub const THRIFTY_PREFIX: &str = "x-thrifty-";

/// The header names thrifty reads and writes, in one place.
pub mod names {
    /// The request id: the upstream's when it answered, else thrifty's.
    pub const REQUEST_ID: &str = "x-request-id";
    /// Thrifty's own id of the request, on every response.
    pub const THRIFTY_REQUEST_ID: &str = "x-thrifty-request-id";
    /// Request: `on|off`. Response: how the call was answered (`hit`, `semantic-hit`, `miss`, …).
    pub const CACHE: &str = "x-thrifty-cache";
    /// Response: the short cache key of the answer.
    pub const CACHE_KEY: &str = "x-thrifty-cache-key";
    /// Response: seconds since a replayed answer was recorded.
    pub const CACHE_AGE: &str = "x-thrifty-cache-age";
    /// Response: inputs of an embedding batch answered from the cache, as `hits/total`.
    pub const CACHE_HITS: &str = "x-thrifty-cache-hits";
    /// Request: seconds the answer is kept.
    pub const CACHE_TTL: &str = "x-thrifty-cache-ttl";
    /// Request: the cache namespace the call reads and writes.
    pub const CACHE_NAMESPACE: &str = "x-thrifty-cache-namespace";
    /// Request: tags the recorded answer carries, for invalidation.
    pub const CACHE_TAGS: &str = "x-thrifty-cache-tags";
    /// Request: `on|off` for the semantic stage.
    pub const SEMANTIC: &str = "x-thrifty-semantic";
    /// Request: the least similarity a semantic hit may have.
    pub const SEMANTIC_THRESHOLD: &str = "x-thrifty-semantic-threshold";
    /// Response: a semantic hit's similarity to the recorded question.
    pub const SIMILARITY: &str = "x-thrifty-similarity";
    /// Response: a verified semantic hit's lower bound and observations.
    pub const CONFIDENCE: &str = "x-thrifty-confidence";
    /// Request: `off|force`. Response: prompt tokens `before->after`.
    pub const COMPRESSION: &str = "x-thrifty-compression";
    /// Response: the upstream that answered.
    pub const UPSTREAM: &str = "x-thrifty-upstream";
    /// Response: tokens the call did not bill.
    pub const TOKENS_SAVED: &str = "x-thrifty-tokens-saved";
    /// Response: the cost the call did not bill, net of thrifty's own.
    pub const COST_SAVED: &str = "x-thrifty-cost-saved";
    /// Request: tags the savings record carries.
    pub const TAGS: &str = "x-thrifty-tags";
    /// Request: names the conversation whose summary is kept.
    pub const CHAT_ID: &str = "x-thrifty-chat-id";
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Drops hop-by-hop fields, including any the `Connection` field names, and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The client's headers as they may be sent upstream.
pub fn upstream_request(client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let own: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(THRIFTY_PREFIX))
        .cloned()
        .collect();
    for name in own {
        headers.remove(name);
    }
    headers
}

/// The upstream's headers as they may be sent to the client.
pub fn downstream_response(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = upstream.clone();
    strip_hop_by_hop(&mut headers);
    headers
}

/// What a response tells its client about how thrifty answered it: the `x-thrifty-*` labels
/// the stages gather on the way, written in one place on the way out.
#[derive(Debug, Default)]
pub struct Labels {
    /// How the call was answered (`hit`, `semantic-hit`, `miss`, `bypass`, …).
    pub cache: Option<&'static str>,
    pub cache_key: Option<String>,
    /// Seconds since a replayed answer was recorded.
    pub cache_age_secs: Option<u64>,
    /// An embedding batch's inputs answered from the cache, and all its inputs.
    pub cache_hits: Option<(usize, usize)>,
    pub similarity: Option<f32>,
    pub confidence: Option<String>,
    /// Prompt tokens before and after compression (`before->after`).
    pub compression: Option<String>,
    pub tokens_saved: Option<u64>,
    pub cost_saved: Option<String>,
}

impl Labels {
    /// Writes every label set, replacing any header of the same name.
    pub fn write(&self, h: &mut HeaderMap) {
        let mut put = |name: &'static str, value: Option<String>| {
            if let Some(value) = value {
                set(h, name, &value);
            }
        };
        put(names::CACHE, self.cache.map(str::to_owned));
        put(names::CACHE_KEY, self.cache_key.clone());
        put(names::CACHE_AGE, self.cache_age_secs.map(|s| s.to_string()));
        put(
            names::CACHE_HITS,
            self.cache_hits.map(|(hits, all)| format!("{hits}/{all}")),
        );
        put(
            names::SIMILARITY,
            self.similarity.map(|s| format!("{s:.4}")),
        );
        put(names::CONFIDENCE, self.confidence.clone());
        put(names::COMPRESSION, self.compression.clone());
        put(
            names::TOKENS_SAVED,
            self.tokens_saved.map(|t| t.to_string()),
        );
        put(names::COST_SAVED, self.cost_saved.clone());
    }

    /// The response with these labels written.
    pub fn written<B>(&self, mut response: http::Response<B>) -> http::Response<B> {
        self.write(response.headers_mut());
        response
    }
}

/// Sets a header from a string, skipping values that are not valid header text.
pub fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_own_headers_do_not_travel() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "thrifty.local"),
            ("te", "trailers"),
            ("x-thrifty-cache", "off"),
            ("authorization", "Bearer sk-1"),
            ("openai-organization", "org-1"),
        ] {
            client.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let up = upstream_request(&client);
        let mut names: Vec<&str> = up.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "openai-organization"]);
    }
}
