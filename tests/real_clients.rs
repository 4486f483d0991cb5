//! The official `openai` and `ollama` Python clients get through thrifty exactly what they get
//! from the upstream directly.
//!
//! `tests/python/clients.py` makes every call once against the fake upstream and once against
//! thrifty and compares what the clients parsed; this test starts both servers, runs it with the
//! interpreter `scripts/test.sh` prepares (`THRIFTY_TEST_PYTHON`), and then checks in the fake's
//! records that every case reached the upstream exactly once per side, on the same endpoint.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fake_llm::{FakeLlm, Recorded};
use common::python;
use common::thrifty::{Thrifty, config_for};

/// The headers the script tags each of its requests with.
const SIDE_HEADER: &str = "x-clients-test-side";
const CASE_HEADER: &str = "x-clients-test-case";

fn header<'a>(request: &'a Recorded, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_get_through_thrifty_what_they_get_directly() {
    let fake = FakeLlm::start().await;
    let thrifty = Thrifty::start(config_for(&fake)).await;
    let script = "clients.py";
    let output = python::run(
        script,
        &[
            ("DIRECT_OPENAI_BASE", fake.openai_base()),
            ("PROXY_OPENAI_BASE", format!("{}/v1", thrifty.url())),
            ("DIRECT_OLLAMA_HOST", fake.url()),
            ("PROXY_OLLAMA_HOST", thrifty.url()),
        ],
    )
    .await;
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
