//! The subscriber side: an allocation-light Server-Sent Events parser, the
//! per-connection accounting, and the task that runs one subscriber.
//!
//! Reads go into one scratch buffer per worker thread, not per connection:
//! the chunked decoder keeps only a few integers of state and the SSE parser
//! only carries an incomplete line over to the next read, so an idle
//! connection costs its socket, its task and a few dozen bytes.

use std::sync::Arc;

use anyhow::{Result, bail};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::http::{self, ChunkDecoder};
use crate::stats::{SeqWindow, Shared, Tally};
use crate::subscriber::{self, Feed, Outcome, ReadyOn, SubConfig, Subscription};

/// Longest SSE line accepted (a line must fit in memory before it is parsed).
const MAX_LINE: usize = 1 << 20;

/// The type of an SSE event, from its `event:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum EventKind {
    /// No `event:` field (type `message`).
    #[default]
    Message,
    /// `connected`: the subscription is live.
    Connected,
    /// `reset`.
    Reset,
    /// `shutdown`.
    Shutdown,
    /// `token_expired`.
    TokenExpired,
    /// Anything else.
    Other,
}

impl EventKind {
    fn from_name(name: &[u8]) -> Self {
        match name {
            b"" | b"message" => Self::Message,
            b"connected" => Self::Connected,
            b"reset" => Self::Reset,
            b"shutdown" => Self::Shutdown,
            b"token_expired" => Self::TokenExpired,
            _ => Self::Other,
        }
    }
}

/// What the parser hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SseItem {
    /// A `message` event, with `"t"` (send time, µs) and `"s"` (sequence
    /// number) when its data carried them.
    Message {
        /// Send timestamp.
        t: Option<u64>,
        /// Sequence number.
        s: Option<u64>,
    },
    /// A named event (its data is not kept).
    Event(EventKind),
    /// A comment line (`:` ...), e.g. a heartbeat.
    Comment,
}

/// Incremental SSE parser. Lines end with LF or CRLF (a lone CR as line end,
/// allowed by the spec but used by no server of interest, is not
/// supported). Data lines are not collected: the fields needed (`"t"` and
/// `"s"`) are picked out of each data line as it passes, so the only buffer
/// is for a line split across reads.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    partial: Vec<u8>,
    kind: EventKind,
    has_data: bool,
    t: Option<u64>,
    s: Option<u64>,
}

impl SseParser {
    /// Parses the next bytes of the (de-chunked) stream.
    pub(crate) fn feed(&mut self, mut input: &[u8], on: &mut impl FnMut(SseItem)) -> Result<()> {
        if !self.partial.is_empty() {
            let Some(i) = memchr::memchr(b'\n', input) else {
                return self.keep_partial(input);
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&input[..i]);
            self.line(&line, on);
            line.clear();
            if line.capacity() <= 4096 {
                self.partial = line;
            }
            input = &input[i + 1..];
        }
        while let Some(i) = memchr::memchr(b'\n', input) {
            self.line(&input[..i], on);
            input = &input[i + 1..];
        }
        self.keep_partial(input)
    }

    fn keep_partial(&mut self, rest: &[u8]) -> Result<()> {
        if self.partial.len() + rest.len() > MAX_LINE {
            bail!("SSE line longer than {MAX_LINE} bytes");
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    fn line(&mut self, line: &[u8], on: &mut impl FnMut(SseItem)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(on);
            return;
        }
        if line[0] == b':' {
            on(SseItem::Comment);
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.has_data = true;
                if self.t.is_none() || self.s.is_none() {
                    let (t, s) = extract_ts(value);
                    self.t = self.t.or(t);
                    self.s = self.s.or(s);
                }
            }
            b"event" => self.kind = EventKind::from_name(value),
            _ => {}
        }
    }

    fn dispatch(&mut self, on: &mut impl FnMut(SseItem)) {
        match self.kind {
            // Per the spec a frame without data is not an event (e.g. one
            // that only set `id:` or `retry:`).
            EventKind::Message if self.has_data => on(SseItem::Message {
                t: self.t,
                s: self.s,
            }),
            EventKind::Message => {}
            // Named events are counted even without data.
            kind => on(SseItem::Event(kind)),
        }
        self.kind = EventKind::Message;
        self.has_data = false;
        self.t = None;
        self.s = None;
    }
}

