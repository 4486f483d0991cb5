//! A scenario's world: the fake upstream, a private Redis and thrifty in front, started
//! together; a Responses client of it; and the stream reading the scenarios share.

use std::time::Duration;

use serde_json::Value;
use thrifty::config::RawConfig;

use crate::common::client::{ADMIN_TOKEN, Api, Reply, start_redis, start_thrifty};
use crate::common::fake_llm::FakeLlm;
use crate::common::redis::RedisServer;
use crate::common::thrifty::{Thrifty, config_for};

/// How long any single wait may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(10);

pub const PATH: &str = "/v1/responses";

pub struct World {
    pub fake: FakeLlm,
    pub api: Api,
    pub thrifty: Thrifty,
    _redis: RedisServer,
}

impl World {
    pub async fn start() -> World {
        World::with(|_| {}).await
    }

    /// Starts the world with `tweak` applied to the config.
    pub async fn with(tweak: impl FnOnce(&mut RawConfig)) -> World {
        let fake = FakeLlm::start().await;
        let mut raw = config_for(&fake);
        raw.store.timeout = Duration::from_secs(2);
        tweak(&mut raw);
        let redis = start_redis().await;
        let vars = vec![
            ("THRIFTY_REDIS_URL".to_owned(), redis.url()),
            ("THRIFTY_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        ];
        let thrifty = start_thrifty(raw, &vars, WAIT).await;
        World {
            api: Api::new(thrifty.url(), WAIT),
            fake,
            thrifty,
            _redis: redis,
        }
    }

    pub async fn create(&self, body: &Value) -> Reply {
        self.api.send(PATH, body).await
    }

    /// Creates until the answer is a hit: the first answer is stored just after its body ends.
    pub async fn until_hit(&self, body: &Value) -> Reply {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let reply = self.create(body).await;
            if reply.cache() == "hit" || std::time::Instant::now() > deadline {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /admin/savings` with `query`, once it counts `requests` requests.
    pub async fn savings(&self, query: &str, requests: u64) -> Value {
        self.thrifty.savings(query, ADMIN_TOKEN, requests).await
    }
}

/// One server-sent event: its `event:` name and its `data:` JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

/// The events of a Responses stream, each checked to be one `event:` line and one `data:`
/// line naming the same type.
pub fn events(reply: &Reply) -> Vec<Event> {
    assert!(reply.is_stream(), "not a stream: {}", reply.describe());
    let text = reply.text();
    text.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let mut lines = event.lines();
            let name = lines
                .next()
                .and_then(|l| l.strip_prefix("event: "))
                .unwrap_or_else(|| panic!("no event line in {event:?}"))
                .to_owned();
            let data = lines
                .next()
                .and_then(|l| l.strip_prefix("data: "))
                .unwrap_or_else(|| panic!("no data line in {event:?}"));
            assert!(lines.next().is_none(), "one data line per event: {event:?}");
            let data: Value = serde_json::from_str(data)
                .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
            assert_eq!(data["type"], name.as_str(), "event name and type agree");
            Event { name, data }
        })
        .collect()
}

/// The names of a stream's events, in order.
pub fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

/// The response a stream's `response.completed` event carries.
pub fn completed(events: &[Event]) -> Value {
    let last = events.last().expect("a stream has events");
    assert_eq!(last.name, "response.completed", "the stream completed");
    last.data["response"].clone()
}

/// The text of a response's output messages.
pub fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|item| item["content"].as_array().into_iter().flatten())
        .filter_map(|part| part["text"].as_str())
        .collect()
}
