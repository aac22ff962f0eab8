//! Publishing through PostgreSQL (`--postgres-url`): instead of POSTing to the
//! hub, each publisher task inserts rows into a table whose trigger (NOTIFY or
//! outbox, from `herald pg trigger`) the hub's PostgreSQL source turns into
//! events. The latency measured is then from INSERT to SSE delivery.
//!
//! The table needs the columns `channel text, t bigint, s bigint, p text`, and
//! the hub a route sending `t`, `s` and `p` to the channel named by `channel`:
//!
//! ```toml
//! [[postgres.routes]]
//! notify = "herald_bench"
//! channels = ["{channel}"]
//! fields = ["t", "s", "p"]
//! ```
//!
//! As with HTTP, channel `c` belongs to publisher task `c % publishers`, which
//! inserts its rows one statement after another on one connection, so the rows
//! of a channel commit (and are notified) in sequence order. A statement carries
//! up to `--batch` rows (one transaction).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::task::JoinSet;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls, Statement};

use crate::publish::{EventIter, PubConfig};

/// Time allowed for connecting and for each INSERT.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Consecutive connection failures after which a publisher gives up.
const MAX_FAILURES: u32 = 5;

/// Where rows go.
#[derive(Debug, Clone)]
pub(crate) struct PgTarget {
    /// The connection settings (loopback hosts only).
    pub(crate) config: tokio_postgres::Config,
    /// The table, as written (an identifier, optionally `schema.table`).
    pub(crate) table: String,
}

impl PgTarget {
    /// Checks the URL (every host on loopback) and the table name.
    pub(crate) fn parse(url: &str, table: &str) -> Result<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .context("--postgres-url is not a PostgreSQL connection URL")?;
        if config.get_hosts().is_empty() {
            bail!("--postgres-url names no host");
        }
        for host in config.get_hosts() {
            let loopback = match host {
                Host::Tcp(name) => {
                    name == "localhost"
                        || name
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                }
                #[cfg(unix)]
                Host::Unix(_) => true,
            };
            if !loopback {
                bail!(
                    "--postgres-url must point to a loopback address (127.0.0.1, ::1, localhost)"
                );
            }
        }
        let valid = !table.is_empty()
            && table.split('.').count() <= 2
            && table.split('.').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !valid {
            bail!("--postgres-table must be `table` or `schema.table` (letters, digits, '_')");
        }
        Ok(Self {
            config,
            table: table.to_owned(),
        })
    }
}

/// Runs all publishers to completion (bounded by `stop_at` and the timeouts).
pub(crate) async fn run(cfg: Arc<PubConfig>, target: Arc<PgTarget>) {
    let names: Arc<[String]> = cfg
        .channels
        .iter()
        .map(|c| serde_json::from_str::<String>(&c.json).unwrap_or_default())
        .collect();
    let count = cfg.publishers.clamp(1, cfg.channels.len().max(1));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for p in 0..count {
        set.spawn(publisher(
            cfg.clone(),
            target.clone(),
            names.clone(),
            p,
            count,
            start,
        ));
    }
    while set.join_next().await.is_some() {}
}

async fn connect(target: &PgTarget) -> Result<(Client, Statement)> {
    let (client, connection) = tokio::time::timeout(TIMEOUT, target.config.connect(NoTls))
        .await
        .context("connecting to PostgreSQL timed out")??;
    tokio::spawn(connection);
    let statement = client
        .prepare(&format!(
            "INSERT INTO {} (channel, t, s, p) SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[])",
            target.table
        ))
        .await
        .context("preparing the INSERT")?;
    Ok((client, statement))
}

async fn publisher(
    cfg: Arc<PubConfig>,
    target: Arc<PgTarget>,
    names: Arc<[String]>,
    p: usize,
    count: usize,
    start: Instant,
) {
    let shared = &cfg.shared;
    let mut it = EventIter::new(p, count, cfg.channels.len(), cfg.events);
    let padding = "x".repeat(cfg.payload_bytes.saturating_sub(36));
    let due = |index: u64| {
        (cfg.rate > 0.0).then(|| start + Duration::from_secs_f64(index as f64 / cfg.rate))
    };
    let mut failures = 0;
    let mut session: Option<(Client, Statement)> = None;
    while let Some(first) = it.peek() {
        let now = Instant::now();
        if now >= cfg.stop_at {
            break;
        }
        if let Some(at) = due(first.index).filter(|d| *d > now) {
            tokio::time::sleep_until(at.min(cfg.stop_at).into()).await;
            continue;
        }
        let (client, statement) = match &session {
            Some(s) => s,
            None => match connect(&target).await {
                Ok(s) => session.insert(s),
                Err(e) => {
                    shared.record_error(format!("postgres publisher: {e:#}"));
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        shared.record_error(format!(
                            "postgres publisher {p} gave up after {MAX_FAILURES} failed connections"
                        ));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100 << failures)).await;
                    continue;
                }
            },
        };
        let (mut chans, mut seqs, mut expected) = (Vec::new(), Vec::new(), 0);
        while let Some(ev) = it.peek() {
            if !chans.is_empty()
                && (chans.len() >= cfg.batch || due(ev.index).is_some_and(|d| d > Instant::now()))
            {
                break;
            }
            chans.push(names[ev.channel].as_str());
            seqs.push(i64::try_from(ev.seq).unwrap_or(i64::MAX));
            expected += cfg.subs[ev.channel];
            it.advance();
        }
        let n = chans.len() as u64;
        let t = i64::try_from(shared.clock.unix_us()).unwrap_or(i64::MAX);
        let ts = vec![t; chans.len()];
        let pads = vec![padding.as_str(); chans.len()];
        shared
            .first_publish_us
            .fetch_min(shared.clock.now_us(), Relaxed);
        shared.publish_attempted.fetch_add(n, Relaxed);
        let result = tokio::time::timeout(
            TIMEOUT,
            client.execute(statement, &[&chans, &ts, &seqs, &pads]),
        )
        .await;
        match result {
            Ok(Ok(_)) => {
                failures = 0;
                shared.published.fetch_add(n, Relaxed);
                shared.expected.fetch_add(expected, Relaxed);
                shared.last_ack_us.fetch_max(shared.clock.now_us(), Relaxed);
            }
            Ok(Err(e)) => {
                shared.publish_errors.fetch_add(n, Relaxed);
                shared.record_error(format!("postgres insert: {e}"));
                if client.is_closed() {
                    session = None;
                }
            }
            Err(_) => {
                shared.publish_errors.fetch_add(n, Relaxed);
                shared.record_error(format!("postgres insert: no answer within {TIMEOUT:?}"));
                session = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_databases_and_plain_table_names() {
        assert!(PgTarget::parse("postgres://postgres@127.0.0.1:5432/test", "herald_bench").is_ok());
        assert!(PgTarget::parse("postgres://postgres@localhost/test", "bench.rows").is_ok());
        assert!(PgTarget::parse("postgres://postgres@10.0.0.1/test", "t").is_err());
        assert!(PgTarget::parse("postgres://postgres@127.0.0.1/test", "t; drop").is_err());
        assert!(PgTarget::parse("postgres://postgres@127.0.0.1/test", "a.b.c").is_err());
        assert!(PgTarget::parse("not a url", "t").is_err());
    }
}
