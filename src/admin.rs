//! The admin API under `/admin`: cache statistics, invalidation, entry
//! inspection and warm-up. It exists only when `THRIFTY_ADMIN_TOKEN` is set
//! (404 otherwise) and answers only to that bearer token; `/dashboard` also admits the
//! cookie a browser gets for presenting the token once as `?token=`.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::body::Body;
use crate::cache::entry::{EmbeddingEntry, Entry};
use crate::cache::invalidate::{self, Selector, State};
use crate::cache::{ANSWER_PREFIX, EMBEDDING_PREFIX};
use crate::compress::conversations;
use crate::error::ProxyError;
use crate::headers::names;
use crate::pipeline::{Proxy, read_body};
use crate::{dialect, reply, router, savings};

/// Whether a presented secret equals the expected one: their digests are compared in constant
/// time, so neither the content nor the length of the expected one shows in the timing.
fn same_secret(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented.as_slice().ct_eq(expected.as_slice()).into()
}

/// Checks the bearer token.
fn authorize(proxy: &Proxy, request: &Request<Incoming>) -> Result<(), ProxyError> {
    let Some(token) = &proxy.config().admin_token else {
        return Err(ProxyError::NotFound(format!(
            "unknown path {}",
            request.uri().path()
        )));
    };
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same_secret(presented, token.expose()) {
        Ok(())
    } else {
        Err(ProxyError::Unauthorized("admin token required".to_owned()))
    }
}

pub async fn handle(
    proxy: &Proxy,
    request: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    if request.uri().path() == "/dashboard" {
        return dashboard(proxy, &request).await;
    }
    authorize(proxy, &request)?;
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/admin/cache/stats") => stats(proxy).await,
        (Method::GET, "/admin/compression/stats") => Ok(reply::json(
            StatusCode::OK,
            &crate::fleet::compression(proxy.fleet(), proxy.stat_sources()).await,
        )),
        (Method::GET, "/admin/semantic/calibration") => Ok(reply::json(
            StatusCode::OK,
            &proxy.calibration().report(None).await,
        )),
        (Method::GET, "/admin/savings") => savings(proxy, request.uri().query()).await,
        (Method::GET, "/admin/savings/audit") => audit(proxy, request.uri().query()).await,
        (Method::GET, "/metrics") => {
            // Answers already sent whose records are still being made count in this scrape.
            let _ = tokio::time::timeout(METRICS_WAIT, proxy.ledger().arrived()).await;
            let mut more: Vec<_> = proxy.semantic().map(|s| s.metrics()).into_iter().collect();
            more.extend(crate::fleet::metrics(proxy.fleet(), proxy.stat_sources()).await);
            Ok(text(
                savings::METRICS_CONTENT_TYPE,
                proxy.ledger().metrics(&more),
            ))
        }
        (Method::POST, "/admin/cache/invalidate") => {
            let query = request.uri().query().map(str::to_owned);
            let body = json_body(proxy, request).await?;
            invalidate(proxy, body, query.as_deref()).await
        }
        (Method::GET, p) if p.starts_with("/admin/cache/jobs/") => {
            job(proxy, &p["/admin/cache/jobs/".len()..])
        }
        (Method::POST, "/admin/cache/warm") => {
            let body = json_body(proxy, request).await?;
            warm(proxy, body).await
        }
        (method, p) if p.starts_with("/admin/cache/entries/") => {
            let id = &p["/admin/cache/entries/".len()..];
            entry(proxy, &method, id).await
        }
        (method, p) if p.starts_with("/admin/conversations/") => {
            let name = &p["/admin/conversations/".len()..];
            conversation(proxy, &method, name, request.uri().query()).await
        }
        (_, p) => Err(ProxyError::NotFound(format!("unknown admin path {p}"))),
    }
}

async fn json_body<T: for<'de> Deserialize<'de>>(
    proxy: &Proxy,
    request: Request<Incoming>,
) -> Result<T, ProxyError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, proxy.config().max_body_bytes).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ProxyError::bad_request(format!("invalid admin request body: {e}")))
}

fn store_error(e: crate::store::StoreError) -> ProxyError {
    ProxyError::UpstreamUnavailable {
        upstream: "store".to_owned(),
        reason: e.to_string(),
    }
}

