//! `/dashboard` in a real browser: thrifty runs against the fake upstream, scripted traffic
//! seeds the ledger (misses and exact hits, two keys in two teams, a priced and an unpriced
//! model), and headless Chromium opens the page the way a person would, with the admin token
//! once in the address. The test then reads the rendered DOM and compares every figure with
//! what it computed itself from what it sent (see `tests/dashboard/traffic.rs`).
//!
//! No request may leave the host: every request the page makes is observed through the
//! DevTools protocol and must go to thrifty's loopback address; a canary page first shows that
//! an off-host request would be seen, and everything not on loopback goes to a sink proxy
//! (see `tests/dashboard/browser.rs`).

mod common;

#[path = "dashboard/browser.rs"]
mod browser;
#[path = "dashboard/traffic.rs"]
mod traffic;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use browser::{Browser, Sink};
use common::fake_llm::FakeLlm;
use common::thrifty::{Thrifty, config_for};
use serde_json::Value;
use traffic::{Call, Figures, PRICE_EFFECTIVE, PRICED_MODEL, UNPRICED_MODEL};

const TOKEN: &str = "dashboard-admin-token";

/// A local page with one off-host image: what a leak would look like.
const CANARY_URL: &str = "http://thrifty-canary.invalid/pixel.png";

/// Reads what the page shows: cards by label, table rows by section title (a cell with an
/// exact amount in its `title` reads `shown [exact]`), the daily bars' tooltips, the notes.
const READ_PAGE: &str = r#"(() => {
  const text = e => e ? e.textContent.trim() : null;
  const cards = {};
  for (const c of document.querySelectorAll('.card')) {
    const v = c.querySelector('.value');
    const box = v.getBoundingClientRect();
    cards[text(c.querySelector('.label'))] = {
      value: text(v), sub: text(c.querySelector('.sub')), exact: v.getAttribute('title'),
      visible: box.width > 0 && box.height > 0, color: getComputedStyle(v).color,
    };
  }
  const tables = {};
  for (const s of document.querySelectorAll('section')) {
    const t = s.querySelector('table');
    if (t) tables[text(s.querySelector('h2'))] = [...t.rows].slice(1).map(r =>
      [...r.cells].map(c => c.title ? text(c) + ' [' + c.title + ']' : text(c)));
  }
  return {
    cards, tables,
    days: [...document.querySelectorAll('svg[aria-label="net saved per day"] rect title')].map(text),
    notes: text(document.querySelector('.notes')),
    scripts: document.scripts.length,
    html: document.documentElement.outerHTML,
  };
})()"#;

