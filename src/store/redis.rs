//! The Redis backend: a connection manager (auto-reconnect, pipelining) or a
//! cluster connection, connected in the background so thrifty starts and serves
//! while Redis is down.

use std::ops::ControlFlow;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{AsyncCommands, Client, Cmd, FromRedisValue, Pipeline, ScriptInvocation, Value};
use bytes::Bytes;
use futures_util::future::try_join_all;
use tokio::sync::OnceCell;
use tokio::sync::mpsc::error::TrySendError;

use super::{BATCH_KEYS, Heard, StoreError, Tally};

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

pub struct RedisStore {
    connection: std::sync::Arc<OnceCell<Connection>>,
    url: String,
    cluster: bool,
}

/// How many messages of a subscription may wait for their receiver.
const BACKLOG: usize = 4096;

/// How long to wait between attempts to reach Redis at start.
const RETRY: Duration = Duration::from_millis(500);

/// The bounds of the time a connection attempt may take.
const CONNECT_MIN: Duration = Duration::from_millis(250);
const CONNECT_MAX: Duration = Duration::from_secs(2);

/// How many keys one `SCAN` round trip asks for.
const SCAN_COUNT: usize = 1000;

impl RedisStore {
    /// Starts connecting in the background; until connected, every call fails fast.
    ///
    /// `timeout` is the longest one command may take on the connection: the longest budget
    /// of any call, since the store bounds each call by its own, shorter or not.
    pub fn connect(url: &str, cluster: bool, timeout: Duration) -> Result<Self, StoreError> {
        let connection = std::sync::Arc::new(OnceCell::new());
        let cell = connection.clone();
        let connect_timeout = timeout.clamp(CONNECT_MIN, CONNECT_MAX);
        if cluster {
            let client = ClusterClient::builder(vec![url.to_owned()])
                .connection_timeout(connect_timeout)
                .response_timeout(timeout)
                .build()?;
            tokio::spawn(async move {
                loop {
                    match client.get_async_connection().await {
                        Ok(conn) => {
                            let _ = cell.set(Connection::Cluster(conn));
                            tracing::info!("connected to redis cluster");
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "redis cluster not reachable yet");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
            });
        } else {
            let client = Client::open(url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(2));
            tokio::spawn(async move {
                loop {
                    match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                        Ok(conn) => {
                            let _ = cell.set(Connection::Single(conn));
                            tracing::info!("connected to redis");
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "redis not reachable yet");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
            });
        }
        Ok(RedisStore {
            connection,
            url: url.to_owned(),
            cluster,
        })
    }

    /// Whether a write's announcement reaches subscribers before the write's caller hears
    /// back: on one server, where the two go in one pipeline; not on a cluster, where the
    /// announcement is a second call and crosses the cluster bus.
    pub fn announces_in_step(&self) -> bool {
        !self.cluster
    }

    fn connection(&self) -> Result<Connection, StoreError> {
        self.connection
            .get()
            .cloned()
            .ok_or(StoreError::NotConnected)
    }

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        Ok(match self.connection()? {
            Connection::Single(mut c) => cmd.query_async(&mut c).await?,
            Connection::Cluster(mut c) => cmd.query_async(&mut c).await?,
        })
    }

    pub(super) async fn pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        Ok(match self.connection()? {
            Connection::Single(mut c) => pipe.query_async(&mut c).await?,
            Connection::Cluster(mut c) => pipe.query_async(&mut c).await?,
        })
    }

    /// Runs a Lua script by its digest, loading it first where the server does not know it.
    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        Ok(match self.connection()? {
            Connection::Single(mut c) => invocation.invoke_async(&mut c).await?,
            Connection::Cluster(mut c) => invocation.invoke_async(&mut c).await?,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let value: Option<Vec<u8>> = self.query(&::redis::cmd("GET").arg(key).clone()).await?;
        Ok(value.map(Bytes::from))
    }

    /// One `MGET` per batch of keys, sent together; a cluster connection splits each by slot.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        let reads = keys.chunks(BATCH_KEYS).map(|chunk| {
            let mut cmd = ::redis::cmd("MGET");
            cmd.arg(chunk);
            async move { self.query::<Vec<Option<Vec<u8>>>>(&cmd).await }
        });
        let mut values = Vec::with_capacity(keys.len());
        for chunk in try_join_all(reads).await? {
            values.extend(chunk.into_iter().map(|v| v.map(Bytes::from)));
        }
        Ok(values)
    }

    pub async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.query::<()>(&set(key, &value, ttl)).await
    }

    /// A pipeline of `SET`s on one server. A cluster pipeline must stay in one slot, so
    /// there each `SET` is its own command, all in flight at once on the multiplexed
    /// connection.
    pub async fn put_many(
        &self,
        entries: &[(String, Bytes)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self.connection()? {
            Connection::Single(mut c) => {
                for chunk in entries.chunks(BATCH_KEYS) {
                    let mut pipe = ::redis::pipe();
                    for (key, value) in chunk {
                        pipe.add_command(set(key, value, ttl)).ignore();
                    }
                    pipe.query_async::<()>(&mut c).await?;
                }
                Ok(())
            }
            Connection::Cluster(c) => {
                try_join_all(entries.iter().map(|(key, value)| {
                    let mut c = c.clone();
                    let cmd = set(key, value, ttl);
                    async move { cmd.query_async::<()>(&mut c).await }
                }))
                .await?;
                Ok(())
            }
        }
    }

    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("PEXPIRE");
        cmd.arg(key).arg(millis(ttl));
        self.query::<()>(&cmd).await
    }

    /// `PTTL`: -2 for a missing key and -1 for one without expiry are both `None`.
    pub async fn expires_in(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let mut cmd = ::redis::cmd("PTTL");
        cmd.arg(key);
        let ms = self.query::<i64>(&cmd).await?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    /// One multi-key `DEL` per batch of keys; a cluster connection splits each by slot.
    pub async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let deletes = keys.chunks(BATCH_KEYS).map(|chunk| {
            let mut cmd = ::redis::cmd("DEL");
            cmd.arg(chunk);
            async move { self.query::<u64>(&cmd).await }
        });
        Ok(try_join_all(deletes).await?.iter().sum())
    }

    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        self.walk_keys(prefix, &mut |key| {
            keys.push(key);
            ControlFlow::Continue(())
        })
        .await?;
        Ok(keys)
    }

    /// Hands each key starting with `prefix` to `each` as the walk finds it, until `each`
    /// breaks it off.
    pub async fn walk_keys(
        &self,
        prefix: &str,
        each: &mut (impl FnMut(String) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        let pattern = format!("{}*", escape_glob(prefix));
        match self.connection()? {
            Connection::Single(mut c) => {
                let mut iter = c.scan_options::<String>(scan_options(&pattern)).await?;
                while let Some(key) = futures_util::StreamExt::next(&mut iter).await {
                    if each(key?).is_break() {
                        break;
                    }
                }
            }
            // `SCAN` on a cluster connection walks one node picked at random: walk every
            // master instead, each with a cursor of its own.
            Connection::Cluster(mut c) => {
                for (host, port) in masters(&mut c).await? {
                    if scan_node(&mut c, host, port, &pattern, each)
                        .await?
                        .is_break()
                    {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Walks the keys, then asks their lengths (`STRLEN`), never their values.
    pub async fn tally(&self, prefix: &str) -> Result<Tally, StoreError> {
        let keys = self.keys(prefix).await?;
        let lengths = keys.chunks(BATCH_KEYS).map(|chunk| async move {
            match self.connection()? {
                Connection::Single(mut c) => {
                    let mut pipe = ::redis::pipe();
                    for key in chunk {
                        pipe.cmd("STRLEN").arg(key);
                    }
                    Ok::<Vec<u64>, StoreError>(pipe.query_async(&mut c).await?)
                }
                // A cluster pipeline must stay in one slot: one command per key, all in flight.
                Connection::Cluster(c) => Ok(try_join_all(chunk.iter().map(|key| {
                    let mut c = c.clone();
                    let mut cmd = ::redis::cmd("STRLEN");
                    cmd.arg(key);
                    async move { cmd.query_async::<u64>(&mut c).await }
                }))
                .await?),
            }
        });
        let mut tally = Tally::default();
        for chunk in try_join_all(lengths).await? {
            for length in chunk {
                // A key that expired between the walk and its length reads as 0 bytes.
                if length > 0 {
                    tally.entries += 1;
                    tally.bytes += length;
                }
            }
        }
        Ok(tally)
    }

    /// A `SET` and a `PUBLISH` in one round trip on one server (the message goes out after
    /// the write); a cluster routes them apart, so there they are two calls, in that order.
    pub async fn put_announced(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        channel: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        match self.connection()? {
            Connection::Single(mut c) => {
                let mut pipe = ::redis::pipe();
                pipe.add_command(set(key, &value, ttl)).ignore();
                pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
                pipe.query_async::<()>(&mut c).await?;
                Ok(())
            }
            Connection::Cluster(_) => {
                self.put(key, value, ttl).await?;
                self.publish(channel, message).await
            }
        }
    }

    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(channel).arg(message);
        self.query::<i64>(&cmd).await.map(drop)
    }

    /// Delivers every message published on `channel` until the receiver is dropped,
    /// reconnecting as needed, each subscription's start and loss among them. Messages sent
    /// while disconnected are lost; callers reconcile. At most [`BACKLOG`] wait for the
    /// receiver: one more drops the subscription, which the receiver hears as lost, and a new
    /// one is made.
    pub fn subscribe(&self, channel: &str) -> tokio::sync::mpsc::Receiver<Heard> {
        let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
        let url = self.url.clone();
        let channel = channel.to_owned();
        tokio::spawn(async move {
            loop {
                if tx.is_closed() {
                    return;
                }
                let connected = match Client::open(url.as_str()) {
                    Ok(client) => client.get_async_pubsub().await.ok(),
                    Err(_) => None,
                };
                if let Some(mut pubsub) = connected {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        if tx.send(Heard::Subscribed).await.is_err() {
                            return;
                        }
                        let mut messages = pubsub.on_message();
                        while let Some(message) = futures_util::StreamExt::next(&mut messages).await
                        {
                            let Ok(payload) = message.get_payload::<String>() else {
                                continue;
                            };
                            match tx.try_send(Heard::Message(payload)) {
                                Ok(()) => {}
                                Err(TrySendError::Full(_)) => break,
                                Err(TrySendError::Closed(_)) => return,
                            }
                        }
                        if tx.send(Heard::Lost).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(RETRY).await;
            }
        });
        rx
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query::<String>(&::redis::cmd("PING")).await.map(drop)
    }
}

/// The address of every master of the cluster, from `CLUSTER SLOTS`.
async fn masters(c: &mut ClusterConnection) -> Result<Vec<(String, u16)>, StoreError> {
    let slots: Value = ::redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
    let mut out: Vec<(String, u16)> = Vec::new();
    let Value::Array(ranges) = slots else {
        return Ok(out);
    };
    for range in ranges {
        // `[start, end, [host, port, id, ..], replicas..]`: the third item is the master.
        let Value::Array(items) = range else { continue };
        let Some(Value::Array(master)) = items.get(2) else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        if !out.iter().any(|(h, p)| *h == host && *p == port) {
            out.push((host, port));
        }
    }
    Ok(out)
}

/// Hands the keys of one cluster node that match `pattern` to `each`, until it breaks the walk
/// off.
async fn scan_node(
    c: &mut ClusterConnection,
    host: String,
    port: u16,
    pattern: &str,
    each: &mut (impl FnMut(String) -> ControlFlow<()> + Send),
) -> Result<ControlFlow<()>, StoreError> {
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let reply = c.route_command(cmd, routing.clone()).await?;
        let (next, batch): (u64, Vec<String>) =
            ::redis::from_redis_value(reply).map_err(::redis::RedisError::from)?;
        for key in batch {
            if each(key).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        if next == 0 {
            return Ok(ControlFlow::Continue(()));
        }
        cursor = next;
    }
}

/// A walk of the keys matching `pattern`, a thousand per round trip.
fn scan_options(pattern: &str) -> ::redis::ScanOptions {
    ::redis::ScanOptions::default()
        .with_pattern(pattern)
        .with_count(SCAN_COUNT)
}

fn set(key: &str, value: &Bytes, ttl: Duration) -> Cmd {
    let mut cmd = ::redis::cmd("SET");
    cmd.arg(key).arg(value.as_ref()).arg("PX").arg(millis(ttl));
    cmd
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Escapes Redis glob characters so a prefix matches only itself.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
