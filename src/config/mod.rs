//! Configuration: a TOML file parsed into a raw serde shape, environment overrides
//! applied, then validated into the typed `Config` the rest of thrifty reads.
//!
//! This is the only module that reads the environment. Errors name the bad key.

mod cache;
mod compression;
mod keys;
pub mod models;
mod savings;
mod semantic;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::store::StoreConfig;
pub use cache::{CacheConfig, RawCache, RawModelTtl, RawStore};
pub use compression::*;
pub use keys::{ApiKey, RateLimit, RawKey, RawRateLimit};
pub use models::{Encoding, ModelTable};
pub use savings::{RawSavings, SavingsConfig};
pub use semantic::{
    ContextRule, DEFAULT_THREADS, RawSemantic, SemanticConfig, SemanticMode, default_workers,
};
pub use upstream::{RawDialect, RawRoute, RawRouting, RawUpstream, Routing, Upstream};

use crate::secret::Secret;

/// Looks up an environment variable; tests pass their own.
pub type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: expected {expected}")]
    Invalid { key: String, expected: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, expected: &str) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            expected: expected.to_owned(),
        }
    }
}

/// The file's shape. Every field has a default, so an empty file is a valid config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub log: RawLog,
    pub upstreams: Vec<RawUpstream>,
    pub routing: RawRouting,
    pub rate_limit: Option<RawRateLimit>,
    pub keys: Vec<RawKey>,
    pub cache: RawCache,
    pub store: RawStore,
    pub semantic: RawSemantic,
    pub savings: RawSavings,
    pub compression: RawCompression,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            server: RawServer::default(),
            log: RawLog::default(),
            upstreams: vec![
                RawUpstream::new("openai", "https://api.openai.com/v1", RawDialect::Openai),
                RawUpstream::new("ollama", "http://127.0.0.1:11434", RawDialect::Ollama),
            ],
            routing: RawRouting::default(),
            rate_limit: None,
            keys: Vec::new(),
            cache: RawCache::default(),
            store: RawStore::default(),
            semantic: RawSemantic::default(),
            savings: RawSavings::default(),
            compression: RawCompression::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers; on a new connection the
    /// clock starts at accept, so it bounds the TLS handshake and a silent socket too.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight (a response still
    /// streaming counts as in flight) before it is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections served at once; beyond it new connections wait in the listen backlog.
    pub max_connections: usize,
    pub tls: Option<RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 32 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
            tls: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub tls: Option<RawTls>,
    pub log_format: LogFormat,
    pub upstreams: Vec<Upstream>,
    pub routing: Routing,
    pub rate_limit: Option<RateLimit>,
    pub keys: Vec<ApiKey>,
    pub admin_token: Option<Secret<String>>,
    pub cache: CacheConfig,
    pub store: StoreConfig,
    pub semantic: SemanticConfig,
    pub savings: SavingsConfig,
    pub compression: CompressionConfig,
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Applies the environment overrides operators set most.
    pub fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        if let Some(listen) = env("THRIFTY_LISTEN") {
            self.server.listen = listen;
        }
        if let Some(url) = env("THRIFTY_OPENAI_BASE_URL") {
            self.set_base_url(
                &self.routing.default_openai.clone(),
                url,
                "THRIFTY_OPENAI_BASE_URL",
            )?;
        }
        if let Some(url) = env("THRIFTY_OLLAMA_BASE_URL") {
            self.set_base_url(
                &self.routing.default_ollama.clone(),
                url,
                "THRIFTY_OLLAMA_BASE_URL",
            )?;
        }
        if let Some(format) = env("THRIFTY_LOG_FORMAT") {
            self.log.format = match format.as_str() {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                _ => return Err(ConfigError::invalid("THRIFTY_LOG_FORMAT", "json or pretty")),
            };
        }
        if let Some(dir) = env("THRIFTY_DATA_DIR") {
            self.store.data_dir = PathBuf::from(dir);
        }
        self.compression.apply_env(env)?;
        if let Some(bytes) = env("THRIFTY_MAX_BODY_BYTES") {
            self.server.max_body_bytes = bytes
                .parse()
                .map_err(|_| ConfigError::invalid("THRIFTY_MAX_BODY_BYTES", "a number of bytes"))?;
        }
        Ok(())
    }

    fn set_base_url(&mut self, upstream: &str, url: String, var: &str) -> Result<(), ConfigError> {
        let target = self
            .upstreams
            .iter_mut()
            .find(|u| u.name == upstream)
            .ok_or_else(|| ConfigError::invalid(var, "a default upstream to apply to"))?;
        target.base_url = url;
        Ok(())
    }

    /// Checks every value and resolves names, secrets and globs.
    pub fn validate(self, env: &Env<'_>) -> Result<Config, ConfigError> {
        let listen = self.server.listen.parse().map_err(|_| {
            ConfigError::invalid("server.listen", "an address such as 127.0.0.1:8080")
        })?;
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "a size above zero",
            ));
        }
        if self.server.header_read_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "server.header_read_timeout",
                "a duration above zero, such as \"30s\"",
            ));
        }
        if self.server.idle_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "server.idle_timeout",
                "a duration above zero, such as \"120s\"",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "a number of connections above zero",
            ));
        }
        if let Some(tls) = &self.server.tls {
            for (key, path) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
                if !path.is_file() {
                    return Err(ConfigError::invalid(key, "a readable PEM file"));
                }
            }
        }
        let upstreams = upstream::validate_upstreams(self.upstreams, env)?;
        let routing = upstream::validate_routing(self.routing, &upstreams)?;
        let secret = |name: &str| env(name).filter(|v| !v.is_empty()).map(Secret::new);
        Ok(Config {
            listen,
            max_body_bytes: self.server.max_body_bytes,
            shutdown_grace: self.server.shutdown_grace,
            header_read_timeout: self.server.header_read_timeout,
            idle_timeout: self.server.idle_timeout,
            max_connections: self.server.max_connections,
            tls: self.server.tls,
            log_format: self.log.format,
            upstreams,
            routing,
            rate_limit: keys::validate_rate_limit(self.rate_limit, "rate_limit")?,
            keys: keys::validate_keys(self.keys)?,
            admin_token: secret("THRIFTY_ADMIN_TOKEN"),
            cache: cache::validate_cache(self.cache, env)?,
            store: cache::validate_store(self.store, env)?,
            semantic: semantic::validate_semantic(self.semantic, env)?,
            savings: savings::validate_savings(self.savings)?,
            compression: validate_compression(self.compression)?,
        })
    }
}

