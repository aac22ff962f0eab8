//! The phases of a run: measure the hub's memory, open the subscribers,
//! then either sit idle or publish and drain, and assemble the report.
//! Every phase is bounded by its own limit and by the global deadline.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::http;
use crate::publish::{self, PubConfig, PublishFormat};
use crate::report::{ErrorSample, Latency, OtherEventCounts, Report, per_sec};
use crate::sse;
use crate::stats::Shared;
use crate::subscriber::{Outcome, ReadyOn, SubConfig};
use crate::target::{Channel, PathTemplate, Target};
use crate::ws::{self, Transport};

/// Validated settings for one run.
#[derive(Debug)]
pub(crate) struct RunConfig {
    /// Hub nodes.
    pub(crate) targets: Vec<Target>,
    /// Token for subscribe and publish.
    pub(crate) token: Option<String>,
    /// Subscribers to open.
    pub(crate) connections: usize,
    /// Channel names.
    pub(crate) channels: Vec<Channel>,
    /// Connections being opened at once.
    pub(crate) connect_concurrency: usize,
    /// Per-connection time to become ready.
    pub(crate) connect_timeout: Duration,
    /// Local addresses to bind subscribers to.
    pub(crate) source_ips: Vec<IpAddr>,
    /// What makes a subscriber ready.
    pub(crate) ready_on: ReadyOn,
    /// SSE or WebSocket subscribers.
    pub(crate) transport: Transport,
    /// Subscribe path template.
    pub(crate) subscribe_path: PathTemplate,
    /// Publish path template.
    pub(crate) publish_path: PathTemplate,
    /// Publish body format.
    pub(crate) publish_format: PublishFormat,
    /// Events per second in total (0 = unpaced).
    pub(crate) rate: f64,
    /// Publisher tasks.
    pub(crate) publishers: usize,
    /// Pipelined requests per publisher connection.
    pub(crate) pipeline: usize,
    /// Events per publish request.
    pub(crate) batch: usize,
    /// Events to publish.
    pub(crate) events: u64,
    /// Bytes of data per event.
    pub(crate) payload_bytes: usize,
    /// Cap on the publishing phase.
    pub(crate) duration: Duration,
    /// Wait for outstanding deliveries after publishing.
    pub(crate) drain_timeout: Duration,
    /// Cap on the whole run.
    pub(crate) timeout: Duration,
    /// Idle mode: no publishing, measure memory.
    pub(crate) idle: bool,
    /// How long to stay idle.
    pub(crate) idle_secs: Duration,
    /// Hub process for `/proc/<pid>/status`.
    pub(crate) hub_pid: Option<u32>,
    /// Stats endpoint path.
    pub(crate) stats_path: String,
    /// Histogram shards.
    pub(crate) shards: usize,
    /// Progress lines on stderr.
    pub(crate) progress: bool,
    /// Remarks to carry into the report.
    pub(crate) notes: Vec<String>,
    /// Publish by INSERT into PostgreSQL instead of HTTP.
    pub(crate) postgres: Option<crate::pg::PgTarget>,
}

/// A memory reading of the hub.
#[derive(Debug, Clone, Copy, Default)]
struct HubReading {
    rss: Option<u64>,
    connections: Option<u64>,
}

/// Reads `VmRSS` of a process, in bytes.
/// CPU time used so far by the threads of process `pid`, in nanoseconds, from
/// `/proc/PID/task/*/schedstat` (threads that already exited are not counted).
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

