//! The publisher side: a few tasks, each with one keep-alive HTTP/1.1
//! connection over which requests are pipelined (written ahead of their
//! responses, up to a depth), a raw request writer and an in-order response
//! reader.
//!
//! Each channel belongs to exactly one publisher task (channel `c` to task
//! `c % publishers`), and a task sends its events in order on a single
//! connection, so the events of a channel reach the hub in sequence order.
//! The subscriber-side duplicate/gap accounting relies on that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, TryAcquireError, mpsc};
use tokio::task::JoinSet;

use crate::http::{self, ResponseReader};
use crate::stats::Shared;
use crate::target::{Channel, PathTemplate, Target};

/// How requests are written out in one go once this much is buffered.
const FLUSH_AT: usize = 64 * 1024;
/// Time allowed for connecting a publisher.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for each response once a request is outstanding.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Consecutive connection failures after which a publisher gives up.
const MAX_FAILURES: u32 = 5;

/// What the publish request looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PublishFormat {
    /// Herald: `{"channel":"c","data":{...}}` (or an array for a batch).
    Herald,
    /// The data object itself, POSTed to a per-channel path (e.g. Nchan's
    /// `/pub?id={channel}`).
    Raw,
}

/// Settings for the publishing phase.
#[derive(Debug)]
pub(crate) struct PubConfig {
    /// Measurement state.
    pub(crate) shared: Arc<Shared>,
    /// Hub nodes; publisher `p` uses node `p % len`.
    pub(crate) targets: Arc<[Target]>,
    /// All channels.
    pub(crate) channels: Arc<[Channel]>,
    /// Ready subscribers per channel (for expected deliveries).
    pub(crate) subs: Arc<[u64]>,
    /// Bearer token.
    pub(crate) token: Option<String>,
    /// Request format.
    pub(crate) format: PublishFormat,
    /// Publish path template.
    pub(crate) path: PathTemplate,
    /// Total events.
    pub(crate) events: u64,
    /// Events per second in total (0 = as fast as possible).
    pub(crate) rate: f64,
    /// Publisher tasks.
    pub(crate) publishers: usize,
    /// Requests in flight per connection.
    pub(crate) pipeline: usize,
    /// Events per request (Herald format only).
    pub(crate) batch: usize,
    /// Size of each event's data object.
    pub(crate) payload_bytes: usize,
    /// No new requests after this.
    pub(crate) stop_at: Instant,
    /// How long to wait for outstanding responses at the end.
    pub(crate) settle_timeout: Duration,
}

/// One event to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ev {
    /// Global index (0..events), which also fixes its place in the schedule.
    pub(crate) index: u64,
    /// Channel index.
    pub(crate) channel: usize,
    /// Sequence number within the channel.
    pub(crate) seq: u64,
}

/// The events of one publisher, in increasing global index: event `e` goes
/// to channel `e % channels` with per-channel sequence `e / channels`, and
/// this publisher owns channels `p, p + step, p + 2 step, ...`.
#[derive(Debug, Clone)]
pub(crate) struct EventIter {
    first: u64,
    step: u64,
    owned: u64,
    channels: u64,
    total: u64,
    round: u64,
    pos: u64,
}

impl EventIter {
    /// Publisher `p` of `step`, over `channels` channels and `total` events.
    pub(crate) fn new(p: usize, step: usize, channels: usize, total: u64) -> Self {
        let (p, step, channels) = (p as u64, step.max(1) as u64, channels as u64);
        let owned = if p < channels {
            (channels - p).div_ceil(step)
        } else {
            0
        };
        Self {
            first: p,
            step,
            owned,
            channels,
            total,
            round: 0,
            pos: 0,
        }
    }

    /// The next event, if any remain.
    pub(crate) fn peek(&self) -> Option<Ev> {
        if self.owned == 0 {
            return None;
        }
        let channel = self.first + self.pos * self.step;
        let index = self
            .round
            .checked_mul(self.channels)?
            .checked_add(channel)?;
        (index < self.total).then_some(Ev {
            index,
            channel: channel as usize,
            seq: self.round,
        })
    }

