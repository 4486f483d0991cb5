//! A recorded answer framed once per replay mode (see [`crate::dialect::template`]), kept on
//! the entry's copy in memory while it lives.

use std::sync::OnceLock;

use crate::dialect::template::Template;

/// One entry's templates, made on first use per mode (streamed or not, with the usage chunk
/// or not). Not stored: the copy in memory keeps them while it lives.
#[derive(Debug, Default)]
pub struct Framed([OnceLock<Option<Template>>; 4]);

impl Clone for Framed {
    fn clone(&self) -> Framed {
        Framed::default()
    }
}

impl PartialEq for Framed {
    fn eq(&self, _: &Framed) -> bool {
        true
    }
}

impl Framed {
    /// The template for a mode, made by `make` the first time it is asked for.
    pub fn get(
        &self,
        streamed: bool,
        usage: bool,
        make: impl FnOnce() -> Option<Template>,
    ) -> Option<&Template> {
        self.0[usize::from(streamed) * 2 + usize::from(usage)]
            .get_or_init(make)
            .as_ref()
    }
}