#[tokio::test]
async fn the_dashboard_shows_the_seeded_ledger_in_a_browser_and_loads_nothing_from_elsewhere() {
    let fake = FakeLlm::start().await;
    let mut raw = config_for(&fake);
    traffic::configure(&mut raw, &fake);
    let thrifty = Thrifty::start_with_env(raw, &[("THRIFTY_ADMIN_TOKEN", TOKEN)]).await;
    let calls = traffic::seed(&thrifty.url(), &fake).await;
    wait_for_ledger(&thrifty.url(), calls.len()).await;
    let upstream_calls = fake.calls();

    let sink = Sink::start().await;
    let mut browser = Browser::launch(&sink).await;

    // The observers see a leak: an off-host image is reported and lands in the sink.
    let canary = browser.new_page().await;
    let page = format!("data:text/html,<p>canary</p><img src=\"{CANARY_URL}\">");
    let load = browser.load(&canary, &page).await;
    assert!(
        load.requests.iter().any(|u| u == CANARY_URL),
        "the canary's image request was not observed: {load:?}"
    );
    assert!(
        sink.seen()
            .iter()
            .any(|line| line.contains("thrifty-canary.invalid")),
        "the sink did not receive the canary's request: {:?}",
        sink.seen()
    );

    let page = browser.new_page().await;
    let login = format!("{}/dashboard?token={TOKEN}", thrifty.url());
    let load = browser.load(&page, &login).await;
    let local = format!("{}/", thrifty.url());
    assert!(
        load.requests.iter().all(|url| url.starts_with(&local)),
        "the dashboard requested something other than thrifty: {:?}",
        load.requests
    );
    assert_eq!(
        load.requests,
        [login, format!("{}/dashboard", thrifty.url())],
        "the token is exchanged for a cookie and the page reloads without it"
    );
    assert_eq!(load.redirects, [303]);
    assert_eq!(load.document, Some((200, "text/html".to_owned())));
    let cookies = browser
        .cookies(&page, &format!("{}/dashboard", thrifty.url()))
        .await;
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0]["httpOnly"], true);
    assert_eq!(cookies[0]["sameSite"], "Strict");
    assert_eq!(cookies[0]["path"], "/dashboard");
    assert!(!cookies[0]["value"].to_string().contains(TOKEN));

    let shown = browser.evaluate(&page, READ_PAGE).await;
    browser.close().await;

    let html = shown["html"].as_str().expect("the page's HTML");
    assert_eq!(shown["scripts"], 0, "the page runs no script");
    for needle in ["http:", "https:", "src=", "href=", "url(", "@import", "//"] {
        assert!(
            !html.contains(needle),
            "the page refers to something outside itself ({needle}): {html}"
        );
    }
    assert_shows(&shown, &calls);
    assert_eq!(
        fake.calls(),
        upstream_calls,
        "the dashboard never calls the upstream"
    );
}

