//! The command connection to Redis: one multiplexed connection (commands from every
//! task are pipelined on it), re-established in the background with backoff when
//! it breaks. While it is down, calls fail at once with
//! [`BrokerError::Unavailable`] rather than waiting, so a publish answers 503
//! quickly and `/readyz` says why.
//!
//! Over a Redis Cluster the connection is redis-rs's cluster connection: one
//! multiplexed connection per node, each command sent to the primary of its
//! key's slot, MOVED and ASK followed, the slot map refreshed after a failover.
//! It mends itself, so a failed command does not drop it (only a first connection
//! that cannot be made leaves the link down).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, pause};
use crate::broker::BrokerError;
use crate::stats::Stats;

/// The first delay before reconnecting; it doubles up to the configured ceiling.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Where the link connects.
#[derive(Debug)]
pub(super) enum Target {
    /// One server.
    Server(redis::Client),
    /// A Redis Cluster, from these seed nodes.
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// A connection of either kind; both multiplex, so clones share it.
#[derive(Clone)]
enum Conn {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Server(_) => "Conn::Server",
            Conn::Cluster(_) => "Conn::Cluster",
        })
    }
}

#[derive(Debug)]
struct State {
    conn: Option<Conn>,
    /// Counts connections made, so a failure reported against an old one does not
    /// drop a newer one.
    generation: u64,
    /// Why there is no connection.
    error: String,
}

/// A self-healing command connection.
#[derive(Debug)]
pub(super) struct Link {
    target: Target,
    timeout: Duration,
    max_backoff: Duration,
    state: Mutex<State>,
    broken: Notify,
    connected: Notify,
}

impl Link {
    pub(super) fn new(target: Target, timeout: Duration, max_backoff: Duration) -> Self {
        Self {
            target,
            timeout,
            max_backoff,
            state: Mutex::new(State {
                conn: None,
                generation: 0,
                error: "connecting".into(),
            }),
            broken: Notify::new(),
            connected: Notify::new(),
        }
    }

    /// The per-command time limit.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Keeps the connection up until `stop`.
    pub(super) async fn run(self: Arc<Self>, stop: CancellationToken, stats: Arc<Stats>) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let mut backoff = Backoff::new(FIRST_BACKOFF, self.max_backoff);
        let mut first = true;
        loop {
            let connect = async {
                match &self.target {
                    Target::Server(client) => client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Conn::Server),
                    Target::Cluster(client) => {
                        client.get_async_connection().await.map(Conn::Cluster)
                    }
                }
            };
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(self.timeout, connect) => r,
            };
            match result {
                Ok(Ok(conn)) => {
                    {
                        let mut state = self.state.lock();
                        state.conn = Some(conn);
                        state.generation += 1;
                        state.error.clear();
                    }
                    if !first {
                        stats.broker_reconnected();
                        tracing::info!("redis: reconnected");
                    }
                    first = false;
                    backoff.reset();
                    self.connected.notify_waiters();
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.broken.notified() => {}
                    }
                }
                Ok(Err(e)) => self.failed(&e.to_string(), &mut backoff, &stop).await,
                Err(_) => {
                    self.failed("connection timed out", &mut backoff, &stop)
                        .await
                }
            }
        }
    }

    async fn failed(&self, why: &str, backoff: &mut Backoff, stop: &CancellationToken) {
        let was = std::mem::replace(&mut self.state.lock().error, why.to_owned());
        if was != why {
            tracing::warn!("redis: cannot connect: {why}; retrying with backoff");
        }
        pause(backoff.next_delay(), stop).await;
    }

    /// Why the link is down, or `None` when it is up.
    pub(super) fn down(&self) -> Option<String> {
        let state = self.state.lock();
        match state.conn {
            Some(_) => None,
            None => Some(state.error.clone()),
        }
    }

    /// Waits until the link is up, at most `wait`.
    pub(super) async fn wait_up(&self, wait: Duration) -> bool {
        let connected = self.connected.notified();
        if self.down().is_none() {
            return true;
        }
        tokio::time::timeout(wait, connected).await.is_ok()
    }

    /// Whether the link is to a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    fn current(&self) -> Result<(u64, Conn), BrokerError> {
        let state = self.state.lock();
        match &state.conn {
            Some(conn) => Ok((state.generation, conn.clone())),
            None => Err(BrokerError::Unavailable(format!(
                "redis is unreachable: {}",
                state.error
            ))),
        }
    }

    /// Turns a command's outcome into ours, dropping the connection when it broke.
    fn settle<T>(
        &self,
        generation: u64,
        result: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, BrokerError> {
        let error = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => {
                let broken = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    || e.is_timeout();
                if broken && !self.is_cluster() {
                    self.drop_connection(generation, &e.to_string());
                }
                e.to_string()
            }
            Err(_) => {
                let why = format!("no answer within {:?}", self.timeout);
                if !self.is_cluster() {
                    self.drop_connection(generation, &why);
                }
                why
            }
        };
        Err(BrokerError::Unavailable(format!("redis: {error}")))
    }

    fn drop_connection(&self, generation: u64, why: &str) {
        let mut state = self.state.lock();
        if state.generation == generation && state.conn.is_some() {
            tracing::warn!("redis: connection lost: {why}");
            state.conn = None;
            state.error = why.to_owned();
            drop(state);
            self.broken.notify_one();
        }
    }

    /// Runs a command.
    pub(super) async fn cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BrokerError> {
        let (generation, conn) = self.current()?;
        let query = async {
            match conn {
                Conn::Server(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        };
        let result = tokio::time::timeout(self.timeout, query).await;
        self.settle(generation, result)
    }

    /// Runs a command without keys (`WAIT`, `CLUSTER SLOTS`) where `key` lives: on
    /// the primary of its slot in a cluster, on the one server otherwise.
    pub(super) async fn cmd_beside<T: FromRedisValue>(
        &self,
        key: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, BrokerError> {
        let (generation, conn) = self.current()?;
        let query = async {
            match conn {
                Conn::Server(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => {
                    let route = Route::new(super::cluster::key_slot(key), SlotAddr::Master);
                    let routing =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                    c.route_command(cmd.clone(), routing)
                        .await
                        .and_then(|value| T::from_redis_value(value).map_err(RedisError::from))
                }
            }
        };
        let result = tokio::time::timeout(self.timeout, query).await;
        self.settle(generation, result)
    }

    /// Runs a script (loading it first if Redis does not have it).
    pub(super) async fn script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let (generation, conn) = self.current()?;
        let run = async {
            match conn {
                Conn::Server(mut c) => invocation.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            }
        };
        let result = tokio::time::timeout(self.timeout, run).await;
        self.settle(generation, result)
    }
}
