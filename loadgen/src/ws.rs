//! The WebSocket subscriber (`--transport ws`): the upgrade handshake, an
//! incremental frame parser, the per-connection accounting of Herald's JSON
//! frames, and the task that runs one subscriber.
//!
//! It measures the same things as the SSE subscriber: a frame
//! `{"type":"event",...,"data":{"t":..,"s":..},...}` is one delivery, whose
//! `"t"` gives the latency and `"s"` the sequence number for loss and
//! duplicate accounting. Pings are answered with pongs so the hub's ping
//! timeout never closes a subscriber that is only busy. Reads go into the
//! same kind of per-thread scratch buffer as SSE, so an idle connection
//! costs its socket, its task and a few dozen bytes.

use std::sync::Arc;

use anyhow::{Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::http;
use crate::sse::extract_ts;
use crate::stats::{SeqWindow, Shared, Tally};
use crate::subscriber::{self, Feed, Outcome, ReadyOn, SubConfig, Subscription};

/// How subscribers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// Server-Sent Events (`GET /events`).
    Sse,
    /// WebSocket (`GET /ws`).
    Ws,
}

impl Transport {
    /// The name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Ws => "ws",
        }
    }

    /// The subscribe path used when none is given.
    pub(crate) fn default_path(self) -> &'static str {
        match self {
            Self::Sse => "/events?channel={channel}",
            Self::Ws => "/ws?channel={channel}",
        }
    }
}

/// Largest frame or message accepted from the hub.
const MAX_MESSAGE: usize = 16 << 20;

/// A complete message or control frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WsItem<'a> {
    /// A text message (reassembled when it came in fragments).
    Text(&'a [u8]),
    /// A binary message.
    Binary,
    /// A ping with its payload, to be answered with a pong.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close frame with its code, if any.
    Close(Option<u16>),
}

/// Incremental parser of server-to-client frames (unmasked, RFC 6455). Only
/// a frame split across reads is buffered, and fragments of a message until
/// its last one.
#[derive(Debug, Default)]
pub(crate) struct WsParser {
    partial: Vec<u8>,
    /// Fragments of a message whose final frame has not arrived.
    message: Option<(u8, Vec<u8>)>,
}

/// One frame's header: FIN, opcode, header length and payload length.
fn header(buf: &[u8]) -> Result<Option<(bool, u8, usize, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        bail!("WebSocket frame with reserved bits set (no extension was negotiated)");
    }
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 != 0 {
        bail!("masked WebSocket frame from the server");
    }
    let (len, at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > MAX_MESSAGE as u64 {
        bail!("WebSocket frame of {len} bytes (limit {MAX_MESSAGE})");
    }
    Ok(Some((fin, opcode, at, len as usize)))
}