fn text(content_type: &str, body: String) -> Response<Body> {
    let mut response = Response::new(crate::body::full(body));
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

/// `GET /admin/savings?from=&to=&group_by=&format=json|csv`.
async fn savings(proxy: &Proxy, query: Option<&str>) -> Result<Response<Body>, ProxyError> {
    let query =
        savings::parse_query(query.unwrap_or(""), today(proxy)).map_err(ProxyError::bad_request)?;
    let ledger = proxy.ledger();
    ledger.flush().await;
    let report = ledger.report(&query).await.map_err(store_error)?;
    let (content_type, body) = report.render();
    Ok(text(content_type, body))
}

/// `GET /admin/savings/audit?limit=&format=json|csv`: the newest raw records of the audit log,
/// oldest first, with the prices applied to each.
async fn audit(proxy: &Proxy, query: Option<&str>) -> Result<Response<Body>, ProxyError> {
    let query = savings::parse_audit_query(query.unwrap_or("")).map_err(ProxyError::bad_request)?;
    let records = proxy
        .ledger()
        .recent(query.limit)
        .await
        .map_err(store_error)?;
    Ok(match query.format {
        savings::Format::Csv => text(
            "text/csv; charset=utf-8",
            savings::report::audit_csv(&records),
        ),
        _ => reply::json(StatusCode::OK, &json!({ "records": records })),
    })
}

/// How long a scrape waits for the records of answers already sent (see
/// [`crate::savings::Ledger::arrived`]).
const METRICS_WAIT: Duration = Duration::from_secs(1);

/// The cookie that admits a browser to `/dashboard` after it presented the admin token once.
const DASHBOARD_COOKIE: &str = "thrifty_dashboard";

/// How long the dashboard cookie admits a browser, in seconds; then the token is asked again.
const DASHBOARD_COOKIE_LIFETIME: u64 = 12 * 3600;

/// `GET /dashboard`: one self-contained page, no external requests.
///
/// A browser cannot send the bearer header, so it opens `/dashboard?token=…` once: the answer
/// is a redirect to the same page without the token that sets [`DASHBOARD_COOKIE`], which
/// admits it from then on. The bearer header works as on every admin path.
async fn dashboard(
    proxy: &Proxy,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    if request.method() != Method::GET {
        authorize(proxy, request)?;
        return Err(ProxyError::NotFound(
            "unknown admin path /dashboard: use GET".to_owned(),
        ));
    }
    let (token, rest) = take_token(request.uri().query().unwrap_or(""));
    if let Some(token) = token {
        return dashboard_login(proxy, &token, &rest);
    }
    if !has_dashboard_cookie(proxy, request.headers()) {
        authorize(proxy, request).map_err(|e| match e {
            ProxyError::Unauthorized(_) => ProxyError::Unauthorized(
                "admin token required: send it as a bearer token, or open /dashboard?token=<admin token> in a browser".to_owned(),
            ),
            e => e,
        })?;
    }
    let query = savings::parse_query(&rest, today(proxy)).map_err(ProxyError::bad_request)?;
    proxy.ledger().flush().await;
    let html = savings::dashboard_html(proxy.ledger(), &query).await;
    let mut response = text("text/html; charset=utf-8", html);
    response.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
        ),
    );
    Ok(response)
}

/// Checks a token presented as `?token=` and answers with the cookie and a redirect to the
/// page without the token, so it leaves the address bar and the history.
fn dashboard_login(proxy: &Proxy, token: &str, rest: &str) -> Result<Response<Body>, ProxyError> {
    let Some(admin) = &proxy.config().admin_token else {
        return Err(ProxyError::NotFound("unknown path /dashboard".to_owned()));
    };
    if !same_secret(token, admin.expose()) {
        return Err(ProxyError::Unauthorized("wrong admin token".to_owned()));
    }
    let location = if rest.is_empty() {
        "/dashboard".to_owned()
    } else {
        format!("/dashboard?{rest}")
    };
    let secure = if proxy.config().tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let expires = proxy.clock().now_secs() + DASHBOARD_COOKIE_LIFETIME;
    let cookie = format!(
        "{DASHBOARD_COOKIE}={}; Max-Age={DASHBOARD_COOKIE_LIFETIME}; Path=/dashboard; HttpOnly; SameSite=Strict{secure}",
        dashboard_cookie_value(admin.expose(), expires)
    );
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    for (name, value) in [
        (http::header::LOCATION, location),
        (http::header::SET_COOKIE, cookie),
        (http::header::CACHE_CONTROL, "no-store".to_owned()),
        (http::header::REFERRER_POLICY, "no-referrer".to_owned()),
    ] {
        let value = http::HeaderValue::from_str(&value)
            .map_err(|_| ProxyError::bad_request("invalid dashboard query"))?;
        headers.insert(name, value);
    }
    Ok(response)
}

