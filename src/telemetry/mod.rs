//! Tracing set-up: `RUST_LOG` filters, `THRIFTY_LOG_FORMAT` picks JSON or human lines, and
//! [`lines`] writes them to stderr behind the requests.

mod lines;

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format;

use crate::config::LogFormat;

pub use lines::Flusher;

/// Installs the subscriber, writing to stderr; keep the flusher until the process ends, as
/// dropping it writes what is pending.
pub fn init(format: LogFormat) -> Option<Flusher> {
    let colour = std::io::stderr().is_terminal();
    init_with(format, Box::new(std::io::stderr()), colour)
}

/// Installs the subscriber writing to `out`: the binary's stderr, or a benchmark's file.
/// `None` when the log thread could not start (lines then go to `out` as they come) or a
/// subscriber is already installed (tests start many servers in one process; the first
/// subscriber stays).
pub fn init_with(format: LogFormat, out: Box<dyn Write + Send>, colour: bool) -> Option<Flusher> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour);
    let (lines, flusher) = lines::start(out);
    let installed = match format {
        LogFormat::Json => builder.json().with_writer(lines).try_init(),
        LogFormat::Pretty if colour => builder.with_writer(lines).try_init(),
        // Without colour the default field formatter still runs its styling for every field;
        // this writes the same `name=value` text without it.
        LogFormat::Pretty => builder
            .fmt_fields(
                format::debug_fn(|w, field, value| match field.name() {
                    "message" => write!(w, "{value:?}"),
                    name => write!(w, "{name}={value:?}"),
                })
                .delimited(" "),
            )
            .with_writer(lines)
            .try_init(),
    };
    match flusher {
        Ok(flusher) => installed.is_ok().then_some(flusher),
        Err(e) => {
            tracing::warn!(error = %e, "log lines are written as they come: no thread for them");
            None
        }
    }
}