    /// Moves past the current event.
    pub(crate) fn advance(&mut self) {
        self.pos += 1;
        if self.pos == self.owned {
            self.pos = 0;
            self.round += 1;
        }
    }
}

/// Appends the event data object: `{"t":<µs>,"s":<seq>,"p":"xx.."}`, padded
/// with `x` so it is `size` bytes long (or as short as possible when `size`
/// is below the minimum of about 36 bytes).
pub(crate) fn write_data(out: &mut Vec<u8>, t: u64, s: u64, size: usize) {
    let start = out.len();
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"{\"t\":");
    out.extend_from_slice(num.format(t).as_bytes());
    out.extend_from_slice(b",\"s\":");
    out.extend_from_slice(num.format(s).as_bytes());
    out.extend_from_slice(b",\"p\":\"");
    let used = out.len() - start + 2;
    out.resize(out.len() + size.saturating_sub(used), b'x');
    out.extend_from_slice(b"\"}");
}

/// Bookkeeping for one request in flight.
#[derive(Debug, Clone, Copy)]
struct Pending {
    events: u64,
    expected: u64,
}

/// Runs all publishers to completion (bounded by `stop_at` plus the settle
/// timeout plus connection timeouts).
pub(crate) async fn run(cfg: Arc<PubConfig>) {
    let count = cfg.publishers.clamp(1, cfg.channels.len().max(1));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for p in 0..count {
        set.spawn(publisher(cfg.clone(), p, count, start));
    }
    while set.join_next().await.is_some() {}
}

async fn publisher(cfg: Arc<PubConfig>, p: usize, count: usize, start: Instant) {
    let mut it = EventIter::new(p, count, cfg.channels.len(), cfg.events);
    let target = &cfg.targets[p % cfg.targets.len()];
    let mut failures = 0;
    while it.peek().is_some() && Instant::now() < cfg.stop_at {
        let before = it.peek();
        let result = run_connection(&cfg, target, &mut it, start).await;
        if it.peek() != before {
            failures = 0;
        }
        if let Err(e) = result {
            cfg.shared.record_error(format!("publish: {e:#}"));
            failures += 1;
            if failures >= MAX_FAILURES {
                cfg.shared.record_error(format!(
                    "publisher {p} gave up after {MAX_FAILURES} failed connections"
                ));
                return;
            }
            let backoff = Duration::from_millis(100 << failures);
            tokio::time::sleep_until((Instant::now() + backoff).min(cfg.stop_at).into()).await;
        }
    }
}