/// A browser presents the token once as `?token=` and keeps a cookie that opens the dashboard
/// and nothing else; the bearer header keeps working.
#[tokio::test]
async fn a_browser_trades_the_admin_token_for_a_dashboard_cookie() {
    let fake = FakeLlm::start().await;
    let token = "s3cret token/+&";
    let thrifty =
        Thrifty::start_with_env(config_for(&fake), &[("THRIFTY_ADMIN_TOKEN", token)]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |path: &str| client.get(format!("{}{path}", thrifty.url()));

    let anonymous = get("/dashboard").send().await.expect("sent");
    assert_eq!(anonymous.status(), 401);
    let hint = anonymous.text().await.expect("body");
    assert!(hint.contains("/dashboard?token="), "{hint}");
    let wrong = get("/dashboard?token=guess").send().await.expect("sent");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let encoded = "s3cret%20token%2F%2B%26";
    let login = get(&format!(
        "/dashboard?from=2025-01-01&token={encoded}&to=2025-01-31"
    ))
    .send()
    .await
    .expect("sent");
    assert_eq!(login.status(), 303);
    let header = |name: &str| {
        login
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        header("location"),
        "/dashboard?from=2025-01-01&to=2025-01-31"
    );
    assert_eq!(header("cache-control"), "no-store");
    let set_cookie = header("set-cookie");
    let attributes: Vec<&str> = set_cookie.split("; ").collect();
    assert!(
        attributes[0].starts_with("thrifty_dashboard="),
        "{set_cookie}"
    );
    for attribute in ["Path=/dashboard", "HttpOnly", "SameSite=Strict"] {
        assert!(attributes.contains(&attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("s3cret"),
        "the cookie is not the token"
    );
    let cookie = attributes[0];

    let page = get("/dashboard?from=2025-01-01&to=2025-01-31")
        .header("cookie", format!("theme=dark; {cookie}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("2025-01-01 to 2025-01-31")
    );
    let forged = get("/dashboard")
        .header("cookie", "thrifty_dashboard=0000")
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 401);
    let elsewhere = get("/admin/savings")
        .header("cookie", cookie)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        elsewhere.status(),
        401,
        "the cookie opens the dashboard only"
    );
    let bearer = get("/dashboard")
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(bearer.status(), 200);

    let closed = Thrifty::start(config_for(&fake)).await;
    let response = client
        .get(format!("{}/dashboard?token={encoded}", closed.url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404, "no admin token, no dashboard");
}

/// Waits until the ledger has stored every call (records are written after the answer ends).
async fn wait_for_ledger(thrifty: &str, requests: usize) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report: Value = client
            .get(format!("{thrifty}/admin/savings"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        if report["total"]["requests"] == requests {
            return;
        }
        assert!(Instant::now() < deadline, "the ledger lags: {report}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Compares everything the page shows with the figures computed from `calls`.
fn assert_shows(shown: &Value, calls: &[Call]) {
    let all = Figures::of(calls);
    let net = all.net_cents();
    assert!(all.hits > 0 && all.misses() > 0 && net > 0, "{all:?}");

    let card = |label: &str| -> (String, String, String) {
        let c = &shown["cards"][label];
        assert_eq!(
            c["visible"], true,
            "card {label} is not rendered: {shown:#}"
        );
        (
            c["value"].as_str().unwrap_or_default().to_owned(),
            c["sub"].as_str().unwrap_or_default().to_owned(),
            c["exact"].as_str().unwrap_or_default().to_owned(),
        )
    };
    assert_eq!(
        card("Net saved"),
        (
            dollars(net),
            format!("{}% of baseline", hundredths(net, all.baseline_cents)),
            exact(net)
        )
    );
    assert_eq!(
        shown["cards"]["Net saved"]["color"], "rgb(26, 127, 82)",
        "the page's own stylesheet applies"
    );
    assert_eq!(
        card("Baseline cost"),
        (
            dollars(all.baseline_cents),
            "without thrifty".to_owned(),
            exact(all.baseline_cents)
        )
    );
    assert_eq!(
        card("Actual cost"),
        (
            dollars(all.actual_cents),
            "billed by upstreams".to_owned(),
            exact(all.actual_cents)
        )
    );
    assert_eq!(
        card("Overhead"),
        (
            dollars(0),
            "summaries, paid embeddings".to_owned(),
            exact(0)
        )
    );
    assert_eq!(
        card("Requests"),
        (
            all.requests.to_string(),
            "0 with estimated usage".to_owned(),
            String::new()
        )
    );
    assert_eq!(
        card("Cache hit rate"),
        (
            tenths(all.hits, all.requests),
            format!("{} exact, 0 semantic", all.hits),
            String::new()
        )
    );
    assert_eq!(
        card("Tokens saved"),
        (
            all.saved_tokens.to_string(),
            format!("of {} baseline", all.baseline_tokens),
            String::new()
        )
    );
    assert_eq!(card("Compression").0, "–", "nothing was compressed");
    assert!(
        shown["cards"].get("Ledger").is_none(),
        "nothing pending or dropped"
    );

    let table = |title: &str| -> Vec<Vec<String>> {
        serde_json::from_value(shown["tables"][title].clone())
            .unwrap_or_else(|e| panic!("no table {title:?} ({e}): {shown:#}"))
    };
    let mut outcomes = vec![
        vec![
            "miss".to_owned(),
            all.misses().to_string(),
            tenths(all.misses(), all.requests),
        ],
        vec![
            "exact hit".to_owned(),
            all.hits.to_string(),
            tenths(all.hits, all.requests),
        ],
    ];
    for other in ["semantic hit", "compressed", "bypass", "error"] {
        outcomes.push(vec![other.to_owned(), "0".to_owned(), "0.0%".to_owned()]);
    }
    assert_eq!(table("Hit rates by kind"), outcomes);

    let by_model = grouped(calls, |c| c.model);
    assert_eq!(by_model.len(), 2);
    assert_eq!(sorted(table("By model")), breakdown(&by_model));
    assert_eq!(
        sorted(table("By team")),
        breakdown(&grouped(calls, |c| c.team))
    );
    let by_key = grouped(calls, |c| c.key);
    let savers = table("Top savers");
    assert_eq!(sorted(savers.clone()), breakdown(&by_key));
    let top = by_key
        .iter()
        .max_by_key(|(_, f)| f.net_cents())
        .map(|(k, _)| k.clone());
    assert_eq!(
        savers.first().and_then(|r| r.first()).cloned(),
        top,
        "the top saver comes first"
    );

    // The daily bars add up to the totals, whichever UTC days the calls fell on.
    let (mut requests, mut cents) = (0, 0);
    for title in shown["days"].as_array().expect("daily bars") {
        let title = title.as_str().unwrap_or_default();
        let (_, rest) = title.split_once(": ").expect("day: figures");
        let (money, rest) = rest.split_once(" net saved, ").expect("net saved");
        let n = rest.strip_suffix(" requests").expect("requests");
        requests += n.parse::<i128>().expect("a count");
        cents += cents_of(money);
    }
    assert_eq!(
        (requests, cents),
        (all.requests, net),
        "{:#}",
        shown["days"]
    );

    let notes = shown["notes"].as_str().unwrap_or_default();
    let unpriced = calls.iter().filter(|c| c.model == UNPRICED_MODEL).count();
    assert!(
        notes.contains(&format!(
            "Unpriced models (tokens counted, no cost): {UNPRICED_MODEL} ({unpriced})"
        )),
        "{notes}"
    );
    assert!(
        notes.contains(&format!(
            "Price versions used: {PRICED_MODEL} from {PRICE_EFFECTIVE} ({})",
            all.priced
        )),
        "{notes}"
    );
}

fn grouped(calls: &[Call], by: impl Fn(&Call) -> &'static str) -> BTreeMap<String, Figures> {
    let mut groups: BTreeMap<String, Vec<Call>> = BTreeMap::new();
    for call in calls {
        groups
            .entry(by(call).to_owned())
            .or_default()
            .push(call.clone());
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, Figures::of(&v)))
        .collect()
}

/// The rows a breakdown table should show, sorted by label.
fn breakdown(groups: &BTreeMap<String, Figures>) -> Vec<Vec<String>> {
    groups
        .iter()
        .map(|(label, f)| {
            let net = if f.priced > 0 {
                format!("{} [{}]", dollars(f.net_cents()), exact(f.net_cents()))
            } else {
                "unpriced".to_owned()
            };
            vec![
                label.clone(),
                f.requests.to_string(),
                tenths(f.hits, f.requests),
                f.saved_tokens.to_string(),
                net,
                String::new(),
            ]
        })
        .collect()
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

/// Cents as the page shows money: `$1.23` from one dollar up, four decimals below.
fn dollars(cents: i128) -> String {
    assert!(
        (0..100_000).contains(&cents),
        "the test keeps amounts small"
    );
    if cents >= 100 {
        format!("${}.{:02}", cents / 100, cents % 100)
    } else {
        format!("$0.{cents:02}00")
    }
}

/// Cents as the exact decimal in a tooltip.
fn exact(cents: i128) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A shown amount (`$0.2600`, `$1.23`) back in cents; it must be a whole number of cents.
fn cents_of(shown: &str) -> i128 {
    let digits = shown.strip_prefix('$').expect("dollars");
    let (whole, fraction) = digits.split_once('.').expect("a decimal");
    let (cents, rest) = fraction.split_at(2);
    assert!(rest.chars().all(|c| c == '0'), "{shown} is not whole cents");
    whole.parse::<i128>().expect("dollars") * 100 + cents.parse::<i128>().expect("cents")
}

/// `part / whole` as a percentage with one decimal, rounded half up: `57.1%`.
fn tenths(part: i128, whole: i128) -> String {
    let t = (part * 2000 + whole) / (2 * whole);
    format!("{}.{}%", t / 10, t % 10)
}

/// `part / whole` as a percentage with two decimals, rounded half up: `50.00`.
fn hundredths(part: i128, whole: i128) -> String {
    let h = (part * 20_000 + whole) / (2 * whole);
    format!("{}.{:02}", h / 100, h % 100)
}
