//! Runs a script of `tests/python/` with the interpreter `scripts/test.sh` prepares
//! (`THRIFTY_TEST_PYTHON`, a venv holding the official `openai` and `ollama` clients).

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

/// How long a whole script may take; they usually need a few seconds.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// Environment variables that would point the clients elsewhere or add credentials.
const SCRUBBED_ENV: [&str; 11] = [
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "OLLAMA_HOST",
    "OLLAMA_API_KEY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "PYTHONPATH",
];

/// Runs `tests/python/<name>` with `vars` and nothing that could redirect it, and returns
/// its output. Awaiting (rather than blocking on) the child keeps the test's runtime serving
/// the servers the script talks to.
pub async fn run(name: &str, vars: &[(&str, String)]) -> Output {
    let python = std::env::var("THRIFTY_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "THRIFTY_TEST_PYTHON is not set: run ./scripts/test.sh, which installs the official \
             openai and ollama clients into .venv and points this variable at its python"
        )
    });
    let script = format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} {script}: {e}"));
    tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot collect the output of {script}: {e}"))
}
