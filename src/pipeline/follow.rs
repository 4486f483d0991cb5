//! A streaming call that follows an identical one in flight: it gets the leader's stream
//! from its start and then each piece as it arrives, in its own usage mode, and its savings
//! record is written once the shared answer is recorded.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use tokio::sync::watch;

use crate::accounting::Account;
use crate::body::Body;
use crate::cache::feed::Reader;
use crate::cache::{FlightResult, recorded};
use crate::chat::{Call, Dialect};
use crate::dialect::{self, stream as wire};

use super::Proxy;
use super::answer::{replayed, rewrite_stream};

impl Proxy {
    pub(super) fn follow(
        &self,
        dialect: Dialect,
        call: &Call,
        reader: Reader,
        answer: watch::Receiver<FlightResult>,
        account: Account,
    ) -> Response<Body> {
        // The leader's stream carries usage when its client or thrifty asked for it.
        let strips = reader.begun().is_some_and(|s| s.has_usage)
            && !dialect::wants_stream_usage(dialect, call);
        let mut response = Response::new(reader.body());
        *response.status_mut() = StatusCode::OK;
        let h = response.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(wire::stream_content_type(dialect)),
        );
        if let Some(directive) = wire::stream_cache_control(dialect) {
            h.insert(CACHE_CONTROL, HeaderValue::from_static(directive));
        }
        self.cache.tasks().spawn(async move {
            let entry = recorded(answer).await;
            account.followed(entry.as_deref().map(|e| replayed(dialect, e)));
        });
        rewrite_stream(response, dialect::follower_stream(dialect, call, strips))
    }
}
