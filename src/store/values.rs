//! The embedded store's value log: the values of single puts (recorded answers, semantic
//! records) appended to segment files beside the database, where the database's table holds
//! only where each lies.
//!
//! A random key inserted into the table rewrites a whole leaf page, so a table of answers a
//! kilobyte or two each copied several pages per put; a location is 20 bytes, so a commit of
//! many puts copies a few leaves, and the answers' bytes are written once, gathered from
//! where they lie by `writev` (a call per 1,024 values of a batch). Segments are only ever
//! appended to, each by one writer, and never reopened for writing: after a restart the log starts a new one, so a torn tail is never written past.
//! The store syncs the log before its once-a-second durable commit, but any durable commit
//! (a delete, the ledger's) also makes the locations committed before it durable: so a
//! location names its value's length and CRC-32, and a value that does not match (bytes a
//! crash of the machine lost) reads as absent, which the cache takes for a miss, until the
//! next answer under that key replaces it.
//!
//! The store's sweep removes a segment once the table names nothing in it, and moves the
//! live values of a segment that is mostly dead to the current one first, so a few entries
//! that keep being touched do not keep a whole segment on disk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// Set in a table record's expiry when the record is a [`Location`], not the value itself.
const LOGGED: u64 = 1 << 63;

/// The latest expiry a table record can hold (its top bit says whether the value is logged).
pub(super) const MAX_EXPIRY: u64 = LOGGED - 1;

/// When a table record's entry expires (inline or logged), without reading a logged value.
pub(super) fn expiry_of(record: &[u8]) -> Option<u64> {
    record
        .first_chunk::<8>()
        .map(|head| u64::from_le_bytes(*head) & MAX_EXPIRY)
}

/// Moves a table record's expiry to `expires_ms`, keeping its value, or where it lies.
pub(super) fn retime(record: &mut [u8], expires_ms: u64) {
    if let Some(head) = record.first_chunk_mut::<8>() {
        let logged = u64::from_le_bytes(*head) & LOGGED;
        *head = (expires_ms.min(MAX_EXPIRY) | logged).to_le_bytes();
    }
}

/// Values at least this long go to the log; shorter ones stay in the table, where a location
/// would save nothing.
pub(super) const MIN_LOGGED: usize = 256;

/// A segment past this size is closed (and synced) and the next write starts a new one.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;

/// Where a logged value lies, and what it must be to be read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Location {
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

/// A table record of a logged value: its expiry with [`LOGGED`] set, then its location.
pub(super) const RECORD_LEN: usize = 8 + 4 + 8 + 4 + 4;

impl Location {
    /// The table record that says the value lies here and expires at `expires_ms`.
    pub fn record(&self, expires_ms: u64) -> [u8; RECORD_LEN] {
        let mut out = [0; RECORD_LEN];
        out[..8].copy_from_slice(&(expires_ms | LOGGED).to_le_bytes());
        out[8..12].copy_from_slice(&self.segment.to_le_bytes());
        out[12..20].copy_from_slice(&self.offset.to_le_bytes());
        out[20..24].copy_from_slice(&self.len.to_le_bytes());
        out[24..28].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// The location a table record names, when it names one.
    pub fn of_record(raw: &[u8]) -> Option<Location> {
        let raw: &[u8; RECORD_LEN] = raw.try_into().ok()?;
        let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        if u64::from_le_bytes(raw[..8].try_into().ok()?) & LOGGED == 0 {
            return None;
        }
        Some(Location {
            segment: word(8),
            offset: u64::from_le_bytes(raw[12..20].try_into().ok()?),
            len: word(20),
            crc: word(24),
        })
    }
}

/// The segment being appended to.
struct Writer {
    segment: u32,
    file: Arc<File>,
    len: u64,
    /// Written since it was last synced.
    dirty: bool,
}

impl Writer {
    /// A new, empty segment numbered `segment` in `dir`, to append to.
    fn create(dir: &Path, segment: u32) -> io::Result<Writer> {
        Ok(Writer {
            segment,
            file: Arc::new(create_segment(&dir.join(segment_name(segment)))?),
            len: 0,
            dirty: false,
        })
    }
}

pub(super) struct Values {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Segments open for reading, the current one among them.
    readers: Mutex<HashMap<u32, Arc<File>>>,
    /// The size past which a segment is closed.
    segment_bytes: u64,
}

/// The number after `segment`; the log never wraps around to a number still in use.
fn next(segment: u32) -> io::Result<u32> {
    segment
        .checked_add(1)
        .ok_or_else(|| io::Error::other("the value log ran out of segment numbers"))
}

fn segment_name(segment: u32) -> String {
    format!("{segment:08}.log")
}

fn segment_of(name: &str) -> Option<u32> {
    name.strip_suffix(".log")?.parse().ok()
}

impl Values {
    /// The log in `dir` (created if need be), closing segments past `segment_bytes`; it
    /// appends to a segment after every one there.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<Values> {
        std::fs::create_dir_all(dir)?;
        let last = segments_in(dir)?.into_iter().map(|(s, _)| s).max();
        let segment = match last {
            None => 0,
            Some(last) => next(last)?,
        };
        let writer = Writer::create(dir, segment)?;
        Ok(Values {
            dir: dir.to_owned(),
            readers: Mutex::new(HashMap::from([(segment, writer.file.clone())])),
            writer: Mutex::new(writer),
            segment_bytes,
        })
    }

