//! What compression costs: `Compressor::compress` (extractive, the default strategy) on
//! 150-message, ~120k-token conversations, in both modes, next to the cost of merely
//! counting such a conversation's tokens once, measured in the same run. Two shapes: a
//! coding agent's tool calls and results (the latest user message is its task), and a
//! chat between two people that is all prose and ends with a question, where relevant
//! mode scores every sentence against it.
//!
//! Run it with `cargo bench --bench compress`. `THRIFTY_BENCH_ITERATIONS` (default 200) sets
//! how many conversations are compressed per shape and mode.
//!
//! Every iteration compresses two requests. **Cold**: a conversation generated with a new
//! seed, so its texts have never been counted or analysed and no cache can answer; counting
//! and analysing are included in the compression time. **Next turn**: the same conversation
//! with the assistant's answer and a new user question appended, as a chat's next request
//! arrives: the old messages' counts and analyses are cached, the newly aged ones and the
//! new question are not, and relevance is scored against the new question. The baseline
//! counts another fresh conversation of the same shape with the same counter, which is what
//! a direct call would not pay at all. The three alternate, so noise from other work on the
//! machine hits them alike. The tokenizers are built before timing starts (about half a
//! second each, once per process). The counter remembers the counts of short text pieces
//! (words, numbers, punctuation) per thread; the first compression in the process fills
//! that and is reported on its own, the iterations after it find the pieces remembered, as
//! a running proxy does.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use thrifty::chat::{ChatRequest, Message, Role};
use thrifty::compress::synthetic::{
    synthetic_agent_conversation_seeded, synthetic_chat_conversation_seeded,
};
use thrifty::compress::{Compressor, Encoding, Force, TokenCounter};
use thrifty::config::{CompressionConfig, Mode};

/// Builds a conversation of so many messages from a seed.
type Generator = fn(usize, u64) -> ChatRequest;

/// Messages in the benchmark conversations.
const MESSAGES: usize = 150;
/// The target for compressing a chat's next turn, relevance scoring included.
const TARGET_MS: f64 = 10.0;
/// The assistant's answer and the next question each shape's next turn appends.
const NEXT_TURN: [(&str, &str, &str); 2] = [
    (
        "agent",
        "The stream now ends with the last chunk and `cargo test` passes.",
        "Good. Now check whether src/handler_3.rs drops the final chunk in the same way.",
    ),
    (
        "chat",
        "You told me about both, I think. Anything else?",
        "And what did Nate say about the guitar and the museum in July?",
    ),
];

fn main() -> Result<()> {
    let iterations: usize = match std::env::var("THRIFTY_BENCH_ITERATIONS") {
        Ok(value) => value
            .parse()
            .context("THRIFTY_BENCH_ITERATIONS must be a number")?,
        Err(_) => 200,
    };
    ensure!(
        iterations > 0,
        "THRIFTY_BENCH_ITERATIONS must be above zero"
    );
    let build = Instant::now();
    TokenCounter::warm_up();
    println!(
        "tokenizer build (once per process, not timed below): {:.0} ms",
        ms(build.elapsed())
    );
    let shapes: [(&str, Generator); 2] = [
        ("agent", synthetic_agent_conversation_seeded),
        ("chat", synthetic_chat_conversation_seeded),
    ];
    for (shape, conversation) in shapes {
        for mode in [Mode::Relevant, Mode::Stable] {
            measure(shape, conversation, mode, iterations)?;
        }
    }
    Ok(())
}

/// Measures one shape in one mode and says whether the next turn's p50 met the target.
fn measure(shape: &str, conversation: Generator, mode: Mode, iterations: usize) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let config = CompressionConfig {
        mode,
        ..CompressionConfig::default()
    };
    let compressor = Compressor::offline(config.clone());

    // The first conversation this compressor sees.
    let mut chat = conversation(MESSAGES, 0);
    let started = Instant::now();
    let first = runtime.block_on(compressor.compress(&mut chat, None, Force::Auto, None));
    let first_call = started.elapsed();
    first.context("the conversation is over budget")?;

    let (answer, question) = NEXT_TURN
        .iter()
        .find(|(name, _, _)| *name == shape)
        .map(|(_, answer, question)| (*answer, *question))
        .context("a next turn for every shape")?;
    let mut cold = Vec::with_capacity(iterations);
    let mut next = Vec::with_capacity(iterations);
    let mut count = Vec::with_capacity(iterations);
    let mut first = None;
    for i in 0..iterations {
        let seed = 2 * i as u64 + 1;
        let original = conversation(MESSAGES, seed);
        let mut chat = original.clone();
        let started = Instant::now();
        let outcome = runtime.block_on(compressor.compress(&mut chat, None, Force::Auto, None));
        cold.push(started.elapsed());
        let outcome = outcome.context("the conversation is over budget")?;
        ensure!(outcome.budget_met, "budget not met: {outcome:?}");

        let mut turn = original;
        turn.messages.push(Message::text(Role::Assistant, answer));
        turn.messages.push(Message::text(Role::User, question));
        let started = Instant::now();
        let following = runtime.block_on(compressor.compress(&mut turn, None, Force::Auto, None));
        next.push(started.elapsed());
        let following = following.context("the next turn is over budget")?;
        ensure!(following.budget_met, "budget not met: {following:?}");

        let other = conversation(MESSAGES, seed + 1);
        let started = Instant::now();
        let counts = compressor.counter().request(Encoding::O200kBase, &other);
        count.push(started.elapsed());
        ensure!(counts.total() > outcome.after, "{counts:?}");
        first.get_or_insert(outcome);
    }
    let outcome = first.context("at least one iteration")?;

    println!();
    println!(
        "{shape}, mode {}: {MESSAGES} messages, {iterations} conversations and their next turns, \
         model gpt-4o (o200k_base), budget {}, {} recent kept, block {}",
        mode.as_str(),
        outcome.budget,
        config.preserve_recent_messages,
        config.block_size
    );
    println!(
        "first compression by this compressor: {:.3} ms",
        ms(first_call)
    );
    println!(
        "tokens {} -> {} ({:.3} of the prompt, {:.1}% saved), {} messages condensed",
        outcome.before,
        outcome.after,
        outcome.after as f64 / outcome.before as f64,
        100.0 * (1.0 - outcome.after as f64 / outcome.before as f64),
        outcome.condensed_messages,
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8}",
        "", "p50 ms", "p99 ms", "mean ms", "max ms"
    );
    let cold = Stats::of(cold);
    let next = Stats::of(next);
    let count = Stats::of(count);
    cold.print("compress, cold (counting included)");
    next.print("compress, next turn (new question)");
    count.print("baseline: count the prompt once, cold");
    println!(
        "compression beyond counting: {:.3} ms mean cold ({:.1}x the count alone)",
        cold.mean - count.mean,
        cold.mean / count.mean
    );
    println!(
        "next turn p50 {:.3} ms, p99 {:.3} ms (target <= {TARGET_MS} ms)  {}",
        next.p50,
        next.p99,
        if next.p50 <= TARGET_MS {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Percentiles of one series, in milliseconds.
struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
    max: f64,
}

impl Stats {
    fn of(samples: Vec<Duration>) -> Stats {
        let mut sorted: Vec<f64> = samples.into_iter().map(ms).collect();
        sorted.sort_by(f64::total_cmp);
        let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize];
        Stats {
            p50: at(50.0),
            p99: at(99.0),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            max: sorted[sorted.len() - 1],
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<44} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            self.p50, self.p99, self.mean, self.max
        );
    }
}