impl Config {
    /// Loads the file (if any), applies the process environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let mut raw = match path {
            Some(path) => RawConfig::from_file(path)?,
            None => RawConfig::default(),
        };
        raw.apply_env(&env)?;
        raw.validate(&env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn shipped_config_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/thrifty.toml");
        let file = RawConfig::from_file(&path).expect("config/thrifty.toml parses");
        let from_file = file
            .validate(&no_env)
            .expect("config/thrifty.toml is valid");
        let defaults = RawConfig::default()
            .validate(&no_env)
            .expect("defaults are valid");
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn model_workers_default_to_one_per_two_cores_and_must_be_some() {
        let defaults = RawConfig::default().validate(&no_env).expect("valid");
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(defaults.semantic.workers, (cores / 2).clamp(1, 4));
        let mut raw = RawConfig::default();
        raw.semantic.workers = Some(3);
        assert_eq!(raw.validate(&no_env).expect("valid").semantic.workers, 3);
        for bad in [0, 65] {
            let mut raw = RawConfig::default();
            raw.semantic.workers = Some(bad);
            let err = raw.validate(&no_env).expect_err("rejects");
            assert!(err.to_string().starts_with("semantic.workers:"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<RawConfig>("[server]\nlisten_on = \"x\"").expect_err("rejects");
        assert!(err.to_string().contains("listen_on"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut raw = RawConfig::default();
        raw.server.listen = "nowhere".to_owned();
        let err = raw.validate(&no_env).expect_err("rejects");
        assert!(err.to_string().starts_with("server.listen:"), "{err}");

        let mut raw = RawConfig::default();
        raw.upstreams[0].api_key_env = Some("THRIFTY_TEST_UNSET".to_owned());
        let err = raw.validate(&no_env).expect_err("rejects");
        assert!(
            err.to_string().starts_with("upstreams[0].api_key_env:"),
            "{err}"
        );

        let mut raw = RawConfig::default();
        raw.routing.routes.push(RawRoute {
            model: "llama*".to_owned(),
            upstream: "nope".to_owned(),
        });
        let err = raw.validate(&no_env).expect_err("rejects");
        assert!(
            err.to_string().starts_with("routing.routes[0].upstream:"),
            "{err}"
        );
    }

    #[test]
    fn store_budgets_and_breaker_are_validated() {
        let mut raw = RawConfig::default();
        raw.store.timeout = Duration::from_secs(30);
        let config = raw.validate(&no_env).expect("valid");
        assert_eq!(
            config.store.bulk_timeout,
            Duration::from_secs(30),
            "the bulk budget is never below the request one"
        );

        let mut raw = RawConfig::default();
        raw.store.breaker_failures = 0;
        let err = raw.validate(&no_env).expect_err("rejects");
        assert!(
            err.to_string().starts_with("store.breaker_failures:"),
            "{err}"
        );
        let mut raw = RawConfig::default();
        raw.store.breaker_backoff = Duration::ZERO;
        let err = raw.validate(&no_env).expect_err("rejects");
        assert!(
            err.to_string().starts_with("store.breaker_backoff:"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_apply() {
        let env = |name: &str| match name {
            "THRIFTY_LISTEN" => Some("0.0.0.0:9000".to_owned()),
            "THRIFTY_OLLAMA_BASE_URL" => Some("http://10.0.0.2:11434/".to_owned()),
            "THRIFTY_ADMIN_TOKEN" => Some("admin".to_owned()),
            _ => None,
        };
        let mut raw = RawConfig::default();
        raw.apply_env(&env).expect("applies");
        let config = raw.validate(&env).expect("valid");
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.upstreams[1].base_url, "http://10.0.0.2:11434");
        assert_eq!(
            config.admin_token.map(|t| t.expose().clone()).as_deref(),
            Some("admin")
        );
    }
}
