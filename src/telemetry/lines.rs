//! Log lines gathered in memory and written by a thread of their own, a batch at a time.
//!
//! A request formats its line and appends it to the pending batch; it never waits on the
//! terminal, pipe or journal behind stderr, and a busy second costs a `write` per batch
//! instead of one per line. A batch is written once its first line has waited [`LINGER`], or
//! at once when it reaches [`BATCH_BYTES`]. What waits is bounded: past [`MAX_PENDING`] lines
//! are dropped, and the next batch says how many.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait for others to share its `write`.
const LINGER: Duration = Duration::from_millis(100);
/// A batch this large is written without waiting out the linger.
const BATCH_BYTES: usize = 64 * 1024;
/// The most that may wait to be written; lines beyond it are dropped and counted.
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// Where the subscriber writes its lines: the shared pending batch.
#[derive(Clone)]
pub struct Lines {
    shared: Arc<Shared>,
}

/// Writes what is pending and stops the writing thread when dropped.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer: the first line of a batch, a full batch, or the end.
    ready: Condvar,
    out: Mutex<Box<dyn Write + Send>>,
    max_pending: usize,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    closed: bool,
}

/// Starts the writing thread (`thrifty-log`) over `out`. Should the thread not start, the
/// lines are written to `out` as they come, as they are after shutdown.
pub fn start(out: Box<dyn Write + Send>) -> (Lines, io::Result<Flusher>) {
    start_bounded(out, MAX_PENDING)
}

fn start_bounded(out: Box<dyn Write + Send>, max_pending: usize) -> (Lines, io::Result<Flusher>) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        ready: Condvar::new(),
        out: Mutex::new(out),
        max_pending,
    });
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("thrifty-log".into())
        .spawn(move || writer.run());
    let flusher = match thread {
        Ok(thread) => Ok(Flusher {
            shared: shared.clone(),
            thread: Some(thread),
        }),
        Err(e) => {
            lock(&shared.pending).closed = true;
            Err(e)
        }
    };
    (Lines { shared }, flusher)
}

impl Lines {
    fn append(&self, line: &[u8]) {
        let shared = &self.shared;
        let mut pending = lock(&shared.pending);
        if pending.closed {
            // Past shutdown (or without a thread) nothing batches: the line goes straight out.
            drop(pending);
            let _ = lock(&shared.out).write_all(line);
            return;
        }
        let before = pending.bytes.len();
        if before + line.len() > shared.max_pending {
            pending.dropped += 1;
            return;
        }
        pending.bytes.extend_from_slice(line);
        let wake = before == 0 || (before < BATCH_BYTES && pending.bytes.len() >= BATCH_BYTES);
        drop(pending);
        if wake {
            shared.ready.notify_one();
        }
    }
}

impl Write for &Lines {
    /// The whole of `buf`, at once: the subscriber hands over one event per call, so lines
    /// of concurrent requests never interleave.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = &'a Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Shared {
    fn run(&self) {
        let mut batch = Vec::new();
        loop {
            let (dropped, closed) = {
                let mut pending = lock(&self.pending);
                while pending.bytes.is_empty() && pending.dropped == 0 && !pending.closed {
                    pending = self
                        .ready
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if pending.bytes.len() < BATCH_BYTES && !pending.closed {
                    pending = self
                        .ready
                        .wait_timeout(pending, LINGER)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                std::mem::swap(&mut batch, &mut pending.bytes);
                (std::mem::take(&mut pending.dropped), pending.closed)
            };
            if dropped > 0 {
                let _ = writeln!(
                    batch,
                    "thrifty: {dropped} log lines dropped: more than {} bytes waited to be written",
                    self.max_pending
                );
            }
            if !batch.is_empty() {
                let mut out = lock(&self.out);
                let _ = out.write_all(&batch).and_then(|()| out.flush());
            }
            if closed {
                return;
            }
            batch.clear();
            if batch.capacity() > 4 * BATCH_BYTES {
                batch = Vec::new();
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        lock(&self.shared.pending).closed = true;
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    /// Records each `write` it gets, and can be held shut to stand for a stuck terminal.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = lock(&self.gate);
            lock(&self.writes).push(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.writes).concat()).expect("UTF-8 lines")
        }
    }

    fn line(i: usize) -> String {
        format!("line {i} {}\n", "x".repeat(i % 50))
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_in_few_writes() {
        let out = Recorder::default();
        let (lines, flusher) = start(Box::new(out.clone()));
        let flusher = flusher.expect("the log thread starts");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        (&lines)
                            .write_all(line(t * 10_000 + i).as_bytes())
                            .expect("appends");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a writer thread");
        }
        drop(flusher);
        let text = out.text();
        let written: Vec<&str> = text.lines().collect();
        assert_eq!(written.len(), 8_000, "every line, none twice");
        for t in 0..4 {
            let own: Vec<String> = written
                .iter()
                .filter(|l| {
                    l.split(' ')
                        .nth(1)
                        .and_then(|n| n.parse::<usize>().ok())
                        .is_some_and(|n| n / 10_000 == t)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            let expected: Vec<String> = (0..2_000).map(|i| line(t * 10_000 + i)).collect();
            assert_eq!(own, expected, "thread {t}'s lines whole and in its order");
        }
        let writes = lock(&out.writes).len();
        assert!(writes < 200, "8,000 lines took {writes} writes");
    }

    #[test]
    fn a_lone_line_is_written_after_the_linger_without_a_shutdown() {
        let out = Recorder::default();
        let (lines, flusher) = start(Box::new(out.clone()));
        let _flusher = flusher.expect("the log thread starts");
        let started = Instant::now();
        (&lines).write_all(b"served status=200\n").expect("appends");
        while out.text().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the line was not written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.text(), "served status=200\n");
    }

    #[test]
    fn a_stuck_output_drops_lines_past_the_bound_and_says_how_many() {
        let out = Recorder::default();
        let (lines, flusher) = start_bounded(Box::new(out.clone()), 1_000);
        let flusher = flusher.expect("the log thread starts");
        // Taken after the flusher, so that a failing assertion lets the writer go before the
        // flusher waits for it.
        let held = lock(&out.gate);
        // The first line is taken into a batch whose write the gate holds; then the pending
        // batch fills to its bound while the writer is stuck.
        (&lines).write_all(b"first\n").expect("appends");
        let started = Instant::now();
        while !lock(&lines.shared.pending).bytes.is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the batch was not taken"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let (taken, seen) = mpsc::channel();
        std::thread::spawn(move || {
            while lock(&lines.shared.pending).bytes.len() < 1_000 - 10 {
                (&lines).write_all(b"0123456789\n").expect("appends");
            }
            for _ in 0..50 {
                (&lines).write_all(b"0123456789\n").expect("appends");
            }
            let _ = taken.send(lock(&lines.shared.pending).bytes.len());
        });
        let waiting = seen
            .recv_timeout(Duration::from_secs(10))
            .expect("appending never blocks on a stuck output");
        assert!(waiting <= 1_000, "{waiting} bytes wait past the bound");
        drop(held);
        drop(flusher);
        let text = out.text();
        assert!(text.starts_with("first\n"), "{text}");
        assert!(
            text.contains("thrifty: 50 log lines dropped"),
            "the drop is reported: {text}"
        );
    }
}
