//! Per-request cache controls from headers; none of them travel upstream.
//!
//! `cache-control: no-cache | no-store | max-age=N`, `x-thrifty-cache: off`,
//! `x-thrifty-cache-ttl`, `x-thrifty-cache-namespace`, `x-thrifty-cache-tags`.

use std::time::Duration;

use http::HeaderMap;

use crate::error::ProxyError;
use crate::headers::names;

/// Whether a request reads and writes the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Look up, and store on a miss.
    Normal,
    /// `no-cache`: skip the lookup, store the fresh answer.
    Refresh,
    /// `no-store`: look up, never store.
    ReadOnly,
    /// `no-cache, no-store`: neither.
    Bypass,
    /// `x-thrifty-cache: off`, or the cache is disabled.
    Off,
}

impl CacheMode {
    pub fn read(self) -> bool {
        matches!(self, CacheMode::Normal | CacheMode::ReadOnly)
    }

    pub fn write(self) -> bool {
        matches!(self, CacheMode::Normal | CacheMode::Refresh)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Controls {
    pub mode: CacheMode,
    pub max_age: Option<Duration>,
    pub ttl: Option<Duration>,
    pub namespace: Option<String>,
    pub tags: Vec<String>,
    /// `x-thrifty-semantic: off` turns the semantic stage off for this request.
    pub semantic: bool,
    /// `x-thrifty-semantic-threshold`: may only raise the configured threshold.
    pub semantic_threshold: Option<f32>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ProxyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ProxyError::bad_request(format!("header {name} is not valid text"))),
    }
}

fn seconds(value: &str, name: &str) -> Result<Duration, ProxyError> {
    value
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| ProxyError::bad_request(format!("{name} must be a whole number of seconds")))
}

/// Names (namespaces, tags) are short and plain, so they are safe in logs and keys.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
}

impl Controls {
    pub fn from_headers(headers: &HeaderMap) -> Result<Controls, ProxyError> {
        let mut no_cache = false;
        let mut no_store = false;
        let mut max_age = None;
        if let Some(value) = header(headers, "cache-control")? {
            for directive in value.split(',').map(str::trim) {
                let lower = directive.to_ascii_lowercase();
                if lower == "no-cache" {
                    no_cache = true;
                } else if lower == "no-store" {
                    no_store = true;
                } else if let Some(n) = lower.strip_prefix("max-age=") {
                    max_age = Some(seconds(n, "cache-control max-age")?);
                }
            }
        }
        let off = match header(headers, names::CACHE)? {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("off") => true,
            Some(v) if v.eq_ignore_ascii_case("on") => false,
            Some(_) => return Err(ProxyError::bad_request("x-thrifty-cache must be on or off")),
        };
        let mode = match (off, no_cache, no_store) {
            (true, _, _) => CacheMode::Off,
            (false, true, true) => CacheMode::Bypass,
            (false, true, false) => CacheMode::Refresh,
            (false, false, true) => CacheMode::ReadOnly,
            (false, false, false) => CacheMode::Normal,
        };
        let ttl = match header(headers, names::CACHE_TTL)? {
            Some(v) => {
                let ttl = seconds(v, names::CACHE_TTL)?;
                if ttl.is_zero() {
                    return Err(ProxyError::bad_request(
                        "x-thrifty-cache-ttl must be above zero",
                    ));
                }
                Some(ttl)
            }
            None => None,
        };
        let namespace = match header(headers, names::CACHE_NAMESPACE)? {
            Some(ns) if valid_name(ns) => Some(ns.to_owned()),
            Some(_) => {
                return Err(ProxyError::bad_request(
                    "x-thrifty-cache-namespace must be 1-64 characters of [A-Za-z0-9._:/-]",
                ));
            }
            None => None,
        };
        let tags = match header(headers, names::CACHE_TAGS)? {
            Some(list) => {
                let tags: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = tags.iter().find(|t| !valid_name(t)) {
                    return Err(ProxyError::bad_request(format!(
                        "cache tag '{bad}' must be 1-64 characters of [A-Za-z0-9._:/-]"
                    )));
                }
                tags
            }
            None => Vec::new(),
        };
        let semantic = match header(headers, names::SEMANTIC)? {
            None => true,
            Some(v) if v.eq_ignore_ascii_case("off") => false,
            Some(v) if v.eq_ignore_ascii_case("on") => true,
            Some(_) => {
                return Err(ProxyError::bad_request(
                    "x-thrifty-semantic must be on or off",
                ));
            }
        };
        let semantic_threshold = match header(headers, names::SEMANTIC_THRESHOLD)? {
            None => None,
            Some(v) => match v.parse::<f32>() {
                Ok(t) if (0.0..=1.0).contains(&t) => Some(t),
                _ => {
                    return Err(ProxyError::bad_request(
                        "x-thrifty-semantic-threshold must be a number between 0 and 1",
                    ));
                }
            },
        };
        Ok(Controls {
            mode,
            max_age,
            ttl,
            namespace,
            tags,
            semantic,
            semantic_threshold,
        })
    }
}

/// Whether `tag` falls under `selector`: equal, or below it in the `a:b:c` hierarchy.
pub fn tag_matches(selector: &str, tag: &str) -> bool {
    tag == selector
        || tag
            .strip_prefix(selector)
            .is_some_and(|rest| rest.starts_with(':'))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn controls(pairs: &[(&'static str, &'static str)]) -> Result<Controls, ProxyError> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        Controls::from_headers(&h)
    }

    #[test]
    fn cache_control_directives_map_to_modes() {
        assert_eq!(controls(&[]).expect("ok").mode, CacheMode::Normal);
        assert_eq!(
            controls(&[("cache-control", "no-cache")]).expect("ok").mode,
            CacheMode::Refresh
        );
        assert_eq!(
            controls(&[("cache-control", "no-store")]).expect("ok").mode,
            CacheMode::ReadOnly
        );
        assert_eq!(
            controls(&[("x-thrifty-cache", "off")]).expect("ok").mode,
            CacheMode::Off
        );
        let c = controls(&[
            ("cache-control", "max-age=30"),
            ("x-thrifty-cache-tags", "a, team:x"),
        ])
        .expect("ok");
        assert_eq!(c.max_age, Some(Duration::from_secs(30)));
        assert_eq!(c.tags, ["a", "team:x"]);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(controls(&[("x-thrifty-cache-ttl", "soon")]).is_err());
        assert!(controls(&[("x-thrifty-cache-namespace", "has space")]).is_err());
        assert!(controls(&[("cache-control", "max-age=-1")]).is_err());
    }

    #[test]
    fn tags_are_hierarchical() {
        assert!(tag_matches("team", "team:x"));
        assert!(tag_matches("team", "team"));
        assert!(!tag_matches("team", "teams"));
        assert!(!tag_matches("team:x", "team"));
    }
}
