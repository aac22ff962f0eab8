//! The command connection to Redis: one multiplexed connection (commands from every
//! task are pipelined on it), re-established in the background with backoff when
//! it breaks. While it is down, calls fail at once with
//! [`BrokerError::Unavailable`] rather than waiting, so a publish answers 503
//! quickly and `/readyz` says why.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, pause};
use crate::broker::BrokerError;
use crate::stats::Stats;

/// The first delay before reconnecting; it doubles up to the configured ceiling.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct State {
    conn: Option<MultiplexedConnection>,
    /// Counts connections made, so a failure reported against an old one does not
    /// drop a newer one.
    generation: u64,
    /// Why there is no connection.
    error: String,
}

/// A self-healing command connection.
#[derive(Debug)]
pub(super) struct Link {
    client: redis::Client,
    timeout: Duration,
    max_backoff: Duration,
    state: Mutex<State>,
    broken: Notify,
    connected: Notify,
}

impl Link {
    pub(super) fn new(client: redis::Client, timeout: Duration, max_backoff: Duration) -> Self {
        Self {
            client,
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
            let connect = self
                .client
                .get_multiplexed_async_connection_with_config(&config);
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

    fn current(&self) -> Result<(u64, MultiplexedConnection), BrokerError> {
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
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    || e.is_timeout()
                {
                    self.drop_connection(generation, &e.to_string());
                }
                e.to_string()
            }
            Err(_) => {
                let why = format!("no answer within {:?}", self.timeout);
                self.drop_connection(generation, &why);
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
        let (generation, mut conn) = self.current()?;
        let result = tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await;
        self.settle(generation, result)
    }

    /// Runs a script (loading it first if Redis does not have it).
    pub(super) async fn script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let (generation, mut conn) = self.current()?;
        let result = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await;
        self.settle(generation, result)
    }
}
