//! The `thrifty` binary: CLI arguments, config loading, telemetry, then `thrifty::run`.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use thrifty::Config;

#[derive(Parser)]
#[command(
    version,
    about = "An OpenAI- and Ollama-compatible proxy that makes LLM APIs cheaper"
)]
struct Cli {
    /// Configuration file (TOML); built-in defaults when absent.
    #[arg(long, global = true, env = "THRIFTY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Write a self-signed localhost certificate and key for development.
    GenCert {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Print the SHA-256 of an API key, for `[[keys]] sha256` (reads the key from stdin).
    HashKey,
    /// Print the savings report from the store (the same figures as GET /admin/savings).
    Report {
        /// First day, YYYY-MM-DD (UTC); default 30 days ago.
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (UTC); default today.
        #[arg(long)]
        to: Option<String>,
        /// Comma-separated: day, model, team, key, outcome, endpoint.
        #[arg(long = "group-by")]
        group_by: Option<String>,
        /// csv, json or table.
        #[arg(long)]
        format: Option<String>,
    },
    /// Measure compression on conversations (JSONL: messages, probes): tokens, time, probe retention.
    EvalCompress {
        #[arg(long = "conversations", required = true)]
        conversations: Vec<PathBuf>,
        /// Override compression.max_context_tokens.
        #[arg(long)]
        max_context_tokens: Option<u64>,
        /// Override compression.preserve_recent_messages.
        #[arg(long)]
        preserve_recent: Option<usize>,
        /// Override compression.mode: relevant or stable.
        #[arg(long)]
        mode: Option<String>,
    },
    /// Measure semantic-cache precision and recall on labelled pairs (JSONL: a, b, label).
    EvalSemantic {
        #[arg(long = "pairs", required = true)]
        pairs: Vec<PathBuf>,
        /// Also write, per pairs file, every pair's similarity, guard verdict (pass or the rule
        /// that rejected it), label and texts to DIR/<file stem>.tsv; with --online, every
        /// step of each run (DIR/<file stem>.online.tsv, DIR/mixed.online.tsv).
        #[arg(long, value_name = "DIR")]
        dump: Option<PathBuf>,
        /// Instead, measure the model's wall and CPU time per question by length, one lookup
        /// at a time and queued as background work, on questions built from the pairs' texts.
        #[arg(long)]
        cost: bool,
        /// Stream each file's questions (then all files mixed) through the guard, index and
        /// calibration, answered by class, and report served precision and recall over time.
        #[arg(long)]
        online: bool,
        /// With --online: the seed of the question order and of exploration.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// With --online: measure semantic.mode = "static" instead of the configured mode.
        #[arg(long = "static")]
        fixed: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config),
        Command::CheckConfig => {
            Config::load(cli.config.as_deref())?;
            writeln!(std::io::stdout(), "configuration is valid")?;
            Ok(())
        }
        Command::GenCert { dir } => {
            thrifty::tls::write_self_signed(&dir)?;
            writeln!(
                std::io::stdout(),
                "wrote {0}/localhost.pem and {0}/localhost-key.pem",
                dir.display()
            )?;
            Ok(())
        }
        Command::Report {
            from,
            to,
            group_by,
            format,
        } => report(
            cli.config,
            thrifty::savings::ReportArgs {
                from,
                to,
                group_by,
                format,
            },
        ),
        Command::EvalCompress {
            conversations,
            max_context_tokens,
            preserve_recent,
            mode,
        } => {
            let mut config = Config::load(cli.config.as_deref())?.compression;
            if let Some(tokens) = max_context_tokens {
                config.max_context_tokens = tokens;
            }
            if let Some(recent) = preserve_recent {
                config.preserve_recent_messages = recent;
            }
            if let Some(mode) = mode {
                config.mode = thrifty::config::Mode::parse(&mode)
                    .ok_or_else(|| anyhow::anyhow!("--mode: \"relevant\" or \"stable\""))?;
            }
            for file in &conversations {
                let report =
                    thrifty::compress::eval::run(file, &config).map_err(anyhow::Error::msg)?;
                write!(std::io::stdout(), "{}", report.render_table())?;
            }
            Ok(())
        }
        Command::EvalSemantic {
            pairs,
            online: true,
            seed,
            dump,
            fixed,
            ..
        } => {
            dump_dir(dump.as_deref())?;
            eval_online(cli.config, &pairs, seed, fixed, dump.as_deref())
        }
        Command::EvalSemantic {
            pairs, dump, cost, ..
        } => {
            if cost {
                eval_cost(cli.config, &pairs)
            } else {
                dump_dir(dump.as_deref())?;
                eval_semantic(cli.config, &pairs, dump.as_deref())
            }
        }
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_line(&mut key)?;
            writeln!(std::io::stdout(), "{}", thrifty::auth::hash_key(&key))?;
            Ok(())
        }
    }
}

fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    // Held to the end: dropping it writes the log lines still waiting.
    let _log = thrifty::telemetry::init(config.log_format);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        thrifty::run(listener, config, shutdown_signal()).await?;
        Ok(())
    })
}

fn report(config: Option<PathBuf>, args: thrifty::savings::ReportArgs) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let text = runtime.block_on(async {
        let store = thrifty::open_store(&config.store, &thrifty::Clock::system()).map_err(|e| {
            anyhow::anyhow!("{e} (with the embedded store, stop thrifty or use GET /admin/savings)")
        })?;
        thrifty::savings::cli_report(store, config.savings.pricing.clone(), &args)
            .await
            .map_err(anyhow::Error::msg)
    })?;
    write!(std::io::stdout(), "{text}")?;
    Ok(())
}

/// Creates the directory `--dump` names, if any, before anything is measured.
fn dump_dir(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    match dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the dump directory {}", dir.display())),
        None => Ok(()),
    }
}

fn eval_semantic(
    config: Option<PathBuf>,
    files: &[PathBuf],
    dump: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    let embedder = thrifty::semantic::embedder::Embedder::shared(&config.semantic.model_dir)
        .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut out = std::io::stdout();
    for file in files {
        let scores = runtime
            .block_on(thrifty::semantic::eval::score(&embedder, file))
            .map_err(anyhow::Error::msg)?;
        if let Some(dir) = dump {
            let name = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let lines: String = scores.iter().map(|pair| pair.tsv()).collect();
            std::fs::write(dir.join(format!("{name}.tsv")), lines)?;
        }
        let rows = thrifty::semantic::eval::sweep(&scores, &thrifty::semantic::eval::thresholds());
        write!(
            out,
            "{}",
            thrifty::semantic::eval::render(&file.display().to_string(), &rows)
        )?;
        writeln!(out)?;
    }
    Ok(())
}

fn eval_cost(config: Option<PathBuf>, files: &[PathBuf]) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    let threads = config.semantic.threads;
    let embedder =
        // One worker: the cost is measured one lookup at a time.
        thrifty::semantic::embedder::Embedder::shared_with(&config.semantic.model_dir, threads, 1)
            .map_err(anyhow::Error::msg)?;
    let mut sentences = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let pair: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}: not a pairs file", file.display()))?;
            sentences.extend(
                ["a", "b"]
                    .iter()
                    .filter_map(|k| pair[k].as_str().map(str::to_owned)),
            );
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let costs = runtime
        .block_on(thrifty::semantic::cost::measure(&embedder, &sentences))
        .map_err(anyhow::Error::msg)?;
    write!(
        std::io::stdout(),
        "{}",
        thrifty::semantic::cost::render(threads, &costs)
    )?;
    Ok(())
}

fn eval_online(
    config: Option<PathBuf>,
    files: &[PathBuf],
    seed: u64,
    fixed: bool,
    dump: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use thrifty::semantic::online::{self, Workload};
    let mut config = Config::load(config.as_deref())?;
    if fixed {
        config.semantic.mode = thrifty::config::SemanticMode::Static;
    }
    let embedder = thrifty::semantic::embedder::Embedder::shared(&config.semantic.model_dir)
        .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut out = std::io::stdout();
    let mut parts = Vec::new();
    let mut all_vectors = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let workload =
            Workload::read(&name, std::slice::from_ref(file)).map_err(anyhow::Error::msg)?;
        let vectors = runtime
            .block_on(online::embed(&embedder, &workload))
            .map_err(anyhow::Error::msg)?;
        let run = runtime.block_on(online::run(&workload, &vectors, &config.semantic, seed));
        if let Some(dir) = dump {
            let stem = file.file_stem().unwrap_or_default().to_string_lossy();
            std::fs::write(
                dir.join(format!("{stem}.online.tsv")),
                online::tsv(&workload, &run),
            )?;
        }
        writeln!(
            out,
            "{}",
            online::render(&workload, &run, config.semantic.mode)
        )?;
        all_vectors.extend(vectors);
        parts.push(workload);
    }
    if parts.len() > 1 {
        let mix = Workload::mix("all files mixed", &parts);
        let run = runtime.block_on(online::run(&mix, &all_vectors, &config.semantic, seed));
        if let Some(dir) = dump {
            std::fs::write(dir.join("mixed.online.tsv"), online::tsv(&mix, &run))?;
        }
        writeln!(out, "{}", online::render(&mix, &run, config.semantic.mode))?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
