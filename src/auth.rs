//! Client authentication and the tenant id every later stage isolates and accounts by.
//!
//! An upstream with its own key (`api_key_env`) only serves clients holding one of
//! thrifty's keys; otherwise the client's `Authorization` goes upstream untouched.
//! A tenant id is a key's configured name or a hash of the bearer token, never a token.

use std::collections::HashMap;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use crate::config::{ApiKey, RateLimit, Upstream};
use crate::digest;
use crate::error::ProxyError;

/// Who a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Stable id used in cache scopes and reports: a key name, `anon-<hash>` or `anonymous`.
    pub id: String,
    /// The configured key's name, when the client used one of thrifty's keys.
    pub key_name: Option<String>,
    pub team: Option<String>,
    /// The key's own rate limit, overriding the global one.
    pub rate_limit: Option<RateLimit>,
}

/// How the upstream request is authorised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// Forward the client's `Authorization` as sent.
    PassThrough,
    /// Replace it with the upstream's configured key.
    Inject,
}

pub struct Authenticator {
    keys: HashMap<[u8; 32], ApiKey>,
}

impl Authenticator {
    pub fn new(keys: &[ApiKey]) -> Self {
        Authenticator {
            keys: keys.iter().map(|k| (k.sha256, k.clone())).collect(),
        }
    }

    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        upstream: &Upstream,
    ) -> Result<(Tenant, UpstreamAuth), ProxyError> {
        let token = bearer_token(headers);
        let digest: Option<[u8; 32]> = token.map(|t| Sha256::digest(t.as_bytes()).into());
        let known = digest.as_ref().and_then(|d| self.keys.get(d));
        if upstream.api_key.is_some() {
            let key = known.ok_or_else(|| {
                ProxyError::Unauthorized(if token.is_some() {
                    "incorrect API key provided".to_owned()
                } else {
                    "you didn't provide an API key: send it as 'Authorization: Bearer <key>'"
                        .to_owned()
                })
            })?;
            return Ok((tenant_of(key), UpstreamAuth::Inject));
        }
        let tenant = match (known, digest) {
            (Some(key), _) => tenant_of(key),
            (None, Some(digest)) => Tenant {
                id: format!("anon-{}", digest::hex(&digest[..12])),
                key_name: None,
                team: None,
                rate_limit: None,
            },
            (None, None) => Tenant {
                id: "anonymous".to_owned(),
                key_name: None,
                team: None,
                rate_limit: None,
            },
        };
        Ok((tenant, UpstreamAuth::PassThrough))
    }
}

fn tenant_of(key: &ApiKey) -> Tenant {
    Tenant {
        id: key.name.clone(),
        key_name: Some(key.name.clone()),
        team: key.team.clone(),
        rate_limit: key.rate_limit,
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The lowercase hex SHA-256 of a key, as `[[keys]] sha256` expects it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::chat::Dialect;
    use crate::secret::Secret;

    fn upstream(with_key: bool) -> Upstream {
        Upstream {
            name: "u".to_owned(),
            base_url: "http://x".to_owned(),
            dialect: Dialect::OpenAi,
            api_key: with_key.then(|| Secret::new("sk-upstream".to_owned())),
            connect_timeout: Duration::from_secs(1),
            first_byte_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }
    }

    fn auth() -> Authenticator {
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(hash_key("tk-team-a"), &mut sha256).expect("hex");
        Authenticator::new(&[ApiKey {
            name: "app-a".to_owned(),
            team: Some("team-a".to_owned()),
            sha256,
            rate_limit: None,
        }])
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        h
    }

    #[test]
    fn injected_upstream_key_requires_a_known_client_key() {
        let (tenant, mode) = auth()
            .authenticate(&bearer("tk-team-a"), &upstream(true))
            .expect("known key");
        assert_eq!(tenant.id, "app-a");
        assert_eq!(tenant.team.as_deref(), Some("team-a"));
        assert_eq!(mode, UpstreamAuth::Inject);
        let err = auth()
            .authenticate(&bearer("sk-other"), &upstream(true))
            .expect_err("unknown key");
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
        assert!(!err.to_string().contains("sk-other"));
    }

    #[test]
    fn passthrough_tenants_are_hashes_never_tokens() {
        let (tenant, mode) = auth()
            .authenticate(&bearer("sk-secret-value"), &upstream(false))
            .expect("passes");
        assert_eq!(mode, UpstreamAuth::PassThrough);
        assert!(tenant.id.starts_with("anon-"));
        assert!(!tenant.id.contains("secret"));
        let (anon, _) = auth()
            .authenticate(&HeaderMap::new(), &upstream(false))
            .expect("passes");
        assert_eq!(anon.id, "anonymous");
    }
}
