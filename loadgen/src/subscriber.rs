//! What the SSE and WebSocket subscribers have in common: their settings,
//! the outcome they report, opening the connection and reading its response
//! head, the per-thread scratch buffer reads go into, the accounting of one
//! delivery, and the task that runs a subscriber from connect to end.
//!
//! The transports differ only in their request headers, how they judge the
//! response and how they parse the stream; [`Subscription`] is that part.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use crate::http::{self, ResponseHead, parse_head};
use crate::stats::{Seen, SeqWindow, Shared, Tally};
use crate::target::{Channel, PathTemplate, Target};

/// Size of the per-thread read buffer.
const SCRATCH: usize = 64 * 1024;

/// When a subscriber counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReadyOn {
    /// On the hub's `connected` event (Herald).
    Connected,
    /// As soon as a 200 response head arrived (servers without such an
    /// event, e.g. Nchan).
    Headers,
}

/// Settings shared by all subscriber tasks.
#[derive(Debug)]
pub(crate) struct SubConfig {
    /// Measurement state.
    pub(crate) shared: Arc<Shared>,
    /// Hub nodes, used round-robin.
    pub(crate) targets: Arc<[Target]>,
    /// Local addresses to bind to, round-robin (empty: let the kernel pick).
    pub(crate) source_ips: Arc<[IpAddr]>,
    /// All channels.
    pub(crate) channels: Arc<[Channel]>,
    /// Subscribe path template.
    pub(crate) path: PathTemplate,
    /// Token for `?token=`.
    pub(crate) token: Option<String>,
    /// Limit on connections being opened at once.
    pub(crate) connect_sem: Arc<Semaphore>,
    /// Time allowed from connect to ready.
    pub(crate) connect_timeout: Duration,
    /// What counts as ready.
    pub(crate) ready_on: ReadyOn,
}

/// Sent once per subscriber when it is ready (with its channel) or failed.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Ready, subscribed to this channel index.
    Ready(usize),
    /// Failed.
    Failed,
}

/// A connection's protocol and accounting state that can take bytes read
/// from the socket.
pub(crate) trait Feed {
    /// What one call tells the caller (end of stream, close code, ...).
    type Step;

    /// Handles bytes read at `recv_unix_us`, counting into `tally` and
    /// recording latencies with `record`.
    fn feed(
        &mut self,
        raw: &[u8],
        recv_unix_us: u64,
        tally: &mut Tally,
        record: &mut impl FnMut(u64),
    ) -> Result<Self::Step>;
}

/// One transport's subscriber, as run by [`run`].
pub(crate) trait Subscription: Sized {
    /// Connects, subscribes to `channel` and waits until ready.
    async fn open(cfg: &SubConfig, idx: usize, channel: usize) -> Result<Self>;

    /// Waits for and handles one read. `Ok(None)` while the stream is open,
    /// `Ok(Some(why))` when the hub ended it.
    async fn read_once(&mut self, shared: &Shared, idx: usize) -> Result<Option<String>>;