/// Finds `"t":<digits>` and `"s":<digits>` in one data line. The fast path
/// is the exact shape the publisher writes (`{"t":..,"s":..`); anything
/// else falls back to a substring search.
pub(crate) fn extract_ts(data: &[u8]) -> (Option<u64>, Option<u64>) {
    if let Some(rest) = data.strip_prefix(b"{\"t\":") {
        let (t, used) = parse_uint(rest);
        if let Some(after) = rest[used..].strip_prefix(b",\"s\":") {
            let (s, _) = parse_uint(after);
            if t.is_some() && s.is_some() {
                return (t, s);
            }
        }
    }
    (find_uint(data, b"\"t\":"), find_uint(data, b"\"s\":"))
}

fn find_uint(data: &[u8], key: &[u8]) -> Option<u64> {
    let i = memchr::memmem::find(data, key)?;
    let mut rest = &data[i + key.len()..];
    while let Some((b' ', r)) = rest.split_first() {
        rest = r;
    }
    parse_uint(rest).0
}

/// Parses leading ASCII digits; returns the value (None if there are no
/// digits or it overflows) and how many bytes were digits.
fn parse_uint(b: &[u8]) -> (Option<u64>, usize) {
    let mut v: u64 = 0;
    let mut n = 0;
    let mut ok = true;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
        {
            Some(x) => v = x,
            None => ok = false,
        }
        n += 1;
    }
    ((n > 0 && ok).then_some(v), n)
}

/// How the response body is framed.
#[derive(Debug)]
enum Framing {
    Chunked(ChunkDecoder),
    Identity,
}

/// One subscriber's protocol and accounting state.
#[derive(Debug)]
pub(crate) struct SubConn {
    framing: Framing,
    parser: SseParser,
    window: SeqWindow,
    connected: bool,
}

impl SubConn {
    /// A connection whose body is chunked or not.
    pub(crate) fn new(chunked: bool) -> Self {
        Self {
            framing: if chunked {
                Framing::Chunked(ChunkDecoder::default())
            } else {
                Framing::Identity
            },
            parser: SseParser::default(),
            window: SeqWindow::default(),
            connected: false,
        }
    }

    /// Whether the `connected` event has been seen.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }
}

impl Feed for SubConn {
    /// True when the body ended.
    type Step = bool;

    /// Handles bytes read from the socket: de-chunks, parses, classifies
    /// each message, records latencies into `hist` (`recv_unix_us` is the
    /// receive time) and counts into `tally`. Returns true when the body
    /// ended (terminating chunk).
    fn feed(
        &mut self,
        raw: &[u8],
        recv_unix_us: u64,
        tally: &mut Tally,
        record: &mut impl FnMut(u64),
    ) -> Result<Self::Step> {
        let Self {
            framing,
            parser,
            window,
            connected,
        } = self;
        let mut on_item = |item: SseItem| match item {
            SseItem::Message {
                t: Some(t),
                s: Some(s),
            } => subscriber::count_event(window, t, s, recv_unix_us, tally, record),
            SseItem::Message { .. } => tally.unparsed += 1,
            SseItem::Comment => tally.comments += 1,
            SseItem::Event(EventKind::Connected) => {
                if *connected {
                    tally.extra_connected += 1;
                }
                *connected = true;
            }
            SseItem::Event(EventKind::Reset) => tally.reset += 1,
            SseItem::Event(EventKind::Shutdown) => tally.shutdown += 1,
            SseItem::Event(EventKind::TokenExpired) => tally.token_expired += 1,
            SseItem::Event(EventKind::Other | EventKind::Message) => tally.other += 1,
        };
        match framing {
            Framing::Identity => {
                parser.feed(raw, &mut on_item)?;
                Ok(false)
            }
            Framing::Chunked(dec) => {
                let mut result = Ok(());
                dec.feed(raw, &mut |body| {
                    if result.is_ok() {
                        result = parser.feed(body, &mut on_item);
                    }
                })?;
                result?;
                Ok(dec.is_done())
            }
        }
    }
}

/// A running SSE subscription.
pub(crate) struct SseSubscriber {
    stream: TcpStream,
    conn: SubConn,
}

/// Waits for the socket and handles one read. Returns false at end of stream.
async fn read_once(
    stream: &TcpStream,
    conn: &mut SubConn,
    shared: &Shared,
    idx: usize,
) -> Result<bool> {
    Ok(matches!(
        subscriber::read_into(stream, conn, shared, idx).await?,
        Some(false)
    ))
}

impl Subscription for SseSubscriber {
    const FAILED: &'static str = "subscriber stream";

