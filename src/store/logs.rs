//! Capped logs in the embedded store, kept as chunks: one row holds the entries one append
//! brought (a ledger batch holds up to 256), so a batch costs one insert and, once the log
//! is full, one trim, instead of an insert and a delete per entry.
//!
//! A row is keyed `(log, sequence of its first entry)`; sequences run on without gaps, so
//! the next row's key says where a chunk ends and the cap is kept exactly: rows wholly
//! beyond it are dropped, and the one it cuts is written again without its oldest entries.
//! A chunk's value is its entry count, then each entry as its length and bytes (`u32`
//! little-endian).
//!
//! Logs written one row per entry by earlier versions (`logs`) are moved into chunks once,
//! when the store opens. A chunk that does not parse counts as empty: the next append
//! replaces it and reads skip it, so it can never stop the ledger's batches.

use redb::{ReadableTable, Table, TableDefinition, TableError, WriteTransaction};

use super::StoreError;
use super::embedded_err as err;

/// `(log, sequence of the chunk's first entry)` → chunk.
pub(super) const CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log_chunks");

/// `(log, sequence)` → entry: one row per entry, as earlier versions wrote them.
const ROWS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("logs");

/// Entries per chunk when rows written one per entry are moved into chunks.
const MIGRATED_CHUNK: usize = 256;

/// Appends `entries` to `log` as one chunk and drops its oldest entries beyond `cap`.
pub(super) fn append<E: AsRef<[u8]>>(
    table: &mut Table<(&str, u64), &[u8]>,
    log: &str,
    entries: &[E],
    cap: usize,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let next = match table
        .range((log, 0)..=(log, u64::MAX))
        .map_err(err)?
        .next_back()
    {
        Some(row) => {
            let (first, chunk) = row.map_err(err)?;
            first.value().1 + count(chunk.value()).unwrap_or(0)
        }
        None => 0,
    };
    table
        .insert((log, next), encode(entries).as_slice())
        .map_err(err)?;
    let end = next + len(entries.len());
    let keep_from = end.saturating_sub(len(cap.max(1)));
    if keep_from == 0 {
        return Ok(());
    }
    // The chunk holding the oldest entry kept; every row before it goes.
    let (start, cut) = {
        let row = table
            .range((log, 0)..=(log, keep_from))
            .map_err(err)?
            .next_back();
        let Some(row) = row else {
            return Ok(());
        };
        let (first, chunk) = row.map_err(err)?;
        let start = first.value().1;
        // A chunk that does not parse goes whole.
        let cut = (start < keep_from).then(|| skip(chunk.value(), keep_from - start));
        (start, cut)
    };
    if start > 0 {
        table
            .retain_in((log, 0)..(log, start), |_, _| false)
            .map_err(err)?;
    }
    if let Some(rest) = cut {
        table.remove((log, start)).map_err(err)?;
        if let Some(rest) = rest {
            table
                .insert((log, keep_from), rest.as_slice())
                .map_err(err)?;
        }
    }
    Ok(())
}