/// One connection: write requests until done, the cap, or a failure; then
/// wait (bounded) for the outstanding responses.
async fn run_connection(
    cfg: &Arc<PubConfig>,
    target: &Target,
    it: &mut EventIter,
    start: Instant,
) -> Result<()> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, http::connect(target.addr, None))
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", target.addr))??;
    let (rd, mut wr) = stream.into_split();
    let sem = Arc::new(Semaphore::new(cfg.pipeline));
    let (tx, rx) = mpsc::unbounded_channel();
    let settled = Arc::new(AtomicU64::new(0));
    let pause_until = Arc::new(AtomicU64::new(0));
    let mut reader = tokio::spawn(read_responses(
        cfg.clone(),
        rd,
        rx,
        sem.clone(),
        settled.clone(),
        pause_until.clone(),
    ));
    let mut sent = 0;
    let result = write_loop(
        cfg,
        target,
        it,
        start,
        &mut wr,
        &sem,
        &tx,
        &pause_until,
        &mut sent,
    )
    .await;
    drop(tx);
    if tokio::time::timeout(cfg.settle_timeout, &mut reader)
        .await
        .is_err()
    {
        reader.abort();
        cfg.shared
            .record_error("publish: responses still outstanding at the end");
    }
    let unanswered = sent - settled.load(Relaxed).min(sent);
    if unanswered > 0 {
        cfg.shared.publish_errors.fetch_add(unanswered, Relaxed);
    }
    let _ = wr.shutdown().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    cfg: &PubConfig,
    target: &Target,
    it: &mut EventIter,
    start: Instant,
    wr: &mut OwnedWriteHalf,
    sem: &Semaphore,
    tx: &mpsc::UnboundedSender<Pending>,
    pause_until: &AtomicU64,
    sent: &mut u64,
) -> Result<()> {
    let shared = &cfg.shared;
    let mut out = Vec::with_capacity(FLUSH_AT + 8 * 1024);
    let mut body = Vec::with_capacity(cfg.payload_bytes * cfg.batch + 256);
    let due = |ev: &Ev| {
        (cfg.rate > 0.0).then(|| start + Duration::from_secs_f64(ev.index as f64 / cfg.rate))
    };
    while let Some(ev) = it.peek() {
        let now = Instant::now();
        if now >= cfg.stop_at {
            break;
        }
        if let Some(due) = due(&ev).filter(|d| *d > now) {
            flush(wr, &mut out).await?;
            tokio::time::sleep_until(due.min(cfg.stop_at).into()).await;
            continue;
        }
        let pause = pause_until.load(Relaxed);
        if pause > 0 {
            let until = shared.clock.instant(pause);
            if until > now {
                flush(wr, &mut out).await?;
                tokio::time::sleep_until(until.min(cfg.stop_at).into()).await;
                continue;
            }
        }
        match sem.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => {
                flush(wr, &mut out).await?;
                match tokio::time::timeout_at(cfg.stop_at.into(), sem.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    Ok(Err(_)) => bail!("connection closed by the hub"),
                    Err(_) => break,
                }
            }
            Err(TryAcquireError::Closed) => bail!("connection closed by the hub"),
        }
        let pending = build_request(cfg, target, it, &mut out, &mut body, |ev| {
            due(ev).is_none_or(|d| d <= Instant::now())
        });
        *sent += pending.events;
        shared.publish_attempted.fetch_add(pending.events, Relaxed);
        if tx.send(pending).is_err() {
            bail!("response reader stopped");
        }
        if out.len() >= FLUSH_AT {
            flush(wr, &mut out).await?;
        }
    }
    flush(wr, &mut out).await
}