    /// Connects, sends the subscribe request and waits until ready.
    async fn open(cfg: &SubConfig, idx: usize, channel: usize) -> Result<Self> {
        let (stream, head, head_buf, head_len) = subscriber::request(
            cfg,
            idx,
            channel,
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n",
        )
        .await?;
        if head.status != 200 {
            // The error body is small and usually arrived with the head; what
            // has not is left out rather than waited for.
            let mut body = Vec::new();
            let raw = &head_buf[head_len..];
            if head.chunked {
                let _ = ChunkDecoder::default().feed(raw, &mut |d| body.extend_from_slice(d));
            } else {
                body.extend_from_slice(raw);
            }
            bail!(
                "subscribe answered {}: {}",
                head.status,
                http::error_message(&body)
            );
        }
        if let Some(ct) = &head.content_type
            && !ct.to_ascii_lowercase().starts_with("text/event-stream")
        {
            bail!("subscribe answered Content-Type {ct:?}, expected text/event-stream");
        }
        let mut conn = SubConn::new(head.chunked);
        let leftover = &head_buf[head_len..];
        let mut open = true;
        if !leftover.is_empty() {
            let mut tally = Tally::default();
            let recv = cfg.shared.clock.unix_us();
            let mut record = |lat: u64| cfg.shared.histogram(idx).saturating_record(lat);
            open = !conn.feed(leftover, recv, &mut tally, &mut record)?;
            cfg.shared.apply(&tally, cfg.shared.clock.now_us());
        }
        drop(head_buf);
        if cfg.ready_on == ReadyOn::Connected {
            while !conn.is_connected() {
                if !open || !read_once(&stream, &mut conn, &cfg.shared, idx).await? {
                    bail!("stream ended before the connected event");
                }
            }
        }
        Ok(Self { stream, conn })
    }

    async fn read_once(&mut self, shared: &Shared, idx: usize) -> Result<Option<String>> {
        Ok(
            (!read_once(&self.stream, &mut self.conn, shared, idx).await?)
                .then(|| "subscriber stream ended by the hub".to_owned()),
        )
    }
}

