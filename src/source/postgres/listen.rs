//! Notify mode: one connection per node `LISTEN`s on every routed NOTIFY channel.
//!
//! A task drives the connection and hands notifications over a bounded queue; when
//! the hub falls behind, the queue fills and the task stops reading the socket, so
//! the backlog waits in PostgreSQL's notification queue rather than in the hub's
//! memory. The session loop takes notifications in batches (up to
//! [`MAX_BATCH`]), routes them, and publishes each batch at once, in the order
//! PostgreSQL delivered them (commit order).
//!
//! With `elect_publisher` (by default, when the broker is shared by several nodes),
//! every node listens but only the holder of a session advisory lock publishes; the
//! others try to take the lock every `standby_retry`, and one of them gets it when
//! the holder's session ends. What is notified in between is lost, as NOTIFY is.
//!
//! The connection is checked with a query every `health_interval`; a failed check,
//! an error or the end of the connection ends the session, and the source reconnects
//! with backoff and `LISTEN`s again. Notifications sent while no connection listens
//! are lost: that is NOTIFY's contract (the outbox mode has no such gap).

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_util::future::OptionFuture;
use tokio::sync::mpsc;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{
    AsyncMessage, Client, Connection, NoTls, Notification, SimpleQueryMessage, Socket,
};

use super::outbox::{LOCK_CLASS, lock_key};
use super::trigger::quote_ident;
use super::{End, IO_TIMEOUT, SideClient, Source, describe};
use crate::backoff::Backoff;

/// Notifications waiting between the connection and the session loop.
const QUEUE: usize = 8192;

/// Notifications routed and published together.
const MAX_BATCH: usize = 512;

/// What the connection task hands over.
enum Incoming {
    Notification(Notification),
    Lost(String),
}

/// Runs the listener until the hub shuts down.
pub(super) async fn run(source: Source) {
    let mut side = SideClient::new();
    let mut backoff = Backoff::new(source.config.reconnect_min, source.config.reconnect_max);
    while !source.sink.hub.is_shutting_down() {
        let started = Instant::now();
        match session(&source, &mut side).await {
            End::Stop => break,
            End::Lost(reason) => {
                if source.lost(&mut backoff, started, reason).await {
                    break;
                }
            }
        }
    }
    tracing::debug!("postgres listener stopped");
}

async fn session(source: &Source, side: &mut SideClient) -> End {
    let (client, connection) = match source.pg.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return End::Lost(format!("cannot connect: {}", describe(&e))),
    };
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let driver = AbortOnDrop(tokio::spawn(drive(connection, tx)));
    let topics = source.router.topics();
    let listen: String = topics
        .iter()
        .map(|t| format!("LISTEN {};", quote_ident(t)))
        .collect();
    if let Err(e) = client.batch_execute(&listen).await {
        return End::Lost(format!("LISTEN failed: {}", describe(&e)));
    }
    source.sink.stats.source_connected();
    source.readiness.ready();
    let elect = source
        .config
        .elect_publisher
        .unwrap_or(source.sink.shared_broker);
    let lock = format!(
        "SELECT pg_try_advisory_lock({LOCK_CLASS}, {})",
        lock_key("notify", &topics.join(","))
    );
    let mut leading = !elect;
    tracing::info!(
        "postgres source listening on {} NOTIFY channel(s): {}{}",
        topics.len(),
        topics.join(", "),
        if elect { " (one node publishes)" } else { "" }
    );

    let every = source.config.health_interval;
    let mut health = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = tokio::time::interval(source.config.standby_retry);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One query at a time on the listening connection, polled alongside the
    // notifications: the session never stops draining them while it waits.
    let mut query: Option<Query<'_>> = None;
    let end = loop {
        tokio::select! {
            biased;
            _ = source.sink.hub.shutting_down() => break End::Stop,
            // Before the notifications: the answer to a lock attempt precedes, on the
            // wire, the notifications sent after the lock was taken.
            Some((check, result)) = OptionFuture::from(query.as_mut()) => {
                query = None;
                let rows = match result {
                    Ok(Ok(rows)) => rows,
                    Ok(Err(e)) => break End::Lost(format!("{check:?} query failed: {}", describe(&e))),
                    Err(_) => break End::Lost(format!("no answer to a {check:?} query within {IO_TIMEOUT:?}")),
                };
                if check == Check::Lock && first_value(&rows) == Some("t") {
                    leading = true;
                    tracing::info!("postgres source: this node publishes the NOTIFY events");
                }
            }
            incoming = rx.recv() => match incoming {
                Some(Incoming::Notification(first)) => {
                    let mut batch = vec![first];
                    let mut lost = None;
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(Incoming::Notification(n)) => batch.push(n),
                            Ok(Incoming::Lost(reason)) => {
                                lost = Some(reason);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if leading {
                        forward(source, batch, side).await;
                    }
                    if let Some(reason) = lost {
                        break End::Lost(reason);
                    }
                }
                Some(Incoming::Lost(reason)) => break End::Lost(reason),
                None => break End::Lost("the connection closed".into()),
            },
            _ = health.tick(), if query.is_none() => {
                query = Some(ask(&client, Check::Health, "SELECT 1"));
            }
            _ = retry.tick(), if query.is_none() && !leading => {
                query = Some(ask(&client, Check::Lock, &lock));
            }
        }
    };
    drop(query);
    drop(client);
    drop(driver);
    end
}

/// What a query on the listening connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// `SELECT 1`: the connection still works.
    Health,
    /// `pg_try_advisory_lock`: may this node publish?
    Lock,
}

type QueryResult =
    Result<Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>, tokio::time::error::Elapsed>;
type Query<'a> = Pin<Box<dyn Future<Output = (Check, QueryResult)> + Send + 'a>>;

fn ask<'a>(client: &'a Client, check: Check, sql: &'a str) -> Query<'a> {
    Box::pin(async move {
        (
            check,
            tokio::time::timeout(IO_TIMEOUT, client.simple_query(sql)).await,
        )
    })
}

/// The first column of the first row of a simple query's answer.
fn first_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    })
}

/// Routes and publishes a batch of notifications, in order.
async fn forward(source: &Source, batch: Vec<Notification>, side: &mut SideClient) {
    let mut events = Vec::with_capacity(batch.len());
    for n in &batch {
        let payload = serde_json::from_str(n.payload()).ok();
        events.extend(source.events_for(n.channel(), payload, side).await);
    }
    let count = events.len();
    if let Err(e) = source.publish(events).await {
        tracing::error!("postgres source could not publish {count} event(s): {e}");
        for _ in 0..count {
            source
                .sink
                .stats
                .source_skipped(crate::stats::SourceSkip::PublishFailed);
        }
    }
}

/// Drives the connection, handing notifications to the session; ends with `Lost`
/// when the connection fails or closes, or when the session is gone.
async fn drive(mut connection: Connection<Socket, NoTlsStream>, tx: mpsc::Sender<Incoming>) {
    loop {
        let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
        let incoming = match message {
            Some(Ok(AsyncMessage::Notification(n))) => Incoming::Notification(n),
            Some(Ok(_)) => continue,
            Some(Err(e)) => Incoming::Lost(format!("connection lost: {}", describe(&e))),
            None => Incoming::Lost("the server closed the connection".into()),
        };
        let last = matches!(incoming, Incoming::Lost(_));
        if tx.send(incoming).await.is_err() || last {
            return;
        }
    }
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop<T>(pub(super) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
