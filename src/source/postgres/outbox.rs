//! Outbox mode: rows of an outbox table, published in id order, each exactly once.
//!
//! The table (created when missing, see [`super::trigger::outbox_table_sql`]):
//!
//! ```sql
//! id bigserial PRIMARY KEY, topic text, payload jsonb,
//! created_at timestamptz DEFAULT now(), published_at timestamptz
//! ```
//!
//! Triggers or the application insert `(topic, payload)` in the same transaction as
//! the change, so a row exists exactly when the change committed. The relay:
//!
//! 1. takes the session advisory lock `(0x48455241, fnv1a("schema.table"))`; one node
//!    holds it, the others retry every `standby_retry` and take over when its session ends
//!    (crash, lost connection: PostgreSQL releases the lock with the session);
//! 2. reads up to `batch` rows with `published_at IS NULL`, in id order;
//! 3. publishes their events with the ids `outbox-{id}` (`outbox-{id}.{n}` for the
//!    n-th further event of one row);
//! 4. sets `published_at` on those rows.
//!
//! A crash or a lost connection between 3 and 4 makes the rows be read again; the
//! hub answers their ids as duplicates and delivers nothing twice (publisher ids are
//! remembered for the history's lifetime, see the broker). Only one node relays, so
//! two nodes never publish one row. Marking rows rather than keeping a high-water
//! mark means a transaction that took id 5 but committed after id 6 was published
//! is still picked up. Published rows are deleted after `retention`.
//!
//! A statement trigger on the table sends an empty NOTIFY on `outbox.notify` so the
//! relay reads new rows at once; without it the table is read every `poll`.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Socket, Statement};

use super::listen::AbortOnDrop;
use super::trigger::{self, QualifiedName, quote_ident};
use super::{End, SideClient, Source, describe};
use crate::backoff::Backoff;
use crate::hub::PublishError;

/// The first key of the relay's advisory lock ("HERA").
pub(crate) const LOCK_CLASS: i32 = 0x4845_5241;

/// How often published rows older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Rows deleted per statement when pruning, and statements per pruning at most.
const PRUNE_CHUNK: i64 = 10_000;
const PRUNE_ROUNDS: usize = 100;

/// Runs the relay until the hub shuts down.
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
    tracing::debug!("postgres outbox relay stopped");
}

/// The SQL of one relay, for its table.
struct Statements {
    table: QualifiedName,
    select: String,
    mark: String,
    prune: String,
}

impl Statements {
    fn new(table: QualifiedName) -> Self {
        let t = table.quoted();
        Self {
            select: format!(
                "SELECT id, topic, payload FROM {t} WHERE published_at IS NULL ORDER BY id LIMIT $1"
            ),
            mark: format!("UPDATE {t} SET published_at = now() WHERE id = ANY($1)"),
            prune: format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE published_at < now() - make_interval(secs => $1) ORDER BY id LIMIT {PRUNE_CHUNK})"
            ),
            table,
        }
    }
}

/// The lock key of an outbox table: its name with the schema.
pub(crate) fn lock_key(schema: &str, table: &str) -> i32 {
    i32::from_ne_bytes(trigger::fnv1a(format!("{schema}.{table}").as_bytes()).to_ne_bytes())
}

/// A failure inside a session: the connection, or the hub refusing events.
enum Failure {
    Database(tokio_postgres::Error),
    Publish(PublishError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e)
    }
}

impl Failure {
    fn reason(&self) -> String {
        match self {
            Failure::Database(e) => describe(e),
            Failure::Publish(e) => format!("the hub refused the events: {e}"),
        }
    }
}

async fn session(source: &Source, side: &mut SideClient) -> End {
    let (client, connection) = match source.pg.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return End::Lost(format!("cannot connect: {}", describe(&e))),
    };
    let (wake_tx, mut wake) = mpsc::channel(1);
    let (lost_tx, mut lost) = oneshot::channel();
    let _driver = AbortOnDrop(tokio::spawn(drive(connection, wake_tx, lost_tx)));
    let outbox = &source.config.outbox;
    let setup = async {
        // The relay's own writes (marks, pruning) need not wait for the disk: a mark
        // lost in a crash of PostgreSQL only makes rows be read again, and their
        // ids are answered as duplicates. The rows themselves are the application's
        // writes, as durable as it made them.
        client
            .batch_execute(&format!(
                "SET synchronous_commit = off; LISTEN {}",
                quote_ident(&outbox.notify)
            ))
            .await?;
        let configured = QualifiedName::parse(&outbox.table).map_err(|_| None)?;
        let schema = match &configured.schema {
            Some(schema) => schema.clone(),
            None => client
                .query_one("SELECT current_schema()::text", &[])
                .await?
                .try_get(0)?,
        };
        let key = lock_key(&schema, &configured.name);
        Ok::<_, Option<tokio_postgres::Error>>((configured, key))
    }
    .await;
    let (table, key) = match setup {
        Ok(done) => done,
        Err(Some(e)) => return End::Lost(format!("outbox setup failed: {}", describe(&e))),
        Err(None) => return End::Lost("postgres.outbox.table is not valid".into()),
    };
    let statements = Statements::new(table);
    let prepared = async {
        Ok::<_, tokio_postgres::Error>(Prepared {
            select: client.prepare(&statements.select).await?,
            mark: client.prepare(&statements.mark).await?,
        })
    };
    source.sink.stats.source_connected();
    source.readiness.ready();

    let mut leader: Option<Prepared> = None;
    let mut prepare = Some(prepared);
    let mut next_prune = Instant::now();
    loop {
        if source.sink.hub.is_shutting_down() {
            return End::Stop;
        }
        let prepared = match &leader {
            Some(prepared) => prepared,
            None => match take_lead(source, &client, &statements, key).await {
                Ok(true) => {
                    let Some(prepare) = prepare.take() else {
                        return End::Lost("the outbox statements were prepared twice".into());
                    };
                    let prepared = match prepare.await {
                        Ok(prepared) => prepared,
                        Err(e) => {
                            return End::Lost(format!(
                                "preparing the outbox queries: {}",
                                describe(&e)
                            ));
                        }
                    };
                    tracing::info!(
                        "postgres outbox relay: publishing rows of {}",
                        statements.table
                    );
                    leader.insert(prepared)
                }
                Ok(false) => {
                    if let Some(end) = wait(source, &mut wake, &mut lost, false).await {
                        return end;
                    }
                    continue;
                }
                Err(e) => return End::Lost(format!("taking the outbox lock: {}", describe(&e))),
            },
        };
        let read = match relay_batch(source, &client, prepared, side).await {
            Ok(read) => read,
            Err(failure) => return End::Lost(format!("relaying the outbox: {}", failure.reason())),
        };
        if read < source.config.outbox.batch {
            if Instant::now() >= next_prune {
                next_prune = Instant::now() + PRUNE_EVERY;
                if let Err(e) = prune(source, &client, &statements).await {
                    return End::Lost(format!("pruning the outbox: {}", describe(&e)));
                }
            }
            // A row committed after this read brings its own wake-up.
            if let Some(end) = wait(source, &mut wake, &mut lost, true).await {
                return end;
            }
        }
    }
}

