//! The dashboard cookie a browser gets for presenting the admin token has a lifetime, counted
//! on thrifty's clock.

use std::time::Duration;

use reqwest::StatusCode;
use thrifty::ManualClock;

use crate::common::client::ADMIN_TOKEN;
use crate::common::fake_llm::FakeLlm;
use crate::common::thrifty::{Thrifty, config_for};

#[tokio::test]
async fn the_dashboard_cookie_expires() {
    let fake = FakeLlm::start().await;
    let clock = ManualClock::now();
    let thrifty = Thrifty::start_with_clock(
        config_for(&fake),
        &[("THRIFTY_ADMIN_TOKEN", ADMIN_TOKEN)],
        clock.clock(),
    )
    .await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = client
        .get(format!("{}/dashboard?token={ADMIN_TOKEN}", thrifty.url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let max_age: Option<u64> = cookie
        .split(';')
        .filter_map(|part| part.trim().strip_prefix("Max-Age="))
        .find_map(|v| v.parse().ok());
    assert_eq!(max_age, Some(12 * 3600), "{cookie}");
    let pair = cookie.split(';').next().unwrap_or_default().to_owned();
    let open = || {
        client
            .get(format!("{}/dashboard", thrifty.url()))
            .header(reqwest::header::COOKIE, pair.as_str())
            .send()
    };
    assert_eq!(open().await.expect("sent").status(), StatusCode::OK);
    clock.advance(Duration::from_secs(12 * 3600 - 1));
    assert_eq!(
        open().await.expect("sent").status(),
        StatusCode::OK,
        "a second before its lifetime ends"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        open().await.expect("sent").status(),
        StatusCode::UNAUTHORIZED,
        "the cookie expired with its lifetime"
    );

    let wrong = client
        .get(format!(
            "{}/dashboard?token=not-{ADMIN_TOKEN}",
            thrifty.url()
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}
