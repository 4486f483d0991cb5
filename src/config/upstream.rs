//! `[[upstreams]]` and `[routing]`: where requests go.

use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use super::{ConfigError, Env};
use crate::chat::Dialect;
use crate::secret::Secret;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub base_url: String,
    pub dialect: RawDialect,
    /// Name of the environment variable holding the key thrifty sends upstream.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_connect", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_first_byte", with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawDialect {
    Openai,
    Ollama,
}

fn default_connect() -> Duration {
    Duration::from_secs(10)
}
fn default_first_byte() -> Duration {
    Duration::from_secs(600)
}
fn default_idle() -> Duration {
    Duration::from_secs(300)
}

impl RawUpstream {
    pub fn new(name: &str, base_url: &str, dialect: RawDialect) -> Self {
        RawUpstream {
            name: name.to_owned(),
            base_url: base_url.to_owned(),
            dialect,
            api_key_env: None,
            connect_timeout: default_connect(),
            first_byte_timeout: default_first_byte(),
            idle_timeout: default_idle(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Upstream for OpenAI-dialect requests no route matches.
    pub default_openai: String,
    /// Upstream for Ollama-dialect requests no route matches.
    pub default_ollama: String,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

impl Default for RawRouting {
    fn default() -> Self {
        RawRouting {
            default_openai: "openai".to_owned(),
            default_ollama: "ollama".to_owned(),
            routes: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// A glob over model names, such as `llama*` or `gpt-4o*`.
    pub model: String,
    pub upstream: String,
}

/// A validated upstream.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    /// The base URL without a trailing slash.
    pub base_url: String,
    pub dialect: Dialect,
    pub api_key: Option<Secret<String>>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Upstream {
    /// The URL prefix under which this upstream serves the given client dialect, if it does.
    pub fn root_for(&self, client: Dialect) -> Option<String> {
        crate::dialect::api_root(self.dialect, client, &self.base_url)
    }
}

/// Model-name routes resolved to upstream indexes.
#[derive(Debug)]
pub struct Routing {
    pub routes: Vec<(GlobMatcher, usize)>,
    pub default_openai: usize,
    pub default_ollama: usize,
}

impl Routing {
    /// The upstream for calls of `dialect` that no route matches.
    pub fn default_for(&self, dialect: Dialect) -> usize {
        match dialect {
            Dialect::OpenAi => self.default_openai,
            Dialect::Ollama => self.default_ollama,
        }
    }
}

pub fn validate_upstreams(
    raw: Vec<RawUpstream>,
    env: &Env<'_>,
) -> Result<Vec<Upstream>, ConfigError> {
    let mut upstreams: Vec<Upstream> = Vec::with_capacity(raw.len());
    for (i, up) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("upstreams[{i}].{field}");
        if up.name.is_empty() {
            return Err(ConfigError::invalid(key("name"), "a non-empty name"));
        }
        if upstreams.iter().any(|u| u.name == up.name) {
            return Err(ConfigError::invalid(
                key("name"),
                "a name no other upstream uses",
            ));
        }
        let uri: http::Uri = up
            .base_url
            .parse()
            .map_err(|_| ConfigError::invalid(key("base_url"), "an absolute http(s) URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ConfigError::invalid(
                key("base_url"),
                "an absolute http(s) URL",
            ));
        }
        let api_key = match &up.api_key_env {
            None => None,
            Some(var) => match env(var) {
                Some(value) if !value.is_empty() => Some(Secret::new(value)),
                _ => {
                    return Err(ConfigError::invalid(
                        key("api_key_env"),
                        &format!("the environment variable {var} to be set"),
                    ));
                }
            },
        };
        for (field, value) in [
            ("connect_timeout", up.connect_timeout),
            ("first_byte_timeout", up.first_byte_timeout),
            ("idle_timeout", up.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key(field), "a duration above zero"));
            }
        }
        upstreams.push(Upstream {
            name: up.name,
            base_url: up.base_url.trim_end_matches('/').to_owned(),
            dialect: match up.dialect {
                RawDialect::Openai => Dialect::OpenAi,
                RawDialect::Ollama => Dialect::Ollama,
            },
            api_key,
            connect_timeout: up.connect_timeout,
            first_byte_timeout: up.first_byte_timeout,
            idle_timeout: up.idle_timeout,
        });
    }
    if upstreams.is_empty() {
        return Err(ConfigError::invalid("upstreams", "at least one upstream"));
    }
    Ok(upstreams)
}

pub fn validate_routing(raw: RawRouting, upstreams: &[Upstream]) -> Result<Routing, ConfigError> {
    let index = |key: String, name: &str| {
        upstreams
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| ConfigError::invalid(key, "the name of a configured upstream"))
    };
    let default_openai = index("routing.default_openai".to_owned(), &raw.default_openai)?;
    let default_ollama = index("routing.default_ollama".to_owned(), &raw.default_ollama)?;
    if upstreams[default_ollama].dialect != Dialect::Ollama {
        return Err(ConfigError::invalid(
            "routing.default_ollama",
            "an upstream with dialect = \"ollama\"",
        ));
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, route) in raw.routes.into_iter().enumerate() {
        let glob = Glob::new(&route.model).map_err(|e| {
            ConfigError::invalid(
                format!("routing.routes[{i}].model"),
                &format!("a model glob ({e})"),
            )
        })?;
        let target = index(format!("routing.routes[{i}].upstream"), &route.upstream)?;
        routes.push((glob.compile_matcher(), target));
    }
    Ok(Routing {
        routes,
        default_openai,
        default_ollama,
    })
}