/// Tries to become the relay of the table; creates the table first when configured
/// to and it is missing.
async fn take_lead(
    source: &Source,
    client: &Client,
    statements: &Statements,
    key: i32,
) -> Result<bool, tokio_postgres::Error> {
    let taken: bool = client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &key])
        .await?
        .try_get(0)?;
    if taken && source.config.outbox.create_table {
        let table = &statements.table;
        let exists: bool = client
            .query_one(&trigger::outbox_exists_sql(table), &[&table.quoted()])
            .await?
            .try_get(0)?;
        if !exists {
            client
                .batch_execute(&trigger::outbox_table_sql(
                    table,
                    &source.config.outbox.notify,
                ))
                .await?;
            tracing::info!("postgres outbox relay: created {table}");
        }
    }
    Ok(taken)
}

/// The relay's statements, prepared once per session.
struct Prepared {
    select: Statement,
    mark: Statement,
}

/// Reads, publishes and marks one batch of rows; returns how many rows it read.
async fn relay_batch(
    source: &Source,
    client: &Client,
    prepared: &Prepared,
    side: &mut SideClient,
) -> Result<usize, Failure> {
    let limit = source.config.outbox.batch as i64;
    let rows = client.query(&prepared.select, &[&limit]).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get(0)?;
        let topic: String = row.try_get(1)?;
        let payload: Option<serde_json::Value> = row.try_get(2)?;
        let mut made = source.events_for(&topic, payload, side).await;
        for (n, event) in made.iter_mut().enumerate() {
            event.id = Some(match n {
                0 => format!("outbox-{id}"),
                n => format!("outbox-{id}.{n}"),
            });
        }
        events.extend(made);
        ids.push(id);
    }
    source.publish(events).await.map_err(Failure::Publish)?;
    client.execute(&prepared.mark, &[&ids]).await?;
    source.sink.stats.source_outbox_done(ids.len() as u64);
    Ok(rows.len())
}

/// Deletes published rows older than the retention, a bounded number of chunks.
async fn prune(
    source: &Source,
    client: &Client,
    statements: &Statements,
) -> Result<(), tokio_postgres::Error> {
    let seconds = source.config.outbox.retention.as_secs_f64();
    let mut deleted = 0;
    for _ in 0..PRUNE_ROUNDS {
        let n = client.execute(&statements.prune, &[&seconds]).await?;
        deleted += n;
        if n < PRUNE_CHUNK as u64 {
            break;
        }
    }
    if deleted > 0 {
        tracing::debug!("postgres outbox relay: pruned {deleted} published rows");
    }
    Ok(())
}

/// Waits for a wake-up and the poll interval (when `woken_too`, the relay), or the
/// standby retry interval; or the connection's end or the shutdown. `Some` ends the
/// session.
async fn wait(
    source: &Source,
    wake: &mut mpsc::Receiver<()>,
    lost: &mut oneshot::Receiver<String>,
    woken_too: bool,
) -> Option<End> {
    tokio::select! {
        _ = source.sink.hub.shutting_down() => Some(End::Stop),
        reason = &mut *lost => Some(End::Lost(reason.unwrap_or_else(|_| "the connection closed".into()))),
        _ = wake.recv(), if woken_too => None,
        _ = tokio::time::sleep(if woken_too {
            source.config.outbox.poll
        } else {
            source.config.standby_retry
        }) => None,
    }
}

/// Drives the connection: wake-ups are coalesced (a full queue already holds one),
/// the end of the connection is reported once.
async fn drive(
    mut connection: Connection<Socket, NoTlsStream>,
    wake: mpsc::Sender<()>,
    lost: oneshot::Sender<String>,
) {
    let reason = loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => {
                let _ = wake.try_send(());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => break format!("connection lost: {}", describe(&e)),
            None => break "the server closed the connection".to_owned(),
        }
    };
    let _ = lost.send(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(
            lock_key("public", "herald_outbox"),
            lock_key("public", "herald_outbox")
        );
        assert_ne!(
            lock_key("public", "herald_outbox"),
            lock_key("app", "herald_outbox")
        );
        let s = Statements::new(QualifiedName::parse("app.outbox").unwrap());
        assert!(
            s.select
                .contains("FROM \"app\".\"outbox\" WHERE published_at IS NULL ORDER BY id")
        );
    }
}