/// The day reports end on unless they say otherwise.
fn today(proxy: &Proxy) -> savings::Day {
    savings::Day::from_unix_ms(proxy.clock().now_ms())
}

/// The cookie's value: when it expires (Unix seconds) and a digest of that time and the admin
/// token, so the cookie opens the dashboard only, survives restarts, stops working when it
/// expires or the token changes, and cannot be given a later expiry without the token.
fn dashboard_cookie_value(admin_token: &str, expires: u64) -> String {
    let digest = Sha256::digest(format!(
        "thrifty dashboard cookie\n{expires}\n{admin_token}"
    ));
    format!("{expires}.{}", hex::encode(digest))
}

/// Whether `value` is a dashboard cookie for `admin_token` that has not expired at `now`.
fn valid_dashboard_cookie(admin_token: &str, value: &str, now: u64) -> bool {
    let Some(expires) = value
        .split_once('.')
        .and_then(|(expires, _)| expires.parse::<u64>().ok())
    else {
        return false;
    };
    expires > now && same_secret(value, &dashboard_cookie_value(admin_token, expires))
}

fn has_dashboard_cookie(proxy: &Proxy, headers: &http::HeaderMap) -> bool {
    let Some(admin) = &proxy.config().admin_token else {
        return false;
    };
    let now = proxy.clock().now_secs();
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| {
            name == DASHBOARD_COOKIE && valid_dashboard_cookie(admin.expose(), value, now)
        })
}

/// Splits `token=` off a query string: the decoded token, and the other pairs as sent.
fn take_token(query: &str) -> (Option<String>, String) {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("token", _)) => {
                token = form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .map(|(_, value)| value.into_owned());
            }
            _ => rest.push(pair),
        }
    }
    (token, rest.join("&"))
}

async fn stats(proxy: &Proxy) -> Result<Response<Body>, ProxyError> {
    let cache = proxy.cache();
    let store = cache.store();
    let mut out = crate::fleet::cache(proxy.fleet(), proxy.stat_sources()).await;
    // Lengths only: reading every value took seconds and moved the whole cache.
    let tallies =
        futures_util::future::try_join(store.tally(ANSWER_PREFIX), store.tally(EMBEDDING_PREFIX));
    match tallies.await {
        Ok((answers, embeddings)) => {
            out["entries"] = json!({"answers": answers.entries, "embeddings": embeddings.entries});
            out["bytes"] = json!(answers.bytes + embeddings.bytes);
        }
        Err(e) => out["entries_error"] = json!(e.to_string()),
    }
    out["evictions"] = json!(store.evictions());
    if let Some((segments, bytes)) = store.value_log() {
        out["value_log"] = json!({"segments": segments, "bytes": bytes});
    }
    out["store"] = json!(store.kind());
    out["store_errors"] = json!(store.errors());
    out["store_skipped"] = json!(store.skipped());
    if let Some(known) = cache.known_answers() {
        out["known_answers"] = known;
    }
    Ok(reply::json(StatusCode::OK, &out))
}

/// How long `POST /admin/cache/invalidate` waits for its job before answering 202.
const INVALIDATE_WAIT: Duration = Duration::from_secs(5);

/// The longest wait a client may ask for with `?wait=`.
const INVALIDATE_WAIT_MAX: Duration = Duration::from_secs(60);