/// Runs SSE subscriber `idx` (see [`subscriber::run`]).
pub(crate) async fn run_subscriber(
    cfg: Arc<SubConfig>,
    idx: usize,
    tx: mpsc::UnboundedSender<Outcome>,
) {
    subscriber::run::<SseSubscriber>(cfg, idx, tx).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], cuts: &[usize]) -> Result<Vec<SseItem>> {
        let mut p = SseParser::default();
        let mut items = Vec::new();
        let mut prev = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            p.feed(&input[prev..cut], &mut |i| items.push(i))?;
            prev = cut;
        }
        Ok(items)
    }

    fn msg(t: u64, s: u64) -> SseItem {
        SseItem::Message {
            t: Some(t),
            s: Some(s),
        }
    }

    const STREAM: &[u8] = b"event: connected\ndata: {\"connection_id\":\"c1\",\"user\":\"bench\",\"channels\":[\"bench-0\"]}\n\n\
: heartbeat\n\n\
id: 1\ndata: {\"t\":1000,\"s\":0,\"p\":\"xx\"}\n\n\
id: 2\r\ndata: {\"t\":2000,\r\ndata: \"s\":1}\r\n\r\n\
retry: 500\n\n\
event: reset\ndata: {}\n\n\
data:{\"p\":\"x\",\"s\": 7,\"t\":  3000}\n\n\
data: not json\n\n\
event: token_expired\n\n\
event: something\ndata: x\n\n";

    fn expected_items() -> Vec<SseItem> {
        vec![
            SseItem::Event(EventKind::Connected),
            SseItem::Comment,
            msg(1000, 0),
            msg(2000, 1),
            SseItem::Event(EventKind::Reset),
            msg(3000, 7),
            SseItem::Message { t: None, s: None },
            SseItem::Event(EventKind::TokenExpired),
            SseItem::Event(EventKind::Other),
        ]
    }

    #[test]
    fn sse_whole_stream() -> Result<()> {
        assert_eq!(parse_all(STREAM, &[])?, expected_items());
        Ok(())
    }

    #[test]
    fn sse_every_split_point() -> Result<()> {
        for a in 0..=STREAM.len() {
            assert_eq!(parse_all(STREAM, &[a])?, expected_items(), "cut at {a}");
        }
        // One byte at a time.
        let cuts: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(parse_all(STREAM, &cuts)?, expected_items());
        Ok(())
    }

    #[test]
    fn sse_line_without_colon_and_long_lines() -> Result<()> {
        // `data` alone is a data field with an empty value.
        assert_eq!(
            parse_all(b"data\n\n", &[])?,
            vec![SseItem::Message { t: None, s: None }]
        );
        let mut p = SseParser::default();
        let huge = vec![b'x'; MAX_LINE + 1];
        assert!(p.feed(&huge, &mut |_| {}).is_err());
        Ok(())
    }

    #[test]
    fn extract_fast_and_slow_paths() {
        assert_eq!(
            extract_ts(b"{\"t\":1712345678901234,\"s\":42,\"p\":\"xxx\"}"),
            (Some(1712345678901234), Some(42))
        );
        assert_eq!(extract_ts(b"{\"s\":5,\"t\":6}"), (Some(6), Some(5)));
        assert_eq!(extract_ts(b"{\"t\":,\"s\":1}"), (None, Some(1)));
        assert_eq!(
            extract_ts(b"{\"t\":99999999999999999999999,\"s\":1}"),
            (None, Some(1))
        );
        assert_eq!(extract_ts(b"nothing"), (None, None));
    }

    /// Wraps `body` in chunks of the given sizes (the last chunk takes the
    /// rest), then the terminating chunk.
    fn chunk(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        for &n in sizes {
            let n = n.min(rest.len());
            if n == 0 {
                continue;
            }
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            out.extend_from_slice(format!("{:X}\r\n", rest.len()).as_bytes());
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    fn run_conn(wire: &[u8], cuts: &[usize], recv: u64) -> Result<(Tally, Vec<u64>, bool, bool)> {
        let mut conn = SubConn::new(true);
        let mut tally = Tally::default();
        let mut lats = Vec::new();
        let mut ended = false;
        let mut prev = 0;
        for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
            ended = conn.feed(&wire[prev..cut], recv, &mut tally, &mut |l| lats.push(l))?;
            prev = cut;
        }
        Ok((tally, lats, ended, conn.is_connected()))
    }

    #[test]
    fn chunked_sse_with_chunk_boundaries_anywhere() -> Result<()> {
        let want_tally = Tally {
            delivered: 3,
            unparsed: 1,
            comments: 1,
            reset: 1,
            token_expired: 1,
            other: 1,
            ..Tally::default()
        };
        // Chunk sizes that put chunk boundaries in every position of the
        // body, combined with read boundaries at every position of the wire.
        for first in [1, 2, 7, 13, 50, 1000] {
            let wire = chunk(STREAM, &[first, 3, 11]);
            for cut in 0..=wire.len() {
                let (tally, lats, ended, connected) = run_conn(&wire, &[cut], 5000)?;
                assert_eq!(tally, want_tally, "first {first} cut {cut}");
                assert_eq!(lats, vec![4000, 3000, 2000]);
                assert!(ended && connected);
            }
        }
        Ok(())
    }

    #[test]
    fn accounting_duplicates_gaps_and_latency() -> Result<()> {
        let mut body = Vec::new();
        body.extend_from_slice(b"event: connected\ndata: {}\n\n");
        for s in [0u64, 1, 1, 3, 2, 2, 4, 0] {
            body.extend_from_slice(
                format!("data: {{\"t\":{},\"s\":{s},\"p\":\"\"}}\n\n", 100 + s).as_bytes(),
            );
        }
        body.extend_from_slice(b"event: connected\ndata: {}\n\n");
        let wire = chunk(&body, &[10, 10, 10]);
        let (tally, lats, ended, connected) = run_conn(&wire, &[], 1000)?;
        assert_eq!(tally.delivered, 5);
        assert_eq!(tally.duplicates, 3);
        assert_eq!(tally.reordered, 1);
        assert_eq!(tally.extra_connected, 1);
        assert_eq!(lats, vec![900, 899, 897, 898, 896]);
        assert!(ended && connected);
        // A timestamp from the future is clamped to zero latency.
        let (_, lats, _, _) = run_conn(&chunk(b"data: {\"t\":5000,\"s\":0}\n\n", &[]), &[], 1000)?;
        assert_eq!(lats, vec![0]);
        Ok(())
    }

    #[test]
    fn identity_framing() -> Result<()> {
        let mut conn = SubConn::new(false);
        let mut tally = Tally::default();
        let ended = conn.feed(
            b"data: {\"t\":1,\"s\":0}\n\n0\r\n\r\n",
            3,
            &mut tally,
            &mut |_| {},
        )?;
        assert!(!ended);
        assert_eq!(tally.delivered, 1);
        Ok(())
    }
}
