//! The official `openai` and `ollama` Python clients parse a replayed answer exactly like the
//! live one: `tests/python/replay.py` calls through thrifty twice per case (miss, then hit) and
//! compares what the clients parsed. It runs with the interpreter `scripts/test.sh` prepares.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::{BACKENDS, Harness};

/// How long the whole script may take; it usually needs a few seconds.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_parse_a_replay_like_the_live_answer() {
    let python = std::env::var("THRIFTY_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "THRIFTY_TEST_PYTHON is not set: run ./scripts/test.sh, which installs the official \
             openai and ollama clients into .venv and points this variable at its python"
        )
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/replay.py");
    for backend in BACKENDS {
        let h = Harness::start(backend).await;
        let mut command = Command::new(&python);
        command
            .arg(script)
            .env("THRIFTY_URL", &h.api.base)
            .env("RUN", format!("{backend:?}-{}", std::process::id()))
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in SCRUBBED_ENV {
            command.env_remove(name);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python} {script}: {e}"));
        // Awaiting (rather than blocking on) the child keeps the runtime serving thrifty.
        let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("cannot collect the output of {script}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Shown with --nocapture, and by the harness when the test fails.
        eprintln!("{backend:?}:\n{stdout}");
        assert!(
            output.status.success(),
            "{backend:?}: {script} failed ({}):\n{stdout}\n--- stderr ---\n{stderr}",
            output.status
        );
        let expected_calls: usize = stdout
            .lines()
            .find_map(|line| line.strip_prefix("upstream calls "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{backend:?}: no upstream call count in:\n{stdout}"));
        assert_eq!(
            h.fake.calls(),
            expected_calls,
            "{backend:?}: replays never reached the upstream:\n{stdout}"
        );
    }
}
