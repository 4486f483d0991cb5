//! The official `openai` and `ollama` Python clients get through thrifty exactly what they get
//! from the upstream directly.
//!
//! `tests/python/clients.py` makes every call once against the fake upstream and once against
//! thrifty and compares what the clients parsed; this test starts both servers, runs it with the
//! interpreter `scripts/test.sh` prepares (`THRIFTY_TEST_PYTHON`), and then checks in the fake's
//! records that every case reached the upstream exactly once per side, on the same endpoint.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::fake_llm::{FakeLlm, Recorded};
use common::thrifty::{Thrifty, config_for};
use tokio::process::Command;

/// How long the whole script may take; it usually needs a few seconds.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The headers the script tags each of its requests with.
const SIDE_HEADER: &str = "x-clients-test-side";
const CASE_HEADER: &str = "x-clients-test-case";

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

fn header<'a>(request: &'a Recorded, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_get_through_thrifty_what_they_get_directly() {
    let python = std::env::var("THRIFTY_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "THRIFTY_TEST_PYTHON is not set: run ./scripts/test.sh, which installs the official clients into .venv"
        )
    });
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/clients.py");

    let mut command = Command::new(&python);
    command
        .arg(script)
        .env("DIRECT_OPENAI_BASE", fake.openai_base())
        .env("PROXY_OPENAI_BASE", format!("{}/v1", thrifty.url()))
        .env("DIRECT_OLLAMA_HOST", fake.url())
        .env("PROXY_OLLAMA_HOST", thrifty.url())
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
    // Awaiting (rather than blocking on) the child keeps the runtime serving the fake and thrifty.
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot collect the output of {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {script} stdout ---\n{stdout}");
    if !stderr.trim().is_empty() {
        println!("--- {script} stderr ---\n{stderr}");
    }

    let mut problems = Vec::new();
    if !output.status.success() {
        problems.push(format!("the script failed ({})", output.status));
    }
    let cases: Vec<&str> = stdout
        .lines()
        .filter_map(|line| {
            line.strip_prefix("ok ").or_else(|| {
                line.strip_prefix("FAIL ")
                    .map(|rest| rest.split(':').next().unwrap_or(rest))
            })
        })
        .collect();
    let summary = stdout.lines().last().unwrap_or_default();
    let expected_summary = format!("{} passed, 0 failed", cases.len());
    if cases.is_empty() || summary != expected_summary {
        problems.push(format!(
            "the summary line is {summary:?}, expected {expected_summary:?} after {} cases",
            cases.len()
        ));
    }

    // Every case must have reached the fake once directly and once through thrifty (the script
    // checked that the proxied answer came back through thrifty), on the same method and path.
    let mut seen: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for request in fake.requests() {
        let side = header(&request, SIDE_HEADER)
            .unwrap_or("untagged")
            .to_owned();
        let case = header(&request, CASE_HEADER)
            .unwrap_or("untagged")
            .to_owned();
        seen.entry((case, side))
            .or_default()
            .push(format!("{} {}", request.method, request.path));
    }
    for case in &cases {
        let of = |side: &str| {
            seen.get(&((*case).to_owned(), side.to_owned()))
                .cloned()
                .unwrap_or_default()
        };
        let (direct, proxy) = (of("direct"), of("proxy"));
        if direct.len() != 1 || proxy.len() != 1 || direct != proxy {
            problems.push(format!(
                "case {case} reached the fake as direct {direct:?} and proxied {proxy:?}; expected one identical request each"
            ));
        }
    }
    let expected_calls = 2 * cases.len();
    if fake.calls() != expected_calls {
        problems.push(format!(
            "the fake saw {} requests, expected {expected_calls} (2 per case): {seen:?}",
            fake.calls()
        ));
    }

    assert!(
        thrifty.shutdown(Duration::from_secs(5)).await,
        "thrifty did not shut down"
    );
    assert!(
        problems.is_empty(),
        "the real-clients comparison failed:\n{}",
        problems.join("\n")
    );
}