    /// How a failed stream is described in errors.
    const FAILED: &'static str;
}

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// Waits for the socket and feeds one read to `conn` through the per-thread
/// scratch buffer, applying its counts to `shared`. Returns `None` at end of
/// stream.
pub(crate) async fn read_into<C: Feed>(
    stream: &TcpStream,
    conn: &mut C,
    shared: &Shared,
    idx: usize,
) -> Result<Option<C::Step>> {
    loop {
        stream.readable().await?;
        let step = SCRATCH_BUF.with(|cell| -> Result<Option<Option<C::Step>>> {
            let mut buf = cell.borrow_mut();
            let n = match stream.try_read(&mut buf[..]) {
                Ok(0) => return Ok(Some(None)),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let now_us = shared.clock.now_us();
            let recv_unix_us = shared.clock.unix_us();
            let mut tally = Tally::default();
            let mut hist = None;
            let mut record = |lat: u64| {
                hist.get_or_insert_with(|| shared.histogram(idx))
                    .saturating_record(lat);
            };
            let step = conn.feed(&buf[..n], recv_unix_us, &mut tally, &mut record);
            drop(hist);
            shared.apply(&tally, now_us);
            Ok(Some(Some(step?)))
        })?;
        if let Some(step) = step {
            return Ok(step);
        }
    }
}

/// Counts one event stamped with send time `t` (Unix µs) and sequence
/// number `s`, received at `recv_unix_us`.
pub(crate) fn count_event(
    window: &mut SeqWindow,
    t: u64,
    s: u64,
    recv_unix_us: u64,
    tally: &mut Tally,
    record: &mut impl FnMut(u64),
) {
    match window.observe(s) {
        seen @ (Seen::New | Seen::Reordered) => {
            tally.delivered += 1;
            if seen == Seen::Reordered {
                tally.reordered += 1;
            }
            record(recv_unix_us.saturating_sub(t));
        }
        Seen::Duplicate => tally.duplicates += 1,
        Seen::OutOfWindow => tally.out_of_window += 1,
    }
}

/// Connects subscriber `idx` to its node, sends `GET` of the subscribe path
/// for `channel` with the extra `headers` (each ending in CRLF) and reads the
/// response head. Returns the stream, the head, and the bytes read so far
/// with the length of the head in them.
pub(crate) async fn request(
    cfg: &SubConfig,
    idx: usize,
    channel: usize,
    headers: &str,
) -> Result<(TcpStream, ResponseHead, Vec<u8>, usize)> {
    let target = &cfg.targets[idx % cfg.targets.len()];
    let source = (!cfg.source_ips.is_empty()).then(|| cfg.source_ips[idx % cfg.source_ips.len()]);
    let mut stream = http::connect(target.addr, source)
        .await
        .with_context(|| format!("connect to {}", target.addr))?;
    let path = cfg.path.render_with_token(
        &target.base_path,
        &cfg.channels[channel].url,
        cfg.token.as_deref(),
    );
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\n{headers}User-Agent: herald-loadgen\r\n\r\n",
        target.host
    );
    stream.write_all(req.as_bytes()).await?;

    let mut head_buf = Vec::with_capacity(1024);
    let (head, head_len) = loop {
        if let Some(found) = parse_head(&head_buf)? {
            break found;
        }
        let mut tmp = [0u8; 1024];
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        head_buf.extend_from_slice(&tmp[..n]);
    };
    Ok((stream, head, head_buf, head_len))
}

/// Runs subscriber `idx` (channel `idx % channels`): opens it under the
/// connect semaphore, reports the outcome on `tx`, then reads until the
/// stream ends or the task is aborted.
pub(crate) async fn run<S: Subscription>(
    cfg: Arc<SubConfig>,
    idx: usize,
    tx: mpsc::UnboundedSender<Outcome>,
) {
    let channel = idx % cfg.channels.len();
    let Ok(permit) = cfg.connect_sem.acquire().await else {
        return;
    };
    // `open` is boxed so its buffers, needed only while connecting, do not
    // stay part of this long-lived task's state.
    let result =
        tokio::time::timeout(cfg.connect_timeout, Box::pin(S::open(&cfg, idx, channel))).await;
    drop(permit);
    let shared = &cfg.shared;
    let mut sub = match result {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            shared.connect_errors.fetch_add(1, Relaxed);
            shared.record_error(format!("subscribe: {e:#}"));
            let _ = tx.send(Outcome::Failed);
            return;
        }
        Err(_) => {
            shared.connect_errors.fetch_add(1, Relaxed);
            shared.record_error(format!(
                "subscribe: not ready within the connect timeout ({:?})",
                cfg.connect_timeout
            ));
            let _ = tx.send(Outcome::Failed);
            return;
        }
    };
    shared.connected.fetch_add(1, Relaxed);
    shared
        .last_connected_us
        .fetch_max(shared.clock.now_us(), Relaxed);
    let _ = tx.send(Outcome::Ready(channel));
    drop(tx);
    loop {
        match sub.read_once(shared, idx).await {
            Ok(None) => {}
            Ok(Some(why)) => {
                shared.disconnects.fetch_add(1, Relaxed);
                shared.record_error(why);
                return;
            }
            Err(e) => {
                shared.disconnects.fetch_add(1, Relaxed);
                shared.record_error(format!("{} failed: {e:#}", S::FAILED));
                return;
            }
        }
    }
}
