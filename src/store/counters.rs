//! Counters and capped logs for the savings ledger: atomic increments of named
//! integer fields, append-only logs trimmed to a cap, and a batch of both applied
//! all or nothing and at most once. Nothing written here expires.
//!
//! Redis keeps counters in hashes (`HINCRBY`) and logs in lists (`RPUSH` + `LTRIM`);
//! the embedded store keeps them in their own redb tables beside the cache's, its logs as
//! chunks of entries (see [`logs`](super::logs)).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, TableError, TableHandle};

use super::embedded_err as err;
use super::logs;
use super::{Backend, Store, StoreError};

/// `key \0 field` → value.
const COUNTERS: TableDefinition<&str, i64> = TableDefinition::new("counters");
/// Batch marker → sequence of the last batch applied under it.
const APPLIED: TableDefinition<&str, u64> = TableDefinition::new("applied");

/// How long Redis remembers a batch marker: far longer than any retry of its batch.
const MARKER_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Applies a batch once: skipped when the marker already holds its sequence.
const APPLY_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
local i = 5
local n = tonumber(ARGV[4])
for _ = 1, n do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  i = i + 1
end
if n > 0 then redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1) end
for k = 3, #KEYS do
  local m = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, m do
    redis.call('HINCRBY', KEYS[k], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Counter increments and log appends that are applied together, all or nothing.
///
/// `marker` names the writer; a batch whose `seq` the marker already holds is skipped,
/// so a batch retried after an ambiguous failure (a timeout after the write landed) is
/// counted once. Each writer's sequences must increase. On a Redis cluster every key of
/// a batch must hash to one slot (give them one `{hash tag}`).
#[derive(Clone, Debug, Default)]
pub struct CounterBatch {
    pub marker: String,
    pub seq: u64,
    /// Per counter key, the fields and how much to add.
    pub counters: Vec<(String, Vec<(String, i64)>)>,
    pub log: String,
    pub entries: Vec<Bytes>,
    /// How many entries the log keeps; older ones are dropped.
    pub cap: usize,
}

impl Store {
    /// Adds to integer fields of a counter key, atomically (one transaction).
    pub async fn add_counters(
        &self,
        key: &str,
        fields: &[(String, i64)],
    ) -> Result<(), StoreError> {
        if fields.is_empty() {
            return Ok(());
        }
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => {
                    let mut pipe = ::redis::pipe();
                    pipe.atomic();
                    for (field, delta) in fields {
                        pipe.cmd("HINCRBY").arg(key).arg(field).arg(*delta).ignore();
                    }
                    r.pipeline::<()>(&pipe).await
                }
                Backend::Embedded(e) => {
                    let counters = vec![(key.to_owned(), fields.to_vec())];
                    e.blocking(move |db| {
                        let txn = db.begin_write().map_err(err)?;
                        add_all(&mut txn.open_table(COUNTERS).map_err(err)?, &counters)?;
                        txn.commit().map_err(err)
                    })
                    .await
                }
            }
        })
        .await
    }

    /// Every field of a counter key; empty when the key does not exist.
    pub async fn counters(&self, key: &str) -> Result<HashMap<String, i64>, StoreError> {
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => r.query(::redis::cmd("HGETALL").arg(key)).await,
                Backend::Embedded(e) => {
                    let key = key.to_owned();
                    e.blocking(move |db| {
                        let txn = db.begin_read().map_err(err)?;
                        let Some(table) = open_read(&txn, COUNTERS)? else {
                            return Ok(HashMap::new());
                        };
                        let (start, end) = (format!("{key}\0"), format!("{key}\u{1}"));
                        let mut out = HashMap::new();
                        for item in table.range(start.as_str()..end.as_str()).map_err(err)? {
                            let (k, v) = item.map_err(err)?;
                            if let Some(field) = k.value().strip_prefix(start.as_str()) {
                                out.insert(field.to_owned(), v.value());
                            }
                        }
                        Ok(out)
                    })
                    .await
                }
            }
        })
        .await
    }

    /// Every counter key starting with `prefix`. Admin paths only: it walks the keys.
    pub async fn counter_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Redis(_) => self.keys(prefix).await,
            Backend::Embedded(e) => {
                let prefix = prefix.to_owned();
                let op = e.blocking(move |db| {
                    let txn = db.begin_read().map_err(err)?;
                    let Some(table) = open_read(&txn, COUNTERS)? else {
                        return Ok(Vec::new());
                    };
                    let mut keys: Vec<String> = Vec::new();
                    let mut from = prefix.clone();
                    // Jumps from one key to the next instead of walking every field.
                    while let Some(item) = table.range(from.as_str()..).map_err(err)?.next() {
                        let (k, _) = item.map_err(err)?;
                        let full = k.value();
                        if !full.starts_with(prefix.as_str()) {
                            break;
                        }
                        let key = full.split('\0').next().unwrap_or(full).to_owned();
                        from = format!("{key}\u{1}");
                        keys.push(key);
                    }
                    Ok(keys)
                });
                self.bounded_bulk(op).await
            }
        }
    }

    /// Appends to a log and drops its oldest entries beyond `cap`, atomically.
    pub async fn append_capped(
        &self,
        key: &str,
        value: Bytes,
        cap: usize,
    ) -> Result<(), StoreError> {
        let cap = cap.max(1);
        self.bounded(async {
            match &self.backend {
                Backend::Redis(r) => {
                    let mut pipe = ::redis::pipe();
                    pipe.atomic();
                    pipe.cmd("RPUSH").arg(key).arg(value.as_ref()).ignore();
                    pipe.cmd("LTRIM")
                        .arg(key)
                        .arg(-signed(cap))
                        .arg(-1)
                        .ignore();
                    r.pipeline::<()>(&pipe).await
                }
                Backend::Embedded(e) => {
                    let key = key.to_owned();
                    e.blocking(move |db| {
                        let txn = db.begin_write().map_err(err)?;
                        let mut table = txn.open_table(logs::CHUNKS).map_err(err)?;
                        logs::append(&mut table, &key, &[value], cap)?;
                        drop(table);
                        txn.commit().map_err(err)
                    })
                    .await
                }
            }
        })
        .await
    }

    /// The newest `n` entries of a log, oldest first.
    pub async fn recent(&self, key: &str, n: usize) -> Result<Vec<Bytes>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.bounded_bulk(async {
            match &self.backend {
                Backend::Redis(r) => {
                    let mut cmd = ::redis::cmd("LRANGE");
                    cmd.arg(key).arg(-signed(n)).arg(-1);
                    let raw: Vec<Vec<u8>> = r.query(&cmd).await?;
                    Ok(raw.into_iter().map(Bytes::from).collect())
                }
                Backend::Embedded(e) => {
                    let key = key.to_owned();
                    e.blocking(move |db| {
                        let txn = db.begin_read().map_err(err)?;
                        let Some(table) = open_read(&txn, logs::CHUNKS)? else {
                            return Ok(Vec::new());
                        };
                        let entries = logs::recent(&table, &key, n)?;
                        Ok(entries.into_iter().map(Bytes::from).collect())
                    })
                    .await
                }
            }
        })
        .await
    }

    /// Applies a batch all or nothing; `Ok(false)` when it had been applied already.
    pub async fn apply_once(&self, batch: &CounterBatch) -> Result<bool, StoreError> {
        let op = async {
            match &self.backend {
                Backend::Redis(r) => {
                    let mut cmd = ::redis::cmd("EVAL");
                    cmd.arg(APPLY_SCRIPT).arg(2 + batch.counters.len());
                    cmd.arg(&batch.marker).arg(&batch.log);
                    for (key, _) in &batch.counters {
                        cmd.arg(key);
                    }
                    cmd.arg(batch.seq)
                        .arg(u64::try_from(MARKER_TTL.as_millis()).unwrap_or(u64::MAX))
                        .arg(batch.cap.max(1))
                        .arg(batch.entries.len());
                    for entry in &batch.entries {
                        cmd.arg(entry.as_ref());
                    }
                    for (_, fields) in &batch.counters {
                        cmd.arg(fields.len());
                        for (field, delta) in fields {
                            cmd.arg(field).arg(*delta);
                        }
                    }
                    let applied: i64 = r.query(&cmd).await?;
                    Ok(applied == 1)
                }
                Backend::Embedded(e) => {
                    let batch = batch.clone();
                    e.blocking(move |db| apply_embedded(db, &batch)).await
                }
            }
        };
        self.bounded_bulk(op).await
    }
}