/// The newest `n` entries of `log`, oldest first.
pub(super) fn recent(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    log: &str,
    n: usize,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut newest_first = Vec::new();
    for row in table.range((log, 0)..=(log, u64::MAX)).map_err(err)?.rev() {
        let (_, chunk) = row.map_err(err)?;
        let entries = decode(chunk.value()).unwrap_or_default();
        for entry in entries.into_iter().rev() {
            if newest_first.len() == n {
                break;
            }
            newest_first.push(entry.to_vec());
        }
        if newest_first.len() == n {
            break;
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// Moves logs written one row per entry into chunks, keeping their sequences, and drops
/// the old table.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<(), StoreError> {
    let rows: Vec<(String, u64, Vec<u8>)> = {
        let old = match txn.open_table(ROWS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        let mut rows = Vec::new();
        for row in old.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            let (log, seq) = key.value();
            rows.push((log.to_owned(), seq, value.value().to_vec()));
        }
        rows
    };
    {
        let mut chunks = txn.open_table(CHUNKS).map_err(err)?;
        let mut start = 0;
        while start < rows.len() {
            let (log, first, _) = &rows[start];
            let run = rows[start..]
                .iter()
                .take(MIGRATED_CHUNK)
                .take_while(|(l, _, _)| l == log)
                .count();
            let entries: Vec<&[u8]> = rows[start..start + run]
                .iter()
                .map(|(_, _, v)| v.as_slice())
                .collect();
            chunks
                .insert((log.as_str(), *first), encode(&entries).as_slice())
                .map_err(err)?;
            start += run;
        }
    }
    txn.delete_table(ROWS).map_err(err)?;
    Ok(())
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn encode<E: AsRef<[u8]>>(entries: &[E]) -> Vec<u8> {
    let size = 4 + entries.iter().map(|e| 4 + e.as_ref().len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&u32_len(entries.len()).to_le_bytes());
    for entry in entries {
        let entry = entry.as_ref();
        out.extend_from_slice(&u32_len(entry.len()).to_le_bytes());
        out.extend_from_slice(entry);
    }
    out
}

fn u32_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

/// How many entries a chunk holds, if it parses.
fn count(chunk: &[u8]) -> Option<u64> {
    decode(chunk).map(|entries| len(entries.len()))
}

/// A chunk's entries; `None` unless it parses whole.
fn decode(chunk: &[u8]) -> Option<Vec<&[u8]>> {
    let n = read_u32(chunk, 0)?;
    let mut entries = Vec::with_capacity(n.min(chunk.len() / 4));
    let mut at = 4;
    for _ in 0..n {
        let size = read_u32(chunk, at)?;
        let start = at + 4;
        entries.push(chunk.get(start..start.checked_add(size)?)?);
        at = start + size;
    }
    (at == chunk.len()).then_some(entries)
}

/// The chunk without its first `n` entries; `None` when it does not parse.
fn skip(chunk: &[u8], n: u64) -> Option<Vec<u8>> {
    let entries = decode(chunk)?;
    let n = usize::try_from(n).unwrap_or(usize::MAX).min(entries.len());
    Some(encode(&entries[n..]))
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;

    fn db() -> redb::Database {
        redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap()
    }

    fn appended(db: &redb::Database, log: &str, entries: &[&str], cap: usize) {
        let txn = db.begin_write().unwrap();
        append(&mut txn.open_table(CHUNKS).unwrap(), log, entries, cap).unwrap();
        txn.commit().unwrap();
    }

    fn read(db: &redb::Database, log: &str, n: usize) -> Vec<String> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(CHUNKS).unwrap();
        recent(&table, log, n)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e).unwrap())
            .collect()
    }

    fn rows(db: &redb::Database) -> usize {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(CHUNKS).unwrap();
        usize::try_from(table.len().unwrap()).unwrap()
    }

    #[test]
    fn the_cap_is_kept_exactly_across_chunks() {
        let db = db();
        let mut all = Vec::new();
        for batch in 0..40 {
            let entries: Vec<String> = (0..(batch % 7) + 1)
                .map(|i| format!("{batch}.{i}"))
                .collect();
            let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
            appended(&db, "log", &refs, 10);
            all.extend(entries);
            let newest: Vec<String> = all[all.len().saturating_sub(10)..].to_vec();
            assert_eq!(read(&db, "log", 100), newest, "after batch {batch}");
            assert_eq!(
                read(&db, "log", 3),
                newest[newest.len().saturating_sub(3)..].to_vec()
            );
        }
        assert!(rows(&db) <= 10, "no row is left beyond the cap");
    }

    #[test]
    fn a_chunk_that_does_not_parse_never_stops_an_append() {
        let db = db();
        appended(&db, "log", &["a", "b"], 10);
        let txn = db.begin_write().unwrap();
        txn.open_table(CHUNKS)
            .unwrap()
            .insert(("log", 2), b"\xff\xff\xff\xffgarbage".as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(read(&db, "log", 10), vec!["a", "b"], "reads skip it");
        appended(&db, "log", &["c"], 10);
        assert_eq!(
            read(&db, "log", 10),
            vec!["a", "b", "c"],
            "the append replaced it"
        );
        appended(&db, "log", &["d", "e"], 2);
        assert_eq!(read(&db, "log", 10), vec!["d", "e"]);
    }

    #[test]
    fn logs_do_not_mix() {
        let db = db();
        appended(&db, "a", &["a1", "a2"], 5);
        appended(&db, "ab", &["x"], 5);
        appended(&db, "a", &["a3"], 2);
        assert_eq!(read(&db, "a", 10), vec!["a2", "a3"]);
        assert_eq!(read(&db, "ab", 10), vec!["x"]);
        assert!(read(&db, "b", 10).is_empty());
    }

    #[test]
    fn rows_of_earlier_versions_become_chunks() {
        let db = db();
        let txn = db.begin_write().unwrap();
        {
            let mut old = txn.open_table(ROWS).unwrap();
            for seq in 3..603u64 {
                old.insert(("log", seq), format!("e{seq}").as_bytes())
                    .unwrap();
            }
            old.insert(("other", 0), b"o".as_slice()).unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_write().unwrap();
        migrate(&txn).unwrap();
        txn.commit().unwrap();
        let all = read(&db, "log", 1000);
        assert_eq!(all.len(), 600);
        assert_eq!((all[0].as_str(), all[599].as_str()), ("e3", "e602"));
        assert_eq!(read(&db, "other", 5), vec!["o"]);
        assert_eq!(rows(&db), 3 + 1, "600 entries in chunks of 256, and one");
        appended(&db, "log", &["new"], 600);
        let all = read(&db, "log", 1000);
        assert_eq!((all[0].as_str(), all[599].as_str()), ("e4", "new"));
        let txn = db.begin_read().unwrap();
        assert!(
            matches!(txn.open_table(ROWS), Err(TableError::TableDoesNotExist(_))),
            "the old table is gone"
        );
    }
}
