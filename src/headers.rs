//! Header hygiene between downstream and upstream (RFC 9110 §7.6.1 hop-by-hop fields).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Header names that belong to thrifty itself and never travel upstream.
pub const THRIFTY_PREFIX: &str = "x-thrifty-";

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
