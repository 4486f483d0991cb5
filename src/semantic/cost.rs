//! `thrifty eval-semantic --cost`: what the model costs per question, by question length, one
//! lookup at a time and queued all at once as background work, in wall time and in CPU time.
//!
//! CPU time is the whole process's (from `/proc/self/stat`), which while this runs is the model
//! thread's and its intra-op helpers'. It measures; it never changes how thrifty runs.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::embedder::{Embedded, Embedder};

/// The question lengths measured, in the model's word pieces (at most).
const LENGTHS: [usize; 4] = [16, 64, 128, 256];

/// Texts measured per length and mode.
const TEXTS: usize = 64;

/// One measured length and mode.
pub struct Cost {
    pub tokens: usize,
    pub batched: bool,
    pub texts: usize,
    pub wall_ms: f64,
    pub cpu_ms: f64,
}

/// Clock ticks per second of the CPU times in `/proc` (`USER_HZ`, 100 on mainstream Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The process's user plus system CPU time so far; zero where `/proc` cannot tell.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are the 14th and 15th fields; `fields` starts at the 3rd.
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / TICKS_PER_SEC)
}

/// Texts of at most `tokens` word pieces built from `sentences`, each distinct (so the memory
/// of recent vectors never answers).
fn texts_of(embedder: &Embedder, sentences: &[String], tokens: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(TEXTS);
    let mut next = sentences.iter().cycle();
    for i in 0..TEXTS {
        let mut text = format!("Question {i}:");
        for sentence in next.by_ref().take(sentences.len()) {
            let longer = format!("{text} {sentence}");
            if !embedder.fits(&longer, tokens) {
                break;
            }
            text = longer;
        }
        out.push(text);
    }
    out
}

/// Measures each length one lookup at a time and then queued all at once as background work
/// (which the model still embeds one text per run).
pub async fn measure(embedder: &Embedder, sentences: &[String]) -> Result<Vec<Cost>, String> {
    if sentences.is_empty() {
        return Err("no sentences to build questions from".to_owned());
    }
    let mut out = Vec::new();
    for (round, tokens) in LENGTHS.into_iter().enumerate() {
        let texts = texts_of(embedder, sentences, tokens);
        let (cpu, wall) = (cpu_time(), Instant::now());
        for text in &texts {
            // A distinct prefix per round, so no text repeats an earlier one.
            let text = format!("{round} {text}");
            if let Embedded::Failed = embedder.embed(&text, Duration::from_secs(60)).await {
                return Err("the model failed".to_owned());
            }
        }
        out.push(cost(
            tokens,
            false,
            texts.len(),
            wall.elapsed(),
            cpu_time() - cpu,
        ));
        let batch: Vec<String> = texts.iter().map(|t| format!("batch {round} {t}")).collect();
        let (cpu, wall) = (cpu_time(), Instant::now());
        if embedder
            .embed_many(&batch)
            .await
            .iter()
            .any(Option::is_none)
        {
            return Err("the model failed".to_owned());
        }
        out.push(cost(
            tokens,
            true,
            batch.len(),
            wall.elapsed(),
            cpu_time() - cpu,
        ));
    }
    Ok(out)
}

fn cost(tokens: usize, batched: bool, texts: usize, wall: Duration, cpu: Duration) -> Cost {
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / texts as f64;
    Cost {
        tokens,
        batched,
        texts,
        wall_ms: per(wall),
        cpu_ms: per(cpu),
    }
}

/// The measurements as a Markdown table.
pub fn render(threads: usize, costs: &[Cost]) -> String {
    let mut out = format!(
        "model cost per question, {threads} intra-op thread(s)\n\n\
         | word pieces (at most) | how | texts | wall ms per text | CPU ms per text |\n\
         |---|---|---|---|---|\n"
    );
    for c in costs {
        let how = if c.batched {
            "queued as background work"
        } else {
            "one lookup at a time"
        };
        let _ = writeln!(
            out,
            "| {} | {how} | {} | {:.2} | {:.2} |",
            c.tokens, c.texts, c.wall_ms, c.cpu_ms
        );
    }
    out
}