fn signed(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Opens a table for reading; a table never written to does not exist yet.
fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StoreError::Embedded(format!("{}: {e}", table.name()))),
    }
}

fn add_all(
    table: &mut Table<&str, i64>,
    counters: &[(String, Vec<(String, i64)>)],
) -> Result<(), StoreError> {
    for (key, fields) in counters {
        for (field, delta) in fields {
            let name = format!("{key}\0{field}");
            let current = table
                .get(name.as_str())
                .map_err(err)?
                .map_or(0, |v| v.value());
            let sum = current.checked_add(*delta).ok_or_else(|| {
                StoreError::Embedded(format!("counter {key} {field} would overflow"))
            })?;
            table.insert(name.as_str(), sum).map_err(err)?;
        }
    }
    Ok(())
}

fn apply_embedded(db: &redb::Database, batch: &CounterBatch) -> Result<bool, StoreError> {
    let txn = db.begin_write().map_err(err)?;
    let done = {
        let applied = txn.open_table(APPLIED).map_err(err)?;
        let last = applied
            .get(batch.marker.as_str())
            .map_err(err)?
            .map(|v| v.value());
        last == Some(batch.seq)
    };
    if done {
        txn.abort().map_err(err)?;
        return Ok(false);
    }
    add_all(&mut txn.open_table(COUNTERS).map_err(err)?, &batch.counters)?;
    logs::append(
        &mut txn.open_table(logs::CHUNKS).map_err(err)?,
        &batch.log,
        &batch.entries,
        batch.cap,
    )?;
    txn.open_table(APPLIED)
        .map_err(err)?
        .insert(batch.marker.as_str(), batch.seq)
        .map_err(err)?;
    txn.commit().map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    fn store(name: &str) -> std::sync::Arc<Store> {
        let store =
            EmbeddedStore::scratch(&format!("counters-{name}"), crate::clock::Clock::system());
        Store::embedded(store, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn embedded_counters_add_up_per_key() {
        let s = store("add");
        assert!(s.counters("k:a").await.unwrap().is_empty());
        assert!(s.counter_keys("k:").await.unwrap().is_empty());
        s.add_counters("k:a", &[("x".into(), 2), ("y".into(), -5)])
            .await
            .unwrap();
        s.add_counters("k:a", &[("x".into(), 3)]).await.unwrap();
        s.add_counters("k:ab", &[("x".into(), 1)]).await.unwrap();
        s.add_counters("j", &[("x".into(), 1)]).await.unwrap();
        let a = s.counters("k:a").await.unwrap();
        assert_eq!(
            a,
            HashMap::from([("x".to_owned(), 5), ("y".to_owned(), -5)])
        );
        assert_eq!(s.counters("k:ab").await.unwrap().len(), 1);
        assert_eq!(s.counter_keys("k:").await.unwrap(), vec!["k:a", "k:ab"]);
    }

    #[tokio::test]
    async fn embedded_logs_keep_the_newest_entries() {
        let s = store("log");
        assert!(s.recent("log", 5).await.unwrap().is_empty());
        for i in 0..7 {
            s.append_capped("log", Bytes::from(format!("e{i}")), 3)
                .await
                .unwrap();
        }
        s.append_capped("other", Bytes::from_static(b"o"), 3)
            .await
            .unwrap();
        let recent = s.recent("log", 10).await.unwrap();
        assert_eq!(
            recent,
            vec![Bytes::from("e4"), Bytes::from("e5"), Bytes::from("e6")]
        );
        assert_eq!(
            s.recent("log", 2).await.unwrap(),
            vec![Bytes::from("e5"), Bytes::from("e6")]
        );
    }

    #[tokio::test]
    async fn a_batch_applies_once_per_sequence() {
        let s = store("once");
        let mut batch = CounterBatch {
            marker: "m:w1".into(),
            seq: 1,
            counters: vec![
                ("c:1".into(), vec![("n".into(), 4)]),
                ("c:2".into(), vec![("n".into(), 1)]),
            ],
            log: "log".into(),
            entries: vec![Bytes::from("a"), Bytes::from("b")],
            cap: 10,
        };
        assert!(s.apply_once(&batch).await.unwrap());
        assert!(
            !s.apply_once(&batch).await.unwrap(),
            "a retried batch is skipped"
        );
        batch.seq = 2;
        assert!(s.apply_once(&batch).await.unwrap());
        assert_eq!(s.counters("c:1").await.unwrap()["n"], 8);
        assert_eq!(s.counters("c:2").await.unwrap()["n"], 2);
        assert_eq!(s.recent("log", 10).await.unwrap().len(), 4);
    }
}
