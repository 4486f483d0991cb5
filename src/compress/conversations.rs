//! Named conversations (`x-thrifty-chat-id`). Summaries are found by their hash chain
//! alone; a name only lists the summaries written for it, so an operator can see them
//! (`GET /admin/conversations/{id}`) and drop them (`DELETE`). Store keys hold digests of
//! the name and the tenant, never the name itself:
//! `thrifty:v1:conversation:<H(name)>:<H(tenant)>:<summary hash>`.

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::summarize::{self, Hash};
use crate::store::{KEY_PREFIX, Store, StoreError};

/// The longest conversation name thrifty accepts; longer ones are ignored.
pub const MAX_NAME: usize = 256;

/// A conversation named by a client, within its tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub name: String,
    pub tenant: String,
}

impl Conversation {
    /// The `x-thrifty-chat-id` header's conversation, if it is usable as a name.
    pub fn named(name: Option<&str>, tenant: &str) -> Option<Conversation> {
        let name = name?.trim();
        (!name.is_empty() && name.len() <= MAX_NAME).then(|| Conversation {
            name: name.to_owned(),
            tenant: tenant.to_owned(),
        })
    }

    fn marker(&self, summary: &Hash) -> String {
        format!(
            "{}{}:{}",
            prefix(&self.name),
            digest(&self.tenant),
            hex::encode(summary)
        )
    }

    /// Lists a summary under this conversation for as long as the summary may live.
    pub async fn mark(&self, store: &Store, summary: &Hash, ttl: Duration) {
        let _ = store.put(&self.marker(summary), Bytes::new(), ttl).await;
    }
}

/// What the store holds for a conversation name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Summaries still stored.
    pub summaries: usize,
    /// Tenants that used the name.
    pub tenants: usize,
}

fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

fn prefix(name: &str) -> String {
    format!("{KEY_PREFIX}conversation:{}:", digest(name))
}

/// The markers of `name`, in one tenant or in all of them.
async fn markers(
    store: &Store,
    name: &str,
    tenant: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let mut prefix = prefix(name);
    if let Some(tenant) = tenant {
        prefix.push_str(&digest(tenant));
        prefix.push(':');
    }
    store.keys(&prefix).await
}

/// The summary key a marker points to.
fn summary_key(marker: &str) -> Option<String> {
    let hash = marker.rsplit(':').next()?;
    let bytes: Hash = hex::decode(hash).ok()?.try_into().ok()?;
    Some(summarize::key(&bytes))
}

/// What is stored for `name` (in one tenant, or all).
pub async fn list(store: &Store, name: &str, tenant: Option<&str>) -> Result<Listing, StoreError> {
    let markers = markers(store, name, tenant).await?;
    let mut tenants: Vec<&str> = markers
        .iter()
        .filter_map(|m| m.rsplit(':').nth(1))
        .collect();
    tenants.sort_unstable();
    tenants.dedup();
    let mut summaries = 0;
    for marker in &markers {
        if let Some(key) = summary_key(marker) {
            if store.get(&key).await?.is_some() {
                summaries += 1;
            }
        }
    }
    Ok(Listing {
        summaries,
        tenants: tenants.len(),
    })
}

/// Drops every summary written for `name` (in one tenant, or all) and its markers;
/// returns how many summaries were dropped.
pub async fn forget(store: &Store, name: &str, tenant: Option<&str>) -> Result<u64, StoreError> {
    let markers = markers(store, name, tenant).await?;
    let summaries: Vec<String> = markers.iter().filter_map(|m| summary_key(m)).collect();
    let dropped = if summaries.is_empty() {
        0
    } else {
        store.delete(&summaries).await?
    };
    if !markers.is_empty() {
        store.delete(&markers).await?;
    }
    Ok(dropped)
}
