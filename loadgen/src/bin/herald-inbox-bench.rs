//! `herald-inbox-bench`: seeds a notification store in bulk and measures the inbox
//! API of a running hub: creates per second (`POST /api/notifications`) and list
//! latency (`GET /api/notifications`) for users with stored notifications.
//!
//! `seed` writes straight into the store through the library (one transaction per
//! 10,000 rows), as an import would; `run` talks plain HTTP to a loopback hub.
//! Every loop is bounded by a count and a deadline. `bench/inbox.sh` runs both
//! against SQLite and PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use herald::auth::{Authenticator, Claims};
use herald::config::AuthConfig;
use herald::core::ChannelPattern;
use herald::store::{Backend, Kind, Notification, Store};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "herald-inbox-bench")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fills a store with notifications spread over users (`u0` .. `u{users-1}`).
    Seed {
        /// `sqlite:PATH` or a `postgres://` URL.
        #[arg(long)]
        store: String,
        /// Users.
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Notifications in all.
        #[arg(long, default_value_t = 1_000_000)]
        notifications: u64,
    },
    /// Measures creates and lists against a hub.
    Run {
        /// The hub (loopback only).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The hub's HS256 secret, to mint user and publisher tokens.
        #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// Users the seed spread notifications over.
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Creates to send.
        #[arg(long, default_value_t = 20_000)]
        creates: u64,
        /// Lists to send.
        #[arg(long, default_value_t = 20_000)]
        lists: u64,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: u64,
        /// Longest time for each phase.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        max_time: Duration,
        /// Label of the store, copied to the report.
        #[arg(long, default_value = "")]
        label: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().command {
        Command::Seed {
            store,
            users,
            notifications,
        } => seed(&store, users, notifications).await,
        Command::Run {
            url,
            secret,
            users,
            creates,
            lists,
            concurrency,
            max_time,
            label,
        } => {
            if !(url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost")) {
                bail!("--url must be a loopback address");
            }
            run(Run {
                url,
                secret,
                users: users.max(1),
                creates,
                lists,
                concurrency: concurrency.max(1),
                max_time,
                label,
            })
            .await
        }
    }
}

/// Rows per import transaction.
const CHUNK: u64 = 10_000;

async fn seed(store: &str, users: u64, total: u64) -> Result<()> {
    let backend = match store.strip_prefix("sqlite:") {
        Some(path) => Backend::Sqlite(path.into()),
        None => Backend::Postgres {
            url: store.to_owned(),
            pool_size: 4,
        },
    };
    let store = Store::open(&backend).map_err(|e| anyhow::anyhow!("{e}"))?;
    store.check().await.context("the store")?;
    let started = Instant::now();
    let mut written = 0;
    while written < total {
        let n = CHUNK.min(total - written);
        let rows: Vec<Notification> = (written..written + n)
            .map(|i| {
                let (id, created_at) = herald::store::new_id();
                Notification {
                    id,
                    user: format!("u{}", i % users.max(1)),
                    title: format!("Notification {i}"),
                    message: "Your report is ready to download.".into(),
                    kind: [Kind::Info, Kind::Success, Kind::Warning, Kind::Error][(i % 4) as usize],
                    link: Some(format!("/reports/{i}")),
                    data: Some(json!({"report": i})),
                    // Two in three are read, like an inbox people use.
                    read: i % 3 != 0,
                    created_at,
                    broadcast: false,
                }
            })
            .collect();
        written += store.import(rows).await.context("import")?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"seeded": written, "users": users, "seconds": round(secs), "rows_per_s": round(written as f64 / secs)})
    );
    Ok(())
}

struct Run {
    url: String,
    secret: String,
    users: u64,
    creates: u64,
    lists: u64,
    concurrency: u64,
    max_time: Duration,
    label: String,
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Sends `total` requests made by `request(i)` with `concurrency` in flight, for at
/// most `max_time`; returns (ok, failed, seconds, latency histogram in µs).
async fn phase<F>(
    total: u64,
    concurrency: u64,
    max_time: Duration,
    request: F,
) -> (u64, u64, f64, Histogram<u64>)
where
    F: Fn(u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + max_time;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (request, next, failed) = (request.clone(), next.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    break;
                }
                let sent = Instant::now();
                match request(i).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        let _ = histogram.record(sent.elapsed().as_micros() as u64);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram
        }));
    }
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for w in workers {
        if let Ok(h) = w.await {
            let _ = histogram.add(h);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    (
        histogram.len(),
        failed.load(Ordering::Relaxed),
        secs,
        histogram,
    )
}

fn report(name: &str, label: &str, (ok, failed, secs, h): (u64, u64, f64, Histogram<u64>)) {
    let ms = |q: f64| round(h.value_at_quantile(q) as f64 / 1000.0);
    println!(
        "{}",
        json!({
            "store": label, "phase": name, "ok": ok, "failed": failed, "seconds": round(secs),
            "per_s": round(ok as f64 / secs), "p50_ms": ms(0.5), "p90_ms": ms(0.9),
            "p99_ms": ms(0.99), "max_ms": round(h.max() as f64 / 1000.0),
        })
    );
}

async fn run(cfg: Run) -> Result<()> {
    let auth = Authenticator::from_config(&AuthConfig {
        jwt_secret: Some(cfg.secret.clone()),
        ..AuthConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut claims = Claims::new(Some("bench".into()), Duration::from_secs(3600));
    claims.herald.publish = vec![ChannelPattern::parse("*").map_err(|e| anyhow::anyhow!("{e}"))?];
    let publisher = auth.mint(&claims)?;
    // A pool of user tokens, picked by a fixed spread over the seeded users.
    let sample = 1000.min(cfg.users);
    let tokens: Arc<Vec<(String, String)>> = Arc::new(
        (0..sample)
            .map(|k| {
                let user = format!("u{}", k * 7919 % cfg.users);
                let claims = Claims::new(Some(user.clone()), Duration::from_secs(3600));
                auth.mint(&claims).map(|t| (user, t))
            })
            .collect::<Result<_, _>>()?,
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency as usize)
        .build()?;

    let (url, users, c, p) = (cfg.url.clone(), cfg.users, http.clone(), publisher.clone());
    let created = phase(cfg.creates, cfg.concurrency, cfg.max_time, move |i| {
        c.post(format!("{url}/api/notifications"))
            .bearer_auth(&p)
            .json(
                &json!({"user": format!("u{}", i * 104_729 % users), "title": "Bench",
                          "message": "A new notification", "type": "info"}),
            )
    })
    .await;
    report("create", &cfg.label, created);

    let (url, c, t) = (cfg.url.clone(), http.clone(), tokens.clone());
    let listed = phase(cfg.lists, cfg.concurrency, cfg.max_time, move |i| {
        let (_, token) = &t[(i % t.len() as u64) as usize];
        c.get(format!("{url}/api/notifications?page=1&limit=50"))
            .bearer_auth(token)
    })
    .await;
    report("list", &cfg.label, listed);

    let (url, c, t) = (cfg.url.clone(), http.clone(), tokens.clone());
    let counted = phase(cfg.lists, cfg.concurrency, cfg.max_time, move |i| {
        let (_, token) = &t[(i % t.len() as u64) as usize];
        c.get(format!("{url}/api/notifications/unread_count"))
            .bearer_auth(token)
    })
    .await;
    report("unread_count", &cfg.label, counted);
    Ok(())
}
