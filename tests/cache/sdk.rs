//! The official `openai` and `ollama` Python clients parse a replayed answer exactly like the
//! live one: `tests/python/replay.py` calls through thrifty twice per case (miss, then hit) and
//! compares what the clients parsed. It runs with the interpreter `scripts/test.sh` prepares.

use rstest::rstest;

use crate::common::python;
use crate::{Backend, Harness};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_parse_a_replay_like_the_live_answer(
    #[values(Backend::Redis, Backend::Embedded)] backend: Backend,
) {
    let script = "replay.py";
    let h = Harness::start(backend).await;
    let output = python::run(
        script,
        &[
            ("THRIFTY_URL", h.api.base.clone()),
            ("RUN", format!("{backend:?}-{}", std::process::id())),
        ],
    )
    .await;
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