pub(crate) fn proc_rss(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&text).with_context(|| format!("no VmRSS line in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("kB");
    Some(match unit {
        "kB" | "KB" | "kb" => value * 1024,
        "mB" | "MB" => value * 1024 * 1024,
        _ => value,
    })
}

/// Finds the first numeric value of `key` anywhere in a JSON document.
fn find_number(v: &serde_json::Value, key: &str) -> Option<u64> {
    match v {
        serde_json::Value::Object(map) => map
            .get(key)
            .and_then(|x| x.as_u64().or_else(|| x.as_f64().map(|f| f as u64)))
            .or_else(|| map.values().find_map(|x| find_number(x, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|x| find_number(x, key)),
        _ => None,
    }
}

/// Reads the hub's RSS (from `/proc` with a pid, else summed `rss_bytes`
/// of every node's stats) and its connection count (summed over nodes).
async fn read_hub(cfg: &RunConfig, shared: &Shared) -> HubReading {
    let mut reading = HubReading::default();
    let mut rss_sum = Some(0u64);
    let mut conn_sum = Some(0u64);
    for target in &cfg.targets {
        let stats = http::get(
            target,
            &cfg.stats_path,
            cfg.token.as_deref(),
            Duration::from_secs(5),
        )
        .await
        .and_then(|(status, body)| {
            if status != 200 {
                bail!("{} answered {status}", cfg.stats_path);
            }
            Ok(serde_json::from_slice::<serde_json::Value>(&body)?)
        });
        match stats {
            Ok(v) => {
                rss_sum = rss_sum
                    .zip(find_number(&v, "rss_bytes"))
                    .map(|(a, b)| a + b);
                conn_sum = conn_sum
                    .zip(find_number(&v, "connections"))
                    .map(|(a, b)| a + b);
            }
            Err(e) => {
                if cfg.hub_pid.is_none() {
                    shared.record_error(format!("stats from {}: {e:#}", target.url));
                }
                rss_sum = None;
                conn_sum = None;
            }
        }
    }
    reading.connections = conn_sum;
    reading.rss = match cfg.hub_pid {
        Some(pid) => match proc_rss(pid) {
            Ok(r) => Some(r),
            Err(e) => {
                shared.record_error(format!("{e:#}"));
                None
            }
        },
        None => rss_sum,
    };
    reading
}

fn secs_between(from_us: u64, to_us: u64) -> f64 {
    to_us.saturating_sub(from_us) as f64 / 1e6
}

/// Runs the whole benchmark. Fails only when no subscriber could connect
/// (or on setup errors); everything else ends up in the report.
pub(crate) async fn run(cfg: RunConfig) -> Result<Report> {
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    let shared = Arc::new(Shared::new(cfg.shards)?);
    let n = cfg.connections;
    let m = cfg.channels.len();
    let targets: Arc<[Target]> = Arc::from(cfg.targets.clone());
    let channels: Arc<[Channel]> = Arc::from(cfg.channels.clone());
    let mut timed_out = false;

    let before = read_hub(&cfg, &shared).await;

    // Phase 1: open the subscribers.
    let sub_cfg = Arc::new(SubConfig {
        shared: shared.clone(),
        targets: targets.clone(),
        source_ips: Arc::from(cfg.source_ips.clone()),
        channels: channels.clone(),
        path: cfg.subscribe_path.clone(),
        token: cfg.token.clone(),
        connect_sem: Arc::new(Semaphore::new(cfg.connect_concurrency)),
        connect_timeout: cfg.connect_timeout,
        ready_on: cfg.ready_on,
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut subscribers = JoinSet::new();
    let cpu_at_start = (cfg.hub_pid.and_then(cpu_ns), cpu_ns(std::process::id()));
    let connect_start_us = shared.clock.now_us();
    for idx in 0..n {
        match cfg.transport {
            Transport::Sse => {
                subscribers.spawn(sse::run_subscriber(sub_cfg.clone(), idx, tx.clone()))
            }
            Transport::Ws => {
                subscribers.spawn(ws::run_subscriber(sub_cfg.clone(), idx, tx.clone()))
            }
        };
    }
    drop(tx);
    let mut subs = vec![0u64; m];
    let mut outcomes = 0;
    let mut last_progress = Instant::now();
    while outcomes < n {
        let wait = (Instant::now() + Duration::from_secs(1)).min(deadline);
        match tokio::time::timeout_at(wait.into(), rx.recv()).await {
            Ok(Some(Outcome::Ready(c))) => {
                subs[c] += 1;
                outcomes += 1;
            }
            Ok(Some(Outcome::Failed)) => outcomes += 1,
            Ok(None) => break,
            Err(_) if Instant::now() >= deadline => {
                timed_out = true;
                break;
            }
            Err(_) => {}
        }
        if cfg.progress && last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "connecting: {} ready, {} failed of {n}",
                shared.connected.load(Relaxed),
                shared.connect_errors.load(Relaxed)
            );
        }
    }
    drop(rx);
    let cpu_at_connected = (cfg.hub_pid.and_then(cpu_ns), cpu_ns(std::process::id()));
    let connected = shared.connected.load(Relaxed);
    let cpu_per_connect = |before: Option<u64>, after: Option<u64>| {
        let spent = after?.checked_sub(before?)?;
        (connected > 0).then(|| spent as f64 / 1e3 / connected as f64)
    };
    let hub_cpu_us_per_connect = cpu_per_connect(cpu_at_start.0, cpu_at_connected.0);
    let loadgen_cpu_us_per_connect = cpu_per_connect(cpu_at_start.1, cpu_at_connected.1);
    let last_connected_us = shared.last_connected_us.load(Relaxed);
    let connect_secs = if connected > 0 {
        secs_between(connect_start_us, last_connected_us)
    } else {
        0.0
    };
    if n > 0 && connected == 0 {
        let samples: Vec<String> = shared
            .errors()
            .into_iter()
            .map(|(m, c)| format!("  {c} x {m}"))
            .collect();
        bail!(
            "none of the {n} subscribers could connect to {}; errors:\n{}",
            cfg.targets
                .iter()
                .map(|t| t.url.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            samples.join("\n")
        );
    }
    if cfg.progress {
        eprintln!("connected: {connected} of {n} in {connect_secs:.3} s");
    }

    // Phase 2: idle, or publish and drain.
    let after;
    if cfg.idle {
        let until = (Instant::now() + cfg.idle_secs).min(deadline);
        tokio::time::sleep_until(until.into()).await;
        timed_out |= Instant::now() >= deadline;
        after = read_hub(&cfg, &shared).await;
    } else {
        after = read_hub(&cfg, &shared).await;
        let pub_cfg = Arc::new(PubConfig {
            shared: shared.clone(),
            targets: targets.clone(),
            channels: channels.clone(),
            subs: Arc::from(subs),
            token: cfg.token.clone(),
            format: cfg.publish_format,
            path: cfg.publish_path.clone(),
            events: cfg.events,
            rate: cfg.rate,
            publishers: cfg.publishers,
            pipeline: cfg.pipeline,
            batch: cfg.batch,
            payload_bytes: cfg.payload_bytes,
            stop_at: (Instant::now() + cfg.duration).min(deadline),
            settle_timeout: cfg.drain_timeout,
        });
        if cfg.progress {
            eprintln!("publishing {} events", cfg.events);
        }
        let publishing = async {
            match &cfg.postgres {
                Some(target) => crate::pg::run(pub_cfg, Arc::new(target.clone())).await,
                None => publish::run(pub_cfg).await,
            }
        };
        if tokio::time::timeout_at(deadline.into(), publishing)
            .await
            .is_err()
        {
            timed_out = true;
        }
        let drain_end = (Instant::now() + cfg.drain_timeout).min(deadline);
        while shared.deliveries.load(Relaxed) < shared.expected.load(Relaxed)
            && Instant::now() < drain_end
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        timed_out |= Instant::now() >= deadline;
    }
    subscribers.abort_all();

    let s = &shared;
    let first_publish = s.first_publish_us.load(Relaxed);
    let published = s.published.load(Relaxed);
    let deliveries = s.deliveries.load(Relaxed);
    let expected = s.expected.load(Relaxed);
    let publish_secs = if published > 0 {
        secs_between(first_publish, s.last_ack_us.load(Relaxed))
    } else {
        0.0
    };
    let delivery_secs = if deliveries > 0 && first_publish != u64::MAX {
        secs_between(first_publish, s.last_delivery_us.load(Relaxed))
    } else {
        0.0
    };
    let rss_per_connection_bytes = match (before.rss, after.rss) {
        (Some(b), Some(a)) if connected > 0 => Some((a as f64 - b as f64) / connected as f64),
        _ => None,
    };
    let o = &s.other_events;
    let report = Report {
        mode: if cfg.idle { "idle" } else { "publish" },
        transport: cfg.transport.name(),
        urls: cfg.targets.iter().map(|t| t.url.clone()).collect(),
        connections: connected,
        connections_requested: n as u64,
        connect_errors: s.connect_errors.load(Relaxed),
        connect_secs,
        connects_per_sec: per_sec(connected, connect_secs),
        hub_cpu_us_per_connect,
        loadgen_cpu_us_per_connect,
        disconnects: s.disconnects.load(Relaxed),
        channels: m as u64,
        events_requested: if cfg.idle { 0 } else { cfg.events },
        events_attempted: s.publish_attempted.load(Relaxed),
        events_published: published,
        publish_secs,
        publishes_per_sec: per_sec(published, publish_secs),
        // Requests cut off by the global timeout were never settled.
        publish_errors: {
            let errors = s.publish_errors.load(Relaxed);
            errors
                + s.publish_attempted
                    .load(Relaxed)
                    .saturating_sub(published + errors)
        },
        deliveries_expected: expected,
        deliveries,
        lost: expected.saturating_sub(deliveries),
        duplicates: s.duplicates.load(Relaxed),
        reordered: s.reordered.load(Relaxed),
        out_of_window: s.out_of_window.load(Relaxed),
        unparsed_messages: s.unparsed.load(Relaxed),
        deliveries_per_sec: per_sec(deliveries, delivery_secs),
        latency_us: Latency::from_histogram(&s.merged_histogram()?),
        rss_before_bytes: before.rss,
        rss_after_bytes: after.rss,
        rss_per_connection_bytes,
        rss_source: if cfg.hub_pid.is_some() {
            "proc"
        } else {
            "stats"
        },
        hub_connections: after.connections,
        other_events: OtherEventCounts {
            reset: o.reset.load(Relaxed),
            shutdown: o.shutdown.load(Relaxed),
            token_expired: o.token_expired.load(Relaxed),
            extra_connected: o.extra_connected.load(Relaxed),
            other: o.other.load(Relaxed),
        },
        heartbeats: s.comments.load(Relaxed),
        timed_out,
        run_secs: started.elapsed().as_secs_f64(),
        errors: s
            .errors()
            .into_iter()
            .map(|(message, count)| ErrorSample { message, count })
            .collect(),
        notes: cfg.notes,
    };
    // Closing tens of thousands of sockets takes a moment; do not wait for
    // it beyond a bound.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while subscribers.join_next().await.is_some() {}
    })
    .await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_a_process_counts_its_work() {
        let me = std::process::id();
        let before = cpu_ns(me).expect("this process's CPU time");
        // Busy until the counter shows 10 ms of work, for at most 10 s of wall time.
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        let mut after = before;
        while after < before + 10_000_000 {
            assert!(
                Instant::now() < give_up,
                "{before} -> {after} ns after 10 s of work"
            );
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            after = cpu_ns(me).unwrap();
        }
        assert_eq!(cpu_ns(u32::MAX), None, "no such process");
    }

    #[test]
    fn vm_rss_parsing() {
        let status = "Name:\therald\nVmPeak:\t  200 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn stats_numbers_found_anywhere() -> Result<()> {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"uptime":3,"process":{"rss_bytes":1048576},"connections":12}"#,
        )?;
        assert_eq!(find_number(&v, "rss_bytes"), Some(1_048_576));
        assert_eq!(find_number(&v, "connections"), Some(12));
        assert_eq!(find_number(&v, "missing"), None);
        Ok(())
    }

    #[test]
    fn own_rss_is_readable() -> Result<()> {
        let rss = proc_rss(std::process::id())?;
        assert!(rss > 0);
        Ok(())
    }
}
