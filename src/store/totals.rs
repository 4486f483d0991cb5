//! Counters every instance adds to: each instance publishes what its own counters gained
//! since it last published, as increments of one Redis hash, so every instance reads the
//! same totals. Publishing happens off the request path (a periodic flush, an admin read);
//! requests only ever touch the process's own counters.
//!
//! A publish is applied at most once per sequence, so a publish retried after an ambiguous
//! failure (a timeout after the write landed) is counted once. It reads no value but the
//! instance's own marker (`SET .. GET`), and the hash and the markers share one hash tag, so
//! it stays in one cluster slot. Needs Redis 6.2 or later.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::{KEY_PREFIX, Store, StoreError};

/// The hash tag every totals key carries.
const TAG: &str = "{totals}";

/// How long Redis remembers an instance's last sequence: far longer than any retry.
const MARKER_TTL: Duration = Duration::from_secs(24 * 3600);

/// Fields one totals hash holds; beyond it a new row's counts go to its `other` field, so
/// names clients choose (tenants, namespaces, models) cannot grow the hash without bound,
/// however many instances and restarts add to it.
const MAX_FIELDS: usize = 50_000;

/// `KEYS[1]`: the instance's marker, `KEYS[2]`: the totals; `ARGV[1]`: the sequence,
/// `ARGV[2]`: the marker's time to live (ms), `ARGV[3]`: the most fields, then field,
/// increment and fallback triples: a field the hash does not hold yet, once it is full, adds
/// to its fallback instead. Returns 0 when the sequence had been applied already.
const PUBLISH: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'GET') == ARGV[1] then return 0 end
local cap = tonumber(ARGV[3])
for i = 4, #ARGV, 3 do
  local field = ARGV[i]
  if redis.call('HEXISTS', KEYS[2], field) == 0 and redis.call('HLEN', KEYS[2]) >= cap then
    field = ARGV[i + 2]
  end
  redis.call('HINCRBY', KEYS[2], field, ARGV[i + 1])
end
return 1
";

/// Where a field's counts go once the hash is full: a row field (a JSON array of names and,
/// last, what it counts) becomes the same count of the `other` row; a named field stays.
fn fallback(field: &str) -> String {
    match serde_json::from_str::<Vec<String>>(field) {
        Ok(mut parts) if parts.len() >= 2 => {
            let last = parts.len() - 1;
            for part in &mut parts[..last] {
                "other".clone_into(part);
            }
            serde_json::to_string(&parts).unwrap_or_else(|_| field.to_owned())
        }
        _ => field.to_owned(),
    }
}

static SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(PUBLISH));

/// Increments sent under one sequence.
#[derive(Clone)]
struct Batch {
    seq: u64,
    deltas: Vec<(String, i64)>,
}

/// One named set of counters shared through Redis.
pub struct Totals {
    store: Arc<Store>,
    key: String,
    marker: String,
    state: tokio::sync::Mutex<Published>,
}

#[derive(Default)]
struct Published {
    /// The counters as last published.
    published: HashMap<String, i64>,
    /// A batch sent but not known to have landed, with the counters it brings the totals to.
    pending: Option<(Batch, HashMap<String, i64>)>,
    seq: u64,
}

impl Totals {
    /// The totals named `name` when the store is shared by several instances; `None` with
    /// the embedded store, where the process's own counters are the totals.
    pub fn new(store: &Arc<Store>, name: &str) -> Option<Totals> {
        store.is_shared().then(|| Totals {
            store: store.clone(),
            key: format!("{KEY_PREFIX}{TAG}:{name}"),
            marker: format!(
                "{KEY_PREFIX}{TAG}:applied:{name}:{}",
                uuid::Uuid::new_v4().simple()
            ),
            state: tokio::sync::Mutex::new(Published::default()),
        })
    }

    /// Adds to the shared totals what `now` (this process's counters, which only grow)
    /// gained since the last publish. One publish runs at a time.
    pub async fn publish(&self, now: HashMap<String, i64>) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if let Some((batch, reached)) = state.pending.take() {
            if let Err(e) = self.apply(&batch).await {
                state.pending = Some((batch, reached));
                return Err(e);
            }
            state.published = reached;
        }
        let deltas: Vec<(String, i64)> = now
            .iter()
            .filter_map(|(field, value)| {
                let delta = value - state.published.get(field).copied().unwrap_or(0);
                (delta != 0).then(|| (field.clone(), delta))
            })
            .collect();
        if deltas.is_empty() {
            return Ok(());
        }
        state.seq += 1;
        let batch = Batch {
            seq: state.seq,
            deltas,
        };
        match self.apply(&batch).await {
            Ok(_) => {
                state.published = now;
                Ok(())
            }
            Err(e) => {
                state.pending = Some((batch, now));
                Err(e)
            }
        }
    }

    async fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.marker)
            .key(&self.key)
            .arg(batch.seq)
            .arg(u64::try_from(MARKER_TTL.as_millis()).unwrap_or(u64::MAX))
            .arg(MAX_FIELDS);
        for (field, delta) in &batch.deltas {
            invocation.arg(field).arg(*delta).arg(fallback(field));
        }
        self.store
            .run_script_off_path::<i64>(&invocation)
            .await
            .map(drop)
    }

    /// The totals of every instance, this one's published first.
    pub async fn read(
        &self,
        now: HashMap<String, i64>,
    ) -> Result<HashMap<String, i64>, StoreError> {
        self.publish(now).await?;
        self.store.counters(&self.key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_falls_back_to_the_other_row_and_a_named_field_to_itself() {
        assert_eq!(
            fallback(r#"["acme","ns","gpt-x","hits"]"#),
            r#"["other","other","other","hits"]"#
        );
        assert_eq!(fallback("stored"), "stored");
    }
}
