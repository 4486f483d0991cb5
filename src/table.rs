//! Data tables built into the binary that a file may replace (the price table, the models
//! table): reading one, the globs its entries name models by, and its errors.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl TableError {
    pub fn invalid(origin: &str, message: String) -> Self {
        TableError::Invalid {
            origin: origin.to_owned(),
            message,
        }
    }
}

/// Reads a table file and `parse`s its text, naming the table by the file's path.
pub fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str, &str) -> Result<T, TableError>,
) -> Result<T, TableError> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &origin),
        Err(source) => Err(TableError::Read {
            path: origin,
            source,
        }),
    }
}

/// A table's text in its raw serde shape.
pub fn raw<R: DeserializeOwned>(text: &str, origin: &str) -> Result<R, TableError> {
    toml::from_str(text).map_err(|e| TableError::invalid(origin, e.to_string()))
}

/// A model or upstream glob as tables write them: case-insensitive, `{a,}` allowed; `None`
/// when empty or malformed.
pub fn glob(pattern: &str) -> Option<GlobMatcher> {
    table_glob(pattern).map(|g| g.compile_matcher())
}

fn table_glob(pattern: &str) -> Option<Glob> {
    if pattern.trim().is_empty() {
        return None;
    }
    GlobBuilder::new(pattern)
        .case_insensitive(true)
        .empty_alternates(true)
        .build()
        .ok()
}

/// A table's model globs matched together: which of them a name matches, in one pass over
/// the name rather than one per glob (the price and models tables are looked up on every
/// request).
#[derive(Clone, Debug)]
pub struct GlobTable(GlobSet);

impl GlobTable {
    /// The globs of `patterns`, in order, each read as [`glob`] reads it; `None` when one is
    /// empty or malformed.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Option<GlobTable> {
        let mut set = GlobSetBuilder::new();
        for pattern in patterns {
            set.add(table_glob(pattern)?);
        }
        set.build().ok().map(GlobTable)
    }

    /// The positions of the patterns `name` matches, in ascending order.
    pub fn matching(&self, name: &str) -> Vec<usize> {
        self.0.matches(name)
    }

    /// The position of the first pattern `name` matches.
    pub fn first(&self, name: &str) -> Option<usize> {
        self.matching(name).first().copied()
    }
}
