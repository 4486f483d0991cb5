//! The official openai-python client's Responses API through thrifty: `tests/python/responses.py`
//! compares what it parses directly and through thrifty, and that replays parse like the live
//! answers; here the fake's records show what reached the upstream through thrifty.

use crate::common::python;
use crate::world::{PATH, World};

const SIDE_HEADER: &str = "x-responses-test-side";

/// Upstream calls the script makes through thrifty: five compared cases (the follow-up case
/// makes two) and one miss in each of the three replay cases; every hit stays in thrifty.
const PROXIED_UPSTREAM_CALLS: usize = 6 + 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_parses_the_same_answers_and_replays() {
    let world = World::start().await;
    let script = "responses.py";
    let output = python::run(
        script,
        &[
            ("DIRECT_OPENAI_BASE", world.fake.openai_base()),
            ("PROXY_OPENAI_BASE", format!("{}/v1", world.thrifty.url())),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {script} stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(output.status.success(), "{script} failed: {stdout}");
    assert_eq!(stdout.lines().last(), Some("8 passed, 0 failed"));

    let proxied = world
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path_only() == PATH)
        .filter(|r| r.headers.get(SIDE_HEADER).is_some_and(|v| v == "proxy"))
        .count();
    assert_eq!(proxied, PROXIED_UPSTREAM_CALLS);
}