impl WsParser {
    /// Parses the next bytes from the socket, calling `on` for each complete
    /// message or control frame.
    pub(crate) fn feed(&mut self, input: &[u8], on: &mut impl FnMut(WsItem<'_>)) -> Result<()> {
        if self.partial.is_empty() {
            let used = self.frames(input, on)?;
            self.partial.extend_from_slice(&input[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(input);
            let used = self.frames(&buf, on)?;
            buf.drain(..used);
            if buf.capacity() > 4096 && buf.len() < 1024 {
                buf.shrink_to(1024);
            }
            self.partial = buf;
        }
        Ok(())
    }

    /// Handles the complete frames at the start of `buf`; returns how many
    /// bytes they took.
    fn frames(&mut self, buf: &[u8], on: &mut impl FnMut(WsItem<'_>)) -> Result<usize> {
        let mut at = 0;
        while let Some((fin, opcode, head, len)) = header(&buf[at..])? {
            if buf.len() - at < head + len {
                break;
            }
            let payload = &buf[at + head..at + head + len];
            at += head + len;
            match opcode {
                0x0 => {
                    let Some((kind, message)) = &mut self.message else {
                        bail!("WebSocket continuation frame without a message");
                    };
                    if message.len() + payload.len() > MAX_MESSAGE {
                        bail!("WebSocket message over {MAX_MESSAGE} bytes");
                    }
                    message.extend_from_slice(payload);
                    if fin {
                        let kind = *kind;
                        if let Some((_, message)) = self.message.take() {
                            on(if kind == 0x1 {
                                WsItem::Text(&message)
                            } else {
                                WsItem::Binary
                            });
                        }
                    }
                }
                0x1 | 0x2 if !fin => {
                    if self.message.is_some() {
                        bail!("WebSocket message started inside another");
                    }
                    self.message = Some((opcode, payload.to_vec()));
                }
                0x1 => on(WsItem::Text(payload)),
                0x2 => on(WsItem::Binary),
                0x8 => on(WsItem::Close(
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
                )),
                0x9 => on(WsItem::Ping(payload)),
                0xa => on(WsItem::Pong),
                other => bail!("WebSocket frame with unknown opcode {other}"),
            }
        }
        Ok(at)
    }
}

/// A client-to-server frame (always masked), e.g. a pong or a close.
pub(crate) fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The value of `"type"` in a Herald frame.
fn frame_type(text: &[u8]) -> &[u8] {
    let Some(i) = memchr::memmem::find(text, b"\"type\":\"") else {
        return b"";
    };
    let rest = &text[i + 8..];
    let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
    &rest[..end]
}

/// One subscriber's protocol and accounting state.
#[derive(Debug, Default)]
pub(crate) struct WsConn {
    parser: WsParser,
    window: SeqWindow,
    connected: bool,
    /// Pong payloads owed to the server.
    pongs: Vec<Vec<u8>>,
}

impl WsConn {
    /// Whether the `connected` frame has been seen.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Takes the pongs to send.
    fn take_pongs(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.pongs)
    }
}

impl Feed for WsConn {
    /// A close frame's code, when one arrived.
    type Step = Option<Option<u16>>;

    /// Handles bytes read from the socket: parses frames, classifies Herald's
    /// JSON frames, records latencies (`recv_unix_us` is the receive time) and
    /// counts into `tally`. Returns the close code when the server closed
    /// (`Some(None)` for a close frame without one).
    fn feed(
        &mut self,
        raw: &[u8],
        recv_unix_us: u64,
        tally: &mut Tally,
        record: &mut impl FnMut(u64),
    ) -> Result<Self::Step> {
        let Self {
            parser,
            window,
            connected,
            pongs,
        } = self;
        let mut closed = None;
        parser.feed(raw, &mut |item| match item {
            WsItem::Text(text) => match frame_type(text) {
                b"event" => {
                    let data = memchr::memmem::find(text, b"\"data\":")
                        .map_or(&b""[..], |i| &text[i + 7..]);
                    match extract_ts(data) {
                        (Some(t), Some(s)) => {
                            subscriber::count_event(window, t, s, recv_unix_us, tally, record)
                        }
                        _ => tally.unparsed += 1,
                    }
                }
                b"connected" => {
                    if *connected {
                        tally.extra_connected += 1;
                    }
                    *connected = true;
                }
                b"reset" => tally.reset += 1,
                b"shutdown" => tally.shutdown += 1,
                b"token_expired" => tally.token_expired += 1,
                _ => tally.other += 1,
            },
            WsItem::Ping(payload) => pongs.push(payload.to_vec()),
            WsItem::Binary => tally.unparsed += 1,
            WsItem::Pong => {}
            WsItem::Close(code) => closed = Some(code),
        })?;
        Ok(closed)
    }
}

/// How one read ended.
enum Read {
    Open,
    /// End of stream, or a close frame (with its code).
    Closed(Option<u16>),
}

/// Waits for the socket, handles one read and answers pings. Returns whether
/// the connection is still open.
async fn read_once(
    stream: &mut TcpStream,
    conn: &mut WsConn,
    shared: &Shared,
    idx: usize,
) -> Result<Read> {
    let read = match subscriber::read_into(stream, conn, shared, idx).await? {
        None => Read::Closed(None),
        Some(Some(code)) => Read::Closed(code),
        Some(None) => Read::Open,
    };
    for payload in conn.take_pongs() {
        stream
            .write_all(&client_frame(0xa, &payload, mask(idx)))
            .await?;
    }
    Ok(read)
}

/// A masking key for connection `idx` (any value is valid; it need not be
/// secret for a load generator on loopback).
fn mask(idx: usize) -> [u8; 4] {
    ((idx as u32).wrapping_mul(0x9e37_79b9) | 1).to_be_bytes()
}

/// A running WebSocket subscription.
pub(crate) struct WsSubscriber {
    stream: TcpStream,
    conn: WsConn,
}

impl Subscription for WsSubscriber {
    const FAILED: &'static str = "WebSocket";

    /// Connects, upgrades and waits until ready.
    async fn open(cfg: &SubConfig, idx: usize, channel: usize) -> Result<Self> {
        let (mut stream, head, head_buf, head_len) = subscriber::request(
            cfg,
            idx,
            channel,
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        )
        .await?;
        if head.status != 101 {
            bail!(
                "upgrade answered {}: {}",
                head.status,
                http::error_message(&head_buf[head_len..])
            );
        }
        let mut conn = WsConn::default();
        let leftover = &head_buf[head_len..];
        if !leftover.is_empty() {
            let mut tally = Tally::default();
            let recv = cfg.shared.clock.unix_us();
            let mut record = |lat: u64| cfg.shared.histogram(idx).saturating_record(lat);
            if let Some(code) = conn.feed(leftover, recv, &mut tally, &mut record)? {
                bail!("closed during the handshake (code {code:?})");
            }
            cfg.shared.apply(&tally, cfg.shared.clock.now_us());
        }
        drop(head_buf);
        if cfg.ready_on == ReadyOn::Connected {
            while !conn.is_connected() {
                if let Read::Closed(code) =
                    read_once(&mut stream, &mut conn, &cfg.shared, idx).await?
                {
                    bail!("closed before the connected frame (code {code:?})");
                }
            }
        }
        Ok(Self { stream, conn })
    }

    async fn read_once(&mut self, shared: &Shared, idx: usize) -> Result<Option<String>> {
        Ok(
            match read_once(&mut self.stream, &mut self.conn, shared, idx).await? {
                Read::Open => None,
                Read::Closed(code) => Some(format!("WebSocket closed by the hub (code {code:?})")),
            },
        )
    }
}

/// Runs WebSocket subscriber `idx` (see [`subscriber::run`]).
pub(crate) async fn run_subscriber(
    cfg: Arc<SubConfig>,
    idx: usize,
    tx: mpsc::UnboundedSender<Outcome>,
) {
    subscriber::run::<WsSubscriber>(cfg, idx, tx).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked).
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// An event frame's text as the hub writes it.
    fn event_text(t: u64, s: u64) -> String {
        format!(
            "{{\"type\":\"event\",\"channel\":\"bench-0\",\"event\":null,\"data\":{{\"t\":{t},\"s\":{s},\"p\":\"xx\"}},\"time\":\"2026-11-30T05:00:00.000Z\",\"id\":\"e-{s}\"}}"
        )
    }

    fn event(t: u64, s: u64) -> Vec<u8> {
        frame(true, 1, event_text(t, s).as_bytes())
    }

    /// A stream with every kind of frame: connected, events (one fragmented,
    /// one with a 16-bit length), a ping, a reset, an unknown frame and a
    /// close with code 4000.
    fn stream() -> Vec<u8> {
        let mut wire = Vec::new();
        wire.extend(frame(
            true,
            1,
            br#"{"channels":["bench-0"],"connection_id":"c-1","type":"connected","user":"bench"}"#,
        ));
        wire.extend(event(1000, 0));
        wire.extend(frame(true, 9, b"hi"));
        let big = format!(
            "{{\"type\":\"event\",\"data\":{{\"t\":2000,\"s\":1,\"p\":\"{}\"}}}}",
            "x".repeat(300)
        );
        wire.extend(frame(true, 1, big.as_bytes()));
        let split = event_text(3000, 2);
        let (a, b) = split.split_at(20);
        wire.extend(frame(false, 1, a.as_bytes()));
        wire.extend(frame(true, 9, b""));
        wire.extend(frame(true, 0, b.as_bytes()));
        wire.extend(frame(true, 1, br#"{"type":"reset","reason":"expired"}"#));
        wire.extend(frame(true, 1, br#"{"type":"ack","op":"subscribe"}"#));
        wire.extend(frame(true, 1, br#"{"type":"event","data":"no stamps"}"#));
        wire.extend(event(2500, 1));
        wire.extend(frame(true, 8, &[0x0f, 0xa0, b'b', b'y', b'e']));
        wire
    }

    /// What a connection made of a stream: counts, latencies, pongs owed, the
    /// close code and whether it saw `connected`.
    type Outcome = (Tally, Vec<u64>, Vec<Vec<u8>>, Option<Option<u16>>, bool);

    fn run(wire: &[u8], cuts: &[usize], recv: u64) -> Result<Outcome> {
        let mut conn = WsConn::default();
        let mut tally = Tally::default();
        let mut lats = Vec::new();
        let mut closed = None;
        let mut pongs = Vec::new();
        let mut prev = 0;
        for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
            if let Some(code) =
                conn.feed(&wire[prev..cut], recv, &mut tally, &mut |l| lats.push(l))?
            {
                closed = Some(code);
            }
            pongs.extend(conn.take_pongs());
            prev = cut;
        }
        Ok((tally, lats, pongs, closed, conn.is_connected()))
    }

    #[test]
    fn ws_frames_split_at_every_point() -> Result<()> {
        let wire = stream();
        let want = Tally {
            delivered: 3,
            duplicates: 1,
            unparsed: 1,
            reset: 1,
            other: 1,
            ..Tally::default()
        };
        for cut in 0..=wire.len() {
            let (tally, lats, pongs, closed, connected) = run(&wire, &[cut], 5000)?;
            assert_eq!(tally, want, "cut at {cut}");
            assert_eq!(lats, vec![4000, 3000, 2000], "cut at {cut}");
            assert_eq!(pongs, vec![b"hi".to_vec(), Vec::new()]);
            assert_eq!(closed, Some(Some(4000)));
            assert!(connected);
        }
        let cuts: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(run(&wire, &cuts, 5000)?.0, want, "one byte at a time");
        Ok(())
    }

    #[test]
    fn ws_bad_frames_are_errors() {
        let mut p = WsParser::default();
        // Masked, as a server must not send.
        assert!(p.feed(&[0x81, 0x81, 1, 2, 3, 4, 5], &mut |_| {}).is_err());
        let mut p = WsParser::default();
        assert!(p.feed(&[0x83, 0x00], &mut |_| {}).is_err(), "opcode 3");
        let mut p = WsParser::default();
        assert!(
            p.feed(&[0x80, 0x00], &mut |_| {}).is_err(),
            "lone continuation"
        );
        let mut p = WsParser::default();
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(u64::MAX).to_be_bytes());
        assert!(p.feed(&huge, &mut |_| {}).is_err());
    }

    #[test]
    fn ws_client_frames_are_masked() {
        let mask = [1, 2, 3, 4];
        let f = client_frame(0xa, b"abcde", mask);
        assert_eq!(&f[..6], &[0x8a, 0x85, 1, 2, 3, 4]);
        let unmasked: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(unmasked, b"abcde");
        let long = client_frame(0x1, &[0u8; 300], mask);
        assert_eq!(&long[..4], &[0x81, 0x80 | 126, 1, 44]);
        assert_eq!(long.len(), 4 + 4 + 300);
    }

    #[test]
    fn frame_types() {
        assert_eq!(frame_type(br#"{"type":"event","data":1}"#), b"event");
        assert_eq!(frame_type(br#"{"a":1,"type":"connected"}"#), b"connected");
        assert_eq!(frame_type(br#"{"a":1}"#), b"");
    }
}
