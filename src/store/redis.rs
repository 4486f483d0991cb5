//! The Redis backend: a connection manager (auto-reconnect, pipelining) or a
//! cluster connection, connected in the background so thrifty starts and serves
//! while Redis is down.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncCommands, Client, Cmd, FromRedisValue, Pipeline};
use bytes::Bytes;
use tokio::sync::OnceCell;

use super::StoreError;

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

pub struct RedisStore {
    connection: std::sync::Arc<OnceCell<Connection>>,
    url: String,
}

/// How long to wait between attempts to reach Redis at start.
const RETRY: Duration = Duration::from_millis(500);

impl RedisStore {
    /// Starts connecting in the background; until connected, every call fails fast.
    pub fn connect(url: &str, cluster: bool, timeout: Duration) -> Result<Self, StoreError> {
        let connection = std::sync::Arc::new(OnceCell::new());
        let cell = connection.clone();
        if cluster {
            let client = ClusterClient::builder(vec![url.to_owned()])
                .connection_timeout(timeout.max(Duration::from_millis(250)))
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
                .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
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
        })
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

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let value: Option<Vec<u8>> = self.query(&::redis::cmd("GET").arg(key).clone()).await?;
        Ok(value.map(Bytes::from))
    }

    pub async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(key).arg(value.as_ref()).arg("PX").arg(millis(ttl));
        self.query::<()>(&cmd).await
    }

    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("PEXPIRE");
        cmd.arg(key).arg(millis(ttl));
        self.query::<()>(&cmd).await
    }

    pub async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let mut pipe = ::redis::pipe();
        for key in keys {
            pipe.cmd("DEL").arg(key);
        }
        let counts: Vec<u64> = self.pipeline(&pipe).await?;
        Ok(counts.iter().sum())
    }

    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}*", escape_glob(prefix));
        let mut keys = Vec::new();
        match self.connection()? {
            Connection::Single(mut c) => {
                let mut iter = c.scan_match::<_, String>(pattern).await?;
                while let Some(key) = futures_util::StreamExt::next(&mut iter).await {
                    keys.push(key?);
                }
            }
            Connection::Cluster(mut c) => {
                let mut iter = c.scan_match::<_, String>(pattern).await?;
                while let Some(key) = futures_util::StreamExt::next(&mut iter).await {
                    keys.push(key?);
                }
            }
        }
        Ok(keys)
    }

    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(channel).arg(message);
        self.query::<i64>(&cmd).await.map(drop)
    }

    /// Delivers every message published on `channel` until the receiver is dropped,
    /// reconnecting as needed. Messages sent while disconnected are lost; callers reconcile.
    pub fn subscribe(&self, channel: &str) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
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
                        let mut messages = pubsub.on_message();
                        while let Some(message) = futures_util::StreamExt::next(&mut messages).await
                        {
                            if let Ok(payload) = message.get_payload::<String>() {
                                if tx.send(payload).is_err() {
                                    return;
                                }
                            }
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