/// `POST /admin/cache/invalidate[?wait=SECONDS]`: starts a job and waits for it up to
/// `wait` seconds (5 by default). A job done by then answers 200 with what it removed; one
/// still running answers 202 with its id and `/admin/cache/jobs/{id}`, where it reports its
/// progress.
async fn invalidate(
    proxy: &Proxy,
    selector: Selector,
    query: Option<&str>,
) -> Result<Response<Body>, ProxyError> {
    if selector.is_empty() {
        return Err(ProxyError::bad_request(
            "name at least one of tenant, namespace, model, tag, key_prefix, or all: true",
        ));
    }
    let wait =
        match form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(k, _)| k == "wait") {
            None => INVALIDATE_WAIT,
            Some((_, v)) => v
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs)
                .filter(|w| *w <= INVALIDATE_WAIT_MAX)
                .ok_or_else(|| {
                    ProxyError::bad_request(format!(
                        "wait is a whole number of seconds up to {}",
                        INVALIDATE_WAIT_MAX.as_secs()
                    ))
                })?,
        };
    let semantic = proxy.semantic().cloned();
    let forget: invalidate::ForgetRecords = Box::new(move |keys| {
        if let Some(semantic) = &semantic {
            semantic.forget_records(keys);
        }
    });
    let job = invalidate::start(proxy.cache(), selector, forget);
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    while job.state() == State::Running && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    let mut body = job.json();
    match job.state() {
        State::Done => Ok(reply::json(StatusCode::OK, &body)),
        State::Running => {
            body["status"] = json!(format!("/admin/cache/jobs/{}", job.id));
            Ok(reply::json(StatusCode::ACCEPTED, &body))
        }
        State::Failed(reason) => Err(ProxyError::UpstreamUnavailable {
            upstream: "store".to_owned(),
            reason,
        }),
    }
}

/// `GET /admin/cache/jobs/{id}`: an invalidation job's progress.
fn job(proxy: &Proxy, id: &str) -> Result<Response<Body>, ProxyError> {
    match proxy.cache().jobs().get(id) {
        Some(job) => Ok(reply::json(StatusCode::OK, &job.json())),
        None => Err(ProxyError::NotFound(format!("no invalidation job {id}"))),
    }
}