async fn flush(wr: &mut OwnedWriteHalf, out: &mut Vec<u8>) -> Result<()> {
    if !out.is_empty() {
        wr.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Appends one request (one event, or a batch of events that are due) to
/// `out` and advances `it` past them. `it` must not be exhausted.
fn build_request(
    cfg: &PubConfig,
    target: &Target,
    it: &mut EventIter,
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
    is_due: impl Fn(&Ev) -> bool,
) -> Pending {
    let shared = &cfg.shared;
    shared
        .first_publish_us
        .fetch_min(shared.clock.now_us(), Relaxed);
    let t = shared.clock.unix_us();
    body.clear();
    let mut events = 0;
    let mut expected = 0;
    let mut path_channel = None;
    match cfg.format {
        PublishFormat::Herald => {
            let batch = cfg.batch > 1;
            if batch {
                body.push(b'[');
            }
            while let Some(ev) = it.peek() {
                if events > 0 && (events as usize >= cfg.batch || !is_due(&ev)) {
                    break;
                }
                if events > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(b"{\"channel\":");
                body.extend_from_slice(cfg.channels[ev.channel].json.as_bytes());
                body.extend_from_slice(b",\"data\":");
                write_data(body, t, ev.seq, cfg.payload_bytes);
                body.push(b'}');
                expected += cfg.subs[ev.channel];
                events += 1;
                path_channel.get_or_insert(ev.channel);
                it.advance();
                if !batch {
                    break;
                }
            }
            if batch {
                body.push(b']');
            }
        }
        PublishFormat::Raw => {
            if let Some(ev) = it.peek() {
                write_data(body, t, ev.seq, cfg.payload_bytes);
                expected += cfg.subs[ev.channel];
                events += 1;
                path_channel = Some(ev.channel);
                it.advance();
            }
        }
    }
    let channel = path_channel.map_or("", |c| cfg.channels[c].url.as_str());
    out.extend_from_slice(b"POST ");
    cfg.path.render_into(out, &target.base_path, channel);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(target.host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\n");
    if let Some(token) = &cfg.token {
        out.extend_from_slice(b"Authorization: Bearer ");
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    Pending { events, expected }
}

async fn read_responses(
    cfg: Arc<PubConfig>,
    rd: OwnedReadHalf,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    sem: Arc<Semaphore>,
    settled: Arc<AtomicU64>,
    pause_until: Arc<AtomicU64>,
) {
    let shared = &cfg.shared;
    let mut reader = ResponseReader::new(rd);
    while let Some(p) = rx.recv().await {
        let resp = match tokio::time::timeout(RESPONSE_TIMEOUT, reader.read_response(1024)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                shared.record_error(format!("publish response: {e:#}"));
                sem.close();
                return;
            }
            Err(_) => {
                shared.record_error(format!("publish: no response within {RESPONSE_TIMEOUT:?}"));
                sem.close();
                return;
            }
        };
        let now = shared.clock.now_us();
        let status = resp.head.status;
        if (200..300).contains(&status) {
            shared.published.fetch_add(p.events, Relaxed);
            shared.expected.fetch_add(p.expected, Relaxed);
            shared.last_ack_us.fetch_max(now, Relaxed);
        } else {
            shared.publish_errors.fetch_add(p.events, Relaxed);
            shared.record_error(format!(
                "publish answered {status}: {}",
                http::error_message(&resp.body)
            ));
            if status == 503 || status == 429 {
                let secs = resp.head.retry_after_secs.unwrap_or(0).min(60);
                // Back off at least a little even without Retry-After.
                let wait_us = (secs * 1_000_000).max(10_000);
                pause_until.fetch_max(now + wait_us, Relaxed);
            }
        }
        settled.fetch_add(p.events, Relaxed);
        sem.add_permits(1);
        if resp.head.close {
            sem.close();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: usize, step: usize, m: usize, total: u64) -> Vec<Ev> {
        let mut it = EventIter::new(p, step, m, total);
        let mut out = Vec::new();
        while let Some(ev) = it.peek() {
            out.push(ev);
            it.advance();
        }
        out
    }

    #[test]
    fn publishers_partition_events_and_keep_channel_order() {
        for (m, step, total) in [
            (10, 4, 95),
            (3, 3, 10),
            (1, 1, 5),
            (7, 2, 0),
            (10_000, 4, 10_000),
            (5, 8, 12),
        ] {
            let mut seen = vec![false; total as usize];
            for p in 0..step {
                let evs = all(p, step, m, total);
                for w in evs.windows(2) {
                    assert!(w[0].index < w[1].index);
                }
                for ev in evs {
                    assert_eq!(ev.channel % step, p);
                    assert_eq!(ev.channel, (ev.index % m as u64) as usize);
                    assert_eq!(ev.seq, ev.index / m as u64);
                    assert!(!seen[ev.index as usize]);
                    seen[ev.index as usize] = true;
                }
            }
            assert!(seen.iter().all(|&s| s), "m {m} step {step} total {total}");
        }
    }

    #[test]
    fn data_has_requested_size_and_parses() -> Result<()> {
        for size in [0, 10, 36, 37, 100, 1000] {
            let mut out = b"prefix".to_vec();
            write_data(&mut out, 1_712_345_678_901_234, 42, size);
            let data = &out[6..];
            if size >= 40 {
                assert_eq!(data.len(), size);
            }
            let v: serde_json::Value = serde_json::from_slice(data)?;
            assert_eq!(v["t"], 1_712_345_678_901_234u64);
            assert_eq!(v["s"], 42);
            assert_eq!(
                crate::sse::extract_ts(data),
                (Some(1_712_345_678_901_234), Some(42))
            );
        }
        Ok(())
    }

    fn test_cfg(format: PublishFormat, batch: usize, path: &str) -> Result<PubConfig> {
        let channels: Vec<Channel> = (0..3).map(|i| Channel::new("bench-", i)).collect();
        Ok(PubConfig {
            shared: Arc::new(Shared::new(1)?),
            targets: Arc::from(vec![Target::parse("http://127.0.0.1:9/hub")?]),
            channels: Arc::from(channels),
            subs: Arc::from(vec![2, 1, 0]),
            token: Some("tok".into()),
            format,
            path: PathTemplate::new(path)?,
            events: 5,
            rate: 0.0,
            publishers: 1,
            pipeline: 4,
            batch,
            payload_bytes: 60,
            stop_at: Instant::now(),
            settle_timeout: Duration::from_secs(1),
        })
    }

    fn split_request(req: &[u8]) -> Result<(String, serde_json::Value)> {
        let end = memchr::memmem::find(req, b"\r\n\r\n").ok_or_else(|| anyhow!("no head end"))?;
        let head = String::from_utf8(req[..end].to_vec())?;
        let body = &req[end + 4..];
        assert!(
            head.ends_with(&format!("\r\nContent-Length: {}", body.len())),
            "{head}"
        );
        Ok((head, serde_json::from_slice(body)?))
    }

    #[test]
    fn herald_requests_single_and_batched() -> Result<()> {
        let cfg = test_cfg(PublishFormat::Herald, 1, "/publish")?;
        let target = cfg.targets[0].clone();
        let mut it = EventIter::new(0, 1, 3, 5);
        let (mut out, mut body) = (Vec::new(), Vec::new());
        let p = build_request(&cfg, &target, &mut it, &mut out, &mut body, |_| true);
        assert_eq!((p.events, p.expected), (1, 2));
        let (head, json) = split_request(&out)?;
        assert!(head.starts_with("POST /hub/publish HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(head.contains("Authorization: Bearer tok\r\n"));
        assert_eq!(json["channel"], "bench-0");
        assert_eq!(json["data"]["s"], 0);

        let cfg = test_cfg(PublishFormat::Herald, 3, "/publish")?;
        out.clear();
        let p = build_request(&cfg, &target, &mut it, &mut out, &mut body, |_| true);
        assert_eq!((p.events, p.expected), (3, 3));
        let (_, json) = split_request(&out)?;
        let chans: Vec<&str> = json
            .as_array()
            .ok_or_else(|| anyhow!("array"))?
            .iter()
            .filter_map(|o| o["channel"].as_str())
            .collect();
        assert_eq!(chans, ["bench-1", "bench-2", "bench-0"]);
        assert_eq!(json[2]["data"]["s"], 1);
        // A batch stops at events that are not yet due.
        out.clear();
        let p = build_request(&cfg, &target, &mut it, &mut out, &mut body, |_| false);
        assert_eq!(p.events, 1);
        assert_eq!(it.peek(), None);
        Ok(())
    }

    #[test]
    fn raw_requests_use_channel_path() -> Result<()> {
        let cfg = test_cfg(PublishFormat::Raw, 1, "/pub?id={channel}")?;
        let target = cfg.targets[0].clone();
        let mut it = EventIter::new(0, 1, 3, 5);
        it.advance();
        let (mut out, mut body) = (Vec::new(), Vec::new());
        let p = build_request(&cfg, &target, &mut it, &mut out, &mut body, |_| true);
        assert_eq!((p.events, p.expected), (1, 1));
        let (head, json) = split_request(&out)?;
        assert!(
            head.starts_with("POST /hub/pub?id=bench-1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert_eq!(json["s"], 0);
        assert_eq!(json.as_object().map(|o| o.len()), Some(3));
        Ok(())
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            http::error_message(br#"{"error":{"code":"forbidden","message":"no publish right"}}"#),
            "forbidden: no publish right"
        );
        assert_eq!(http::error_message(b"  plain text \n"), "plain text");
    }
}
