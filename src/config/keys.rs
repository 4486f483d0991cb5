//! `[[keys]]`: thrifty's own client keys, stored as SHA-256 hashes, and `[rate_limit]`.

use std::num::NonZeroU32;

use serde::Deserialize;

use super::ConfigError;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// The key's name, used as its tenant id in caches and reports.
    pub name: String,
    #[serde(default)]
    pub team: Option<String>,
    /// Lowercase hex SHA-256 of the key (`thrifty hash-key` prints it).
    pub sha256: String,
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests_per_minute: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Clone, Debug)]
pub struct ApiKey {
    pub name: String,
    pub team: Option<String>,
    pub sha256: [u8; 32],
    pub rate_limit: Option<RateLimit>,
}

pub fn validate_rate_limit(
    raw: Option<RawRateLimit>,
    key: &str,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let per_minute = NonZeroU32::new(raw.requests_per_minute).ok_or_else(|| {
        ConfigError::invalid(format!("{key}.requests_per_minute"), "a number above zero")
    })?;
    let burst = match raw.burst {
        None => per_minute,
        Some(b) => NonZeroU32::new(b)
            .ok_or_else(|| ConfigError::invalid(format!("{key}.burst"), "a number above zero"))?,
    };
    Ok(Some(RateLimit { per_minute, burst }))
}

pub fn validate_keys(raw: Vec<RawKey>) -> Result<Vec<ApiKey>, ConfigError> {
    let mut keys: Vec<ApiKey> = Vec::with_capacity(raw.len());
    for (i, key) in raw.into_iter().enumerate() {
        let path = format!("keys[{i}]");
        if key.name.is_empty() || keys.iter().any(|k| k.name == key.name) {
            return Err(ConfigError::invalid(
                format!("{path}.name"),
                "a unique non-empty name",
            ));
        }
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(key.sha256.trim(), &mut sha256).map_err(|_| {
            ConfigError::invalid(
                format!("{path}.sha256"),
                "64 hex digits (see `thrifty hash-key`)",
            )
        })?;
        keys.push(ApiKey {
            rate_limit: validate_rate_limit(key.rate_limit, &format!("{path}.rate_limit"))?,
            name: key.name,
            team: key.team,
            sha256,
        });
    }
    Ok(keys)
}
