//! The models table: each model's context window and tokenizer, from the shipped
//! `config/models.toml` or the file `compression.models_file` names, as plain data that
//! `compress` interprets. Globs are matched in order against the model name in lower case
//! without an `ft:` prefix or a `namespace/` part ([`normalize`]).

use std::path::Path;
use std::sync::{Arc, LazyLock};

use serde::Deserialize;

use crate::table::{self, GlobTable, TableError, glob};

/// A tokenizer thrifty counts with, by its tiktoken name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "o200k_base" => Some(Encoding::O200kBase),
            "cl100k_base" => Some(Encoding::Cl100kBase),
            _ => None,
        }
    }
}

/// The file shipped in `config/models.toml`, built in as the default.
const SHIPPED: &str = include_str!("../../config/models.toml");

/// Parsed once; `the_shipped_table_parses_and_keeps_its_order` keeps it valid.
static SHIPPED_TABLE: LazyLock<Arc<ModelTable>> = LazyLock::new(|| {
    Arc::new(
        ModelTable::parse(SHIPPED, "built-in models.toml")
            .unwrap_or_else(|e| panic!("the shipped config/models.toml is invalid: {e}")),
    )
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    model: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    model: String,
    context_window: u64,
    encoding: String,
}

/// One row: the models its glob (in the table's [`GlobTable`]) matches, their window and
/// tokenizer.
#[derive(Clone, Debug)]
struct Entry {
    context_window: u64,
    encoding: Encoding,
}

/// The validated models table, in file order: the first matching entry wins.
#[derive(Clone)]
pub struct ModelTable {
    entries: Vec<Entry>,
    /// The entries' model globs, in the entries' order.
    globs: GlobTable,
    origin: String,
}

impl std::fmt::Debug for ModelTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTable")
            .field("origin", &self.origin)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl ModelTable {
    /// The shipped `config/models.toml`.
    pub fn shipped() -> Arc<ModelTable> {
        SHIPPED_TABLE.clone()
    }

    /// A table file that replaces the shipped one.
    pub fn load(path: &Path) -> Result<ModelTable, TableError> {
        table::load(path, ModelTable::parse)
    }

    pub fn from_toml_str(text: &str) -> Result<ModelTable, TableError> {
        ModelTable::parse(text, "models")
    }

    fn parse(text: &str, origin: &str) -> Result<ModelTable, TableError> {
        let invalid = |message: String| TableError::invalid(origin, message);
        let raw: RawFile = table::raw(text, origin)?;
        let mut entries = Vec::with_capacity(raw.model.len());
        let mut patterns = Vec::with_capacity(raw.model.len());
        for (i, entry) in raw.model.into_iter().enumerate() {
            let bad = |field: &str, expected: &str| {
                invalid(format!(
                    "model[{i}] ({}): {field}: expected {expected}",
                    entry.model
                ))
            };
            if glob(&entry.model).is_none() {
                return Err(bad("model", "a non-empty model name or glob"));
            }
            if entry.context_window == 0 {
                return Err(bad("context_window", "a number of tokens above zero"));
            }
            let encoding = Encoding::parse(&entry.encoding)
                .ok_or_else(|| bad("encoding", "\"o200k_base\" or \"cl100k_base\""))?;
            entries.push(Entry {
                context_window: entry.context_window,
                encoding,
            });
            patterns.push(entry.model);
        }
        let globs = GlobTable::new(patterns.iter().map(String::as_str))
            .ok_or_else(|| invalid("the model globs do not build together".to_owned()))?;
        Ok(ModelTable {
            entries,
            globs,
            origin: origin.to_owned(),
        })
    }

    /// The first matching entry for a model: its context window and encoding.
    pub fn get(&self, model: &str) -> Option<(u64, Encoding)> {
        self.get_plain(&normalize(model))
    }

    /// [`ModelTable::get`] for a name already in the table's form ([`normalize`]).
    pub fn get_plain(&self, plain: &str) -> Option<(u64, Encoding)> {
        let entry = &self.entries[self.globs.first(plain)?];
        Some((entry.context_window, entry.encoding))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A model name as the table reads it: lower case, without an `ft:` prefix or a
/// `namespace/` part.
pub fn normalize(model: &str) -> String {
    let name = model.strip_prefix("ft:").unwrap_or(model);
    let name = name.rsplit('/').next().unwrap_or(name);
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    use Encoding::{Cl100kBase as CL100K, O200kBase as O200K};

    #[test]
    fn the_shipped_table_parses_and_keeps_its_order() {
        let table = ModelTable::from_toml_str(SHIPPED).expect("config/models.toml is valid");
        assert_eq!(table.len(), ModelTable::shipped().len());
        assert!(table.len() >= 50, "{}", table.len());
        // First match wins: the specific entries sit above the broad ones.
        assert_eq!(table.get("gpt-5-chat-latest"), Some((128_000, O200K)));
        assert_eq!(table.get("gpt-5"), Some((400_000, O200K)));
        assert_eq!(table.get("gpt-4-32k-0613"), Some((32_768, CL100K)));
        assert_eq!(table.get("gpt-4"), Some((8_192, CL100K)));
        assert_eq!(
            format!("{:?}", ModelTable::shipped()),
            format!(
                "ModelTable {{ origin: \"built-in models.toml\", entries: {} }}",
                table.len()
            )
        );
    }

    #[test]
    fn globs_match_the_whole_normalized_name() {
        let table = ModelTable::from_toml_str(
            r#"
            model = [
                { model = "exact", context_window = 1_000, encoding = "o200k_base" },
                { model = "acme-{small,large}*", context_window = 2_000, encoding = "cl100k_base" },
            ]
            "#,
        )
        .expect("valid");
        assert_eq!(table.get("exact"), Some((1_000, O200K)));
        assert_eq!(table.get("team/EXACT"), Some((1_000, O200K)));
        assert_eq!(table.get("exactly"), None);
        assert_eq!(table.get("acme-large:q4"), Some((2_000, CL100K)));
        assert_eq!(table.get("acme-medium"), None);
    }

    #[test]
    fn a_bad_table_names_the_entry_and_field() {
        for (text, expected) in [
            (
                r#"model = [{ model = "", context_window = 1, encoding = "o200k_base" }]"#,
                "models: model[0] (): model: expected",
            ),
            (
                r#"model = [{ model = "m", context_window = 0, encoding = "o200k_base" }]"#,
                "model[0] (m): context_window: expected",
            ),
            (
                r#"model = [{ model = "m", context_window = 1, encoding = "p50k_base" }]"#,
                "model[0] (m): encoding: expected",
            ),
            (
                r#"model = [{ model = "m", context_window = 1, encoding = "o200k_base", window = 2 }]"#,
                "window",
            ),
            (
                r#"model = [{ model = "m", encoding = "o200k_base" }]"#,
                "context_window",
            ),
        ] {
            let err = ModelTable::from_toml_str(text).expect_err(text);
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
        }
    }
}