async fn entry(proxy: &Proxy, method: &Method, id: &str) -> Result<Response<Body>, ProxyError> {
    if id.len() < 8 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ProxyError::bad_request(
            "an entry id is at least 8 hex digits of its key",
        ));
    }
    let cache = proxy.cache();
    let mut found = Vec::new();
    for prefix in [ANSWER_PREFIX, EMBEDDING_PREFIX] {
        let keys = cache
            .store()
            .keys(&format!("{prefix}{id}"))
            .await
            .map_err(store_error)?;
        found.extend(keys);
    }
    let key = match found.as_slice() {
        [] => return Err(ProxyError::NotFound(format!("no cache entry {id}"))),
        [one] => one.clone(),
        _ => {
            return Ok(reply::json(
                StatusCode::CONFLICT,
                &json!({"error": {"message": format!("{id} matches {} entries: give more digits", found.len()), "type": "invalid_request_error", "param": null, "code": "ambiguous_key"}}),
            ));
        }
    };
    if method == Method::DELETE {
        let deleted = cache
            .delete(std::slice::from_ref(&key))
            .await
            .map_err(store_error)?;
        return Ok(reply::json(StatusCode::OK, &json!({"deleted": deleted})));
    }
    if method != Method::GET {
        return Err(ProxyError::NotFound(
            "use GET or DELETE on an entry".to_owned(),
        ));
    }
    let raw = cache.store().get(&key).await.map_err(store_error)?;
    let expires_in = cache.store().expires_in(&key).await.map_err(store_error)?;
    let entry: Option<Value> = raw.and_then(|r| {
        if key.starts_with(ANSWER_PREFIX) {
            cache
                .sealer()
                .open::<Entry>(&r)
                .and_then(|e| serde_json::to_value(e).ok())
        } else {
            cache
                .sealer()
                .open::<EmbeddingEntry>(&r)
                .and_then(|e| serde_json::to_value(e).ok())
        }
    });
    match entry {
        Some(entry) => Ok(reply::json(
            StatusCode::OK,
            &json!({
                "key": key,
                "entry": entry,
                "expires_in_ms": expires_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }),
        )),
        None => Err(ProxyError::NotFound(format!(
            "no readable cache entry {id}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmRequest {
    requests: Vec<WarmItem>,
}

/// One call to make now, as a client would: a path, a body and optional headers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmItem {
    path: String,
    body: Value,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

async fn warm(proxy: &Proxy, warm: WarmRequest) -> Result<Response<Body>, ProxyError> {
    let mut results = Vec::with_capacity(warm.requests.len());
    for item in warm.requests {
        let route = router::route(&Method::POST, &item.path);
        let router::Route::Api { dialect, endpoint } = route else {
            results.push(json!({"path": item.path, "error": "not a cacheable endpoint"}));
            continue;
        };
        let mut builder = Request::builder().method(Method::POST).uri(&item.path);
        for (name, value) in &item.headers {
            builder = builder.header(name, value);
        }
        let Ok(request) = builder.body(()) else {
            results.push(json!({"path": item.path, "error": "invalid headers"}));
            continue;
        };
        let (parts, ()) = request.into_parts();
        let bytes = Bytes::from(item.body.to_string());
        let outcome = match proxy.intercept_bytes(dialect, endpoint, parts, bytes).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let cache = response
                    .headers()
                    .get(names::CACHE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                // Draining the body lets the recorder store the answer.
                let drained = response.into_body().collect().await.is_ok();
                json!({"path": item.path, "status": status, "cache": cache, "complete": drained})
            }
            Err(e) => {
                json!({"path": item.path, "status": e.status().as_u16(), "error": String::from_utf8_lossy(&dialect::error_body(dialect, &e))})
            }
        };
        results.push(outcome);
    }
    Ok(reply::json(StatusCode::OK, &json!({"results": results})))
}

/// `GET|DELETE /admin/conversations/{id}[?tenant=…]`: the summaries written for a
/// conversation named with `x-thrifty-chat-id`, in one tenant or in all of them.
async fn conversation(
    proxy: &Proxy,
    method: &Method,
    name: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ProxyError> {
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    if name.is_empty() || name.len() > conversations::MAX_NAME {
        return Err(ProxyError::bad_request(format!(
            "a conversation id is 1 to {} bytes",
            conversations::MAX_NAME
        )));
    }
    let tenant = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "tenant")
        .map(|(_, v)| v.into_owned());
    let store = proxy.cache().store();
    match *method {
        Method::GET => {
            let listing = conversations::list(store, &name, tenant.as_deref())
                .await
                .map_err(store_error)?;
            Ok(reply::json(
                StatusCode::OK,
                &json!({"conversation": name, "tenant": tenant, "summaries": listing.summaries, "tenants": listing.tenants}),
            ))
        }
        Method::DELETE => {
            let deleted = conversations::forget(store, &name, tenant.as_deref())
                .await
                .map_err(store_error)?;
            Ok(reply::json(
                StatusCode::OK,
                &json!({"conversation": name, "tenant": tenant, "deleted_summaries": deleted}),
            ))
        }
        _ => Err(ProxyError::bad_request(
            "conversations answer GET and DELETE",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_token_is_taken_out_of_the_query_and_decoded() {
        assert_eq!(
            take_token("from=2025-01-01&token=a%2Bb+c&to=2025-01-31"),
            (
                Some("a+b c".to_owned()),
                "from=2025-01-01&to=2025-01-31".to_owned()
            )
        );
        assert_eq!(take_token(""), (None, String::new()));
        assert_eq!(
            take_token("tokens=1&token"),
            (None, "tokens=1&token".to_owned())
        );
        assert_ne!(
            dashboard_cookie_value("a", 9),
            dashboard_cookie_value("b", 9)
        );
        assert!(!dashboard_cookie_value("secret", 9).contains("secret"));
    }

    #[test]
    fn the_dashboard_cookie_expires_and_cannot_be_extended() {
        let cookie = dashboard_cookie_value("tok", 1_000);
        assert!(valid_dashboard_cookie("tok", &cookie, 999));
        assert!(!valid_dashboard_cookie("tok", &cookie, 1_000), "expired");
        assert!(
            !valid_dashboard_cookie("other", &cookie, 999),
            "another token"
        );
        let extended = cookie.replacen("1000.", "9000.", 1);
        assert!(
            !valid_dashboard_cookie("tok", &extended, 999),
            "forged expiry"
        );
        assert!(!valid_dashboard_cookie("tok", "garbage", 0));
        assert!(same_secret("tok", "tok") && !same_secret("tok", "tok2"));
    }
}
