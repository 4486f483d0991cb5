//! `[cache]` and `[store]`: what is cached, for how long, and where.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use super::{ConfigError, Env};
use crate::secret::Secret;
use crate::store::StoreConfig;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    pub share_across_tenants: bool,
    pub max_temperature: Option<f64>,
    pub encryption_key_env: Option<String>,
    pub max_entry_bytes: usize,
    pub hot_bytes: u64,
    pub model_ttl: Vec<RawModelTtl>,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            enabled: true,
            ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
            share_across_tenants: false,
            max_temperature: None,
            encryption_key_env: None,
            max_entry_bytes: 8 * 1024 * 1024,
            hot_bytes: 64 * 1024 * 1024,
            model_ttl: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelTtl {
    pub model: String,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub data_dir: PathBuf,
    pub memory_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub bulk_timeout: Duration,
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_backoff: Duration,
    pub redis_cluster: bool,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            data_dir: PathBuf::from("data"),
            memory_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_millis(100),
            bulk_timeout: Duration::from_secs(10),
            breaker_failures: 5,
            breaker_backoff: Duration::from_secs(1),
            redis_cluster: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub enabled: bool,
    pub ttl: Duration,
    pub max_ttl: Duration,
    pub share_across_tenants: bool,
    pub max_temperature: Option<f64>,
    pub encryption_key: Option<Secret<[u8; 32]>>,
    pub max_entry_bytes: usize,
    /// Decoded answers kept in process in front of the store (their sealed size).
    pub hot_bytes: u64,
    pub model_ttl: Vec<(GlobMatcher, Duration)>,
}

impl CacheConfig {
    /// The time to live for a model's entries.
    pub fn ttl_for(&self, model: &str) -> Duration {
        self.model_ttl
            .iter()
            .find(|(glob, _)| glob.is_match(model))
            .map_or(self.ttl, |(_, ttl)| *ttl)
            .min(self.max_ttl)
    }
}

pub fn validate_cache(raw: RawCache, env: &Env<'_>) -> Result<CacheConfig, ConfigError> {
    if raw.ttl.is_zero() || raw.max_ttl.is_zero() {
        return Err(ConfigError::invalid("cache.ttl", "durations above zero"));
    }
    if raw.max_ttl < raw.ttl {
        return Err(ConfigError::invalid("cache.max_ttl", "at least cache.ttl"));
    }
    let encryption_key = match &raw.encryption_key_env {
        None => None,
        Some(var) => {
            let value = env(var).unwrap_or_default();
            let mut key = [0u8; 32];
            hex::decode_to_slice(value.trim(), &mut key).map_err(|_| {
                ConfigError::invalid(
                    "cache.encryption_key_env",
                    &format!("{var} to hold 64 hex digits (a 256-bit key)"),
                )
            })?;
            Some(Secret::new(key))
        }
    };
    let mut model_ttl = Vec::new();
    for (i, entry) in raw.model_ttl.into_iter().enumerate() {
        let glob = Glob::new(&entry.model).map_err(|e| {
            ConfigError::invalid(
                format!("cache.model_ttl[{i}].model"),
                &format!("a model glob ({e})"),
            )
        })?;
        model_ttl.push((glob.compile_matcher(), entry.ttl));
    }
    Ok(CacheConfig {
        enabled: raw.enabled,
        ttl: raw.ttl,
        max_ttl: raw.max_ttl,
        share_across_tenants: raw.share_across_tenants,
        max_temperature: raw.max_temperature,
        encryption_key,
        max_entry_bytes: raw.max_entry_bytes,
        hot_bytes: raw.hot_bytes,
        model_ttl,
    })
}

pub fn validate_store(raw: RawStore, env: &Env<'_>) -> Result<StoreConfig, ConfigError> {
    if raw.timeout.is_zero() {
        return Err(ConfigError::invalid(
            "store.timeout",
            "a duration above zero",
        ));
    }
    let breaker_failures = NonZeroU32::new(raw.breaker_failures)
        .ok_or_else(|| ConfigError::invalid("store.breaker_failures", "a count above zero"))?;
    if raw.breaker_backoff.is_zero() {
        return Err(ConfigError::invalid(
            "store.breaker_backoff",
            "a duration above zero",
        ));
    }
    Ok(StoreConfig {
        data_dir: raw.data_dir,
        memory_bytes: raw.memory_bytes,
        timeout: raw.timeout,
        // A request-path timeout above the default bulk one raises the bulk one with it.
        bulk_timeout: raw.bulk_timeout.max(raw.timeout),
        breaker_failures,
        breaker_backoff: raw.breaker_backoff,
        redis_url: env("THRIFTY_REDIS_URL")
            .filter(|v| !v.is_empty())
            .map(Secret::new),
        redis_cluster: raw.redis_cluster,
    })
}