    pub fn path(&self, segment: u32) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    /// Closes the current segment, synced, and starts the next.
    fn rotate(&self, writer: &mut Writer) -> io::Result<()> {
        writer.file.sync_data()?;
        let started = Writer::create(&self.dir, next(writer.segment)?)?;
        self.readers
            .lock()
            .insert(started.segment, started.file.clone());
        *writer = started;
        Ok(())
    }

    /// Appends `values` in one write and returns where each lies.
    pub fn append(&self, values: &[&[u8]]) -> io::Result<Vec<Location>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut writer = self.writer.lock();
        if writer.len >= self.segment_bytes {
            self.rotate(&mut writer)?;
        }
        let mut at = Vec::with_capacity(values.len());
        let mut total = 0;
        for value in values {
            let len = u32::try_from(value.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "value over 4 GiB"))?;
            at.push(Location {
                segment: writer.segment,
                offset: writer.len + total,
                len,
                crc: crc32fast::hash(value),
            });
            total += u64::from(len);
        }
        let mut slices: Vec<IoSlice<'_>> = values.iter().map(|v| IoSlice::new(v)).collect();
        if let Err(error) = write_all_vectored(&writer.file, &mut slices) {
            // What was written of it is garbage nothing names; the next append starts a
            // segment of its own past it.
            writer.len = self.segment_bytes;
            return Err(error);
        }
        writer.len += total;
        writer.dirty = true;
        Ok(at)
    }

    /// The value at `at`, if it is there whole and unchanged.
    pub fn read(&self, at: &Location) -> Option<Bytes> {
        let file = self.reader(at.segment)?;
        // A damaged record must not make us allocate what the segment cannot hold.
        let size = file.metadata().ok()?.len();
        if at.offset.checked_add(u64::from(at.len))? > size {
            return None;
        }
        let mut value = vec![0; at.len as usize];
        file.read_exact_at(&mut value, at.offset).ok()?;
        (crc32fast::hash(&value) == at.crc).then(|| Bytes::from(value))
    }

    fn reader(&self, segment: u32) -> Option<Arc<File>> {
        if let Some(file) = self.readers.lock().get(&segment) {
            return Some(file.clone());
        }
        let file = Arc::new(File::open(self.path(segment)).ok()?);
        self.readers.lock().insert(segment, file.clone());
        Some(file)
    }

    /// Makes every value appended so far durable.
    pub fn sync(&self) -> io::Result<()> {
        let mut writer = self.writer.lock();
        if writer.dirty {
            writer.file.sync_data()?;
            writer.dirty = false;
        }
        Ok(())
    }

    /// The segment being appended to: the only one a sweep leaves alone whatever it holds.
    pub fn current(&self) -> u32 {
        self.writer.lock().segment
    }

    /// Every segment on disk and its size.
    pub fn segments(&self) -> io::Result<Vec<(u32, u64)>> {
        segments_in(&self.dir)
    }

    /// Deletes a segment nothing names any more.
    pub fn remove(&self, segment: u32) -> io::Result<()> {
        self.readers.lock().remove(&segment);
        match std::fs::remove_file(self.path(segment)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A new segment file, open to append and to read. Its name is made durable before anything
/// is written to it, so a crash never lets a later start take a number a location on disk
/// still names.
fn create_segment(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .append(true)
        .open(path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(file)
}

/// The segments in `dir` and their sizes; none when the directory has gone (a scratch
/// store's, whose current segment lives on unlinked).
fn segments_in(dir: &Path) -> io::Result<Vec<(u32, u64)>> {
    let mut found = Vec::new();
    let items = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        items => items?,
    };
    for item in items {
        let item = item?;
        let Some(segment) = item.file_name().to_str().and_then(segment_of) else {
            continue;
        };
        found.push((segment, item.metadata()?.len()));
    }
    Ok(found)
}

/// Writes every slice, in order, gathered by `writev` (the standard library's own loop over
/// it is not stable yet).
fn write_all_vectored(mut file: &File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    // Empty slices in front go first: a batch of nothing but them has nothing to write, where
    // a `writev` of them would answer 0 and read as a failed write.
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "thrifty-values-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ))
    }

    #[test]
    fn a_value_reads_back_from_its_location_and_a_changed_one_reads_as_absent() {
        let dir = scratch("read");
        let log = Values::open(&dir, SEGMENT_BYTES).unwrap();
        let at = log.append(&[b"first value", b"second"]).unwrap();
        assert_eq!(log.read(&at[0]).as_deref(), Some(&b"first value"[..]));
        assert_eq!(log.read(&at[1]).as_deref(), Some(&b"second"[..]));
        assert_eq!(Location::of_record(&at[1].record(42)), Some(at[1]));
        // A byte changed on disk: the value no longer matches its CRC.
        let file = OpenOptions::new()
            .write(true)
            .open(log.path(at[1].segment))
            .unwrap();
        file.write_all_at(b"S", at[1].offset).unwrap();
        assert_eq!(log.read(&at[1]), None);
        // A location past the segment's end: absent, and nothing of its length allocated.
        let beyond = Location {
            len: u32::MAX,
            ..at[1]
        };
        assert_eq!(log.read(&beyond), None);
        // A segment gone: absent, not an error.
        log.remove(at[0].segment).unwrap();
        assert_eq!(log.read(&at[0]), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_batch_of_more_values_than_one_writev_takes_lands_whole_and_in_order() {
        let dir = scratch("many");
        let log = Values::open(&dir, SEGMENT_BYTES).unwrap();
        let values: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| format!("value {i} {}", "x".repeat((i % 97) as usize)).into_bytes())
            .collect();
        let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let at = log.append(&slices).unwrap();
        let mut offset = 0;
        for (value, at) in values.iter().zip(&at) {
            assert_eq!(at.offset, offset, "each value right after the one before");
            assert_eq!(log.read(at).as_deref(), Some(value.as_slice()));
            offset += value.len() as u64;
        }
        let next = log.append(&[b"next batch"]).unwrap()[0];
        assert_eq!(next.offset, offset);
        assert_eq!(log.read(&next).as_deref(), Some(&b"next batch"[..]));
        let size = std::fs::metadata(log.path(next.segment)).unwrap().len();
        assert_eq!(size, offset + 10, "nothing written twice or left out");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reopened_log_appends_to_a_segment_of_its_own() {
        let dir = scratch("reopen");
        let first = Values::open(&dir, SEGMENT_BYTES)
            .unwrap()
            .append(&[b"before"])
            .unwrap()[0];
        let log = Values::open(&dir, SEGMENT_BYTES).unwrap();
        let second = log.append(&[b"after"]).unwrap()[0];
        assert!(second.segment > first.segment);
        assert_eq!(second.offset, 0);
        assert_eq!(log.read(&first).as_deref(), Some(&b"before"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_inline_record_is_not_a_location() {
        let mut inline = 42u64.to_le_bytes().to_vec();
        inline.extend_from_slice(&[0; RECORD_LEN - 8]);
        assert_eq!(Location::of_record(&inline), None);
    }
}
