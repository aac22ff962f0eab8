//! Just enough HTTP/1.1 client for a load generator: response-head parsing,
//! a streaming chunked-transfer decoder, an in-order (pipelining) response
//! reader, socket setup with an optional source address, and a one-shot GET.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::target::Target;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// The parts of a response head this tool cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    /// Status code.
    pub(crate) status: u16,
    /// `Transfer-Encoding: chunked`.
    pub(crate) chunked: bool,
    /// `Content-Length`, when present.
    pub(crate) content_length: Option<u64>,
    /// `Content-Type`, when present.
    pub(crate) content_type: Option<String>,
    /// `Retry-After` in seconds, when present and numeric.
    pub(crate) retry_after_secs: Option<u64>,
    /// The server will close the connection after this response.
    pub(crate) close: bool,
}

impl ResponseHead {
    /// Whether this response carries no body whatever the headers say.
    fn bodiless(&self) -> bool {
        (100..200).contains(&self.status) || self.status == 204 || self.status == 304
    }
}

/// Parses a response head at the start of `buf`. Returns `None` while the
/// terminating blank line has not arrived yet, else the head and its length.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            bail!("response head larger than {MAX_HEAD} bytes");
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {:?}", truncate(status_line, 80));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {:?}", truncate(status_line, 80)))?;
    let mut head = ResponseHead {
        status,
        close: version == "HTTP/1.0",
        ..ResponseHead::default()
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.parse().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after_secs = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                head.close = true;
            } else if v.contains("keep-alive") {
                head.close = false;
            }
        }
    }
    Ok(Some((head, end + 4)))
}

/// Shortens `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `ext` once a `;extension` started.
    Size { size: u64, digits: u8, ext: bool },
    /// Saw CR at the end of the size line.
    SizeLf { size: u64, digits: u8 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Expecting the CR (or bare LF) after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Saw CR of the final blank line.
    TrailerLf,
    /// The terminating chunk and trailers have been read.
    Done,
}

/// Streaming decoder for `Transfer-Encoding: chunked`. It keeps no buffer:
/// the state is a few integers, so a chunk boundary (or a size line) may be
/// split across reads anywhere.
#[derive(Debug, Clone)]
pub(crate) struct ChunkDecoder {
    state: ChunkState,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self {
            state: ChunkState::Size {
                size: 0,
                digits: 0,
                ext: false,
            },
        }
    }
}

impl ChunkDecoder {
    /// Whether the terminating zero-size chunk (and trailers) was seen.
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, handing each run of body bytes to `out` (as
    /// sub-slices of `input`, no copies). Returns how many input bytes were
    /// consumed: all of them unless the body ended, in which case what
    /// follows belongs to the next response.
    pub(crate) fn feed<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut impl FnMut(&'a [u8]),
    ) -> Result<usize> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Data { remaining } => {
                    let avail = input.len() - i;
                    let n = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                    out(&input[i..i + n]);
                    i += n;
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { remaining: left }
                    };
                    continue;
                }
                ChunkState::Done => return Ok(i),
                _ => {}
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                ChunkState::Size { size, digits, ext } => match b {
                    b'\r' => ChunkState::SizeLf { size, digits },
                    b'\n' => Self::end_size_line(size, digits)?,
                    _ if ext => ChunkState::Size { size, digits, ext },
                    b';' | b' ' | b'\t' => ChunkState::Size {
                        size,
                        digits,
                        ext: true,
                    },
                    _ => {
                        let d = hex_value(b)
                            .with_context(|| format!("bad byte {b:#04x} in chunk size"))?;
                        if digits >= 15 {
                            bail!("chunk size too large");
                        }
                        ChunkState::Size {
                            size: size * 16 + u64::from(d),
                            digits: digits + 1,
                            ext,
                        }
                    }
                },
                ChunkState::SizeLf { size, digits } => {
                    if b != b'\n' {
                        bail!("expected LF after chunk size");
                    }
                    Self::end_size_line(size, digits)?
                }
                ChunkState::DataCr => match b {
                    b'\r' => ChunkState::DataLf,
                    b'\n' => Self::new_size(),
                    _ => bail!("expected CRLF after chunk data"),
                },
                ChunkState::DataLf => match b {
                    b'\n' => Self::new_size(),
                    _ => bail!("expected LF after chunk data"),
                },
                ChunkState::TrailerStart => match b {
                    b'\r' => ChunkState::TrailerLf,
                    b'\n' => ChunkState::Done,
                    _ => ChunkState::Trailer,
                },
                ChunkState::Trailer => match b {
                    b'\n' => ChunkState::TrailerStart,
                    _ => ChunkState::Trailer,
                },
                ChunkState::TrailerLf => match b {
                    b'\n' => ChunkState::Done,
                    _ => bail!("expected LF ending the trailers"),
                },
                ChunkState::Data { .. } | ChunkState::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }

    fn new_size() -> ChunkState {
        ChunkState::Size {
            size: 0,
            digits: 0,
            ext: false,
        }
    }

    fn end_size_line(size: u64, digits: u8) -> Result<ChunkState> {
        if digits == 0 {
            bail!("empty chunk size line");
        }
        Ok(if size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data { remaining: size }
        })
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Turns an error body into a short message: `code: message` from Herald's
/// `{"error":{...}}`, else the start of the text.
pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let code = v.pointer("/error/code").and_then(|c| c.as_str());
        let msg = v.pointer("/error/message").and_then(|c| c.as_str());
        if let (Some(code), Some(msg)) = (code, msg) {
            return format!("{code}: {msg}");
        }
    }
    let text = String::from_utf8_lossy(body);
    truncate(text.trim(), 200).to_string()
}

/// A complete response: head plus (possibly truncated) body.
#[derive(Debug)]
pub(crate) struct Response {
    /// The head.
    pub(crate) head: ResponseHead,
    /// The body, at most the `max_body` asked for; the rest is discarded.
    pub(crate) body: Vec<u8>,
}

/// Reads responses one after another from a connection, keeping bytes that
/// belong to the next response, as pipelining requires.
pub(crate) struct ResponseReader<R> {
    rd: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> ResponseReader<R> {
    /// Wraps the read side of a connection.
    pub(crate) fn new(rd: R) -> Self {
        Self {
            rd,
            buf: vec![0; 8192],
            start: 0,
            end: 0,
        }
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                if self.buf.len() >= MAX_HEAD * 4 {
                    bail!("response head too large");
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = self.rd.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// Reads the next complete response, keeping at most `max_body` bytes of
    /// its body.
    pub(crate) async fn read_response(&mut self, max_body: usize) -> Result<Response> {
        let head = loop {
            if let Some((head, len)) = parse_head(&self.buf[self.start..self.end])? {
                self.start += len;
                if (100..200).contains(&head.status) {
                    continue;
                }
                break head;
            }
            if !self.fill().await? {
                bail!("connection closed before a complete response head");
            }
        };
        let mut body = Vec::new();
        let keep = |body: &mut Vec<u8>, data: &[u8]| {
            let room = max_body.saturating_sub(body.len());
            body.extend_from_slice(&data[..data.len().min(room)]);
        };
        if head.bodiless() {
        } else if head.chunked {
            let mut dec = ChunkDecoder::default();
            loop {
                let used =
                    dec.feed(&self.buf[self.start..self.end], &mut |d| keep(&mut body, d))?;
                self.start += used;
                if dec.is_done() {
                    break;
                }
                if !self.fill().await? {
                    bail!("connection closed inside a chunked body");
                }
            }
        } else if let Some(len) = head.content_length {
            let mut left = len;
            loop {
                let avail = (self.end - self.start) as u64;
                let n = usize::try_from(avail.min(left))?;
                keep(&mut body, &self.buf[self.start..self.start + n]);
                self.start += n;
                left -= n as u64;
                if left == 0 {
                    break;
                }
                if !self.fill().await? {
                    bail!("connection closed inside a response body");
                }
            }
        } else {
            // No length: the body runs to the end of the connection.
            loop {
                keep(&mut body, &self.buf[self.start..self.end]);
                self.start = self.end;
                if !self.fill().await? {
                    break;
                }
            }
            return Ok(Response {
                head: ResponseHead {
                    close: true,
                    ..head
                },
                body,
            });
        }
        Ok(Response { head, body })
    }
}

/// Opens a TCP connection to `addr`, first binding to `source` (port chosen
/// by the kernel) when given, with Nagle disabled.
pub(crate) async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding to source address {ip}"))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A one-shot `GET` (own connection, `Connection: close`), returning status
/// and body.
pub(crate) async fn get(
    target: &Target,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let work = async {
        let mut stream = connect(target.addr, None).await?;
        let mut req = format!(
            "GET {}{} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n",
            target.base_path, path, target.host
        );
        if let Some(token) = token {
            req.push_str("Authorization: Bearer ");
            req.push_str(token);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut reader = ResponseReader::new(stream);
        let resp = reader.read_response(1 << 20).await?;
        Ok::<_, anyhow::Error>((resp.head.status, resp.body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("GET {path} on {} timed out", target.url))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize, bool)> {
        let mut dec = ChunkDecoder::default();
        let mut body = Vec::new();
        let mut consumed = 0;
        let mut prev = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let piece = &input[prev..cut];
            consumed += dec.feed(piece, &mut |d| body.extend_from_slice(d))?;
            prev = cut;
        }
        Ok((body, consumed, dec.is_done()))
    }

    #[test]
    fn chunked_every_split_point() -> Result<()> {
        let wire = b"4\r\nWiki\r\n5;name=val\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let want = b"Wikipedia in\r\n\r\nchunks.";
        let body_end = wire.len() - 4;
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let (body, consumed, done) = decode_in_pieces(wire, &[a, b])?;
                assert_eq!(body, want, "cuts {a} {b}");
                assert!(done);
                // Everything up to the end of the trailers, nothing after.
                assert_eq!(consumed, body_end, "cuts {a} {b}");
            }
        }
        Ok(())
    }

    #[test]
    fn chunked_bare_lf_and_bad_input() -> Result<()> {
        let (body, _, done) = decode_in_pieces(b"3\nabc\n0\n\n", &[])?;
        assert_eq!(body, b"abc");
        assert!(done);
        let (body, _, done) = decode_in_pieces(b"a\r\n0123456789\r\n", &[])?;
        assert_eq!(body, b"0123456789");
        assert!(!done);
        assert!(decode_in_pieces(b"zz\r\n", &[]).is_err());
        assert!(decode_in_pieces(b"\r\n", &[]).is_err());
        assert!(decode_in_pieces(b"3\r\nabcX", &[]).is_err());
        assert!(decode_in_pieces(b"ffffffffffffffff\r\n", &[]).is_err());
        Ok(())
    }

    #[test]
    fn head_parsing() -> Result<()> {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\ncontent-type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nrest";
        let (head, len) = parse_head(raw)?.context("complete")?;
        assert_eq!(head.status, 503);
        assert_eq!(head.retry_after_secs, Some(2));
        assert!(head.chunked);
        assert!(!head.close);
        assert_eq!(head.content_type.as_deref(), Some("application/json"));
        assert_eq!(&raw[len..], b"rest");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nA: b\r\n")?.is_none());
        assert!(parse_head(b"SSH-2.0 x\r\n\r\n").is_err());
        let (head, _) =
            parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n")?.context("complete")?;
        assert!(head.close);
        assert_eq!(head.content_length, Some(3));
        Ok(())
    }

    #[tokio::test]
    async fn pipelined_responses() -> Result<()> {
        let wire: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"id\":\"1\"}\
HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nRetry-After: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 200 OK\r\nConnection: close\r\n\r\ntail";
        let mut r = ResponseReader::new(wire);
        let a = r.read_response(100).await?;
        assert_eq!(
            (a.head.status, a.body.as_slice()),
            (200, &b"{\"id\":\"1\"}"[..])
        );
        let b = r.read_response(3).await?;
        assert_eq!((b.head.status, b.body.as_slice()), (503, &b"hel"[..]));
        assert_eq!(b.head.retry_after_secs, Some(1));
        let c = r.read_response(100).await?;
        assert_eq!(c.head.status, 204);
        let d = r.read_response(100).await?;
        assert_eq!(d.body, b"tail");
        assert!(d.head.close);
        assert!(r.read_response(100).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn byte_at_a_time_reader() -> Result<()> {
        // A reader that yields one byte per read exercises every refill path.
        struct OneByte<'a>(&'a [u8]);
        impl AsyncRead for OneByte<'_> {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if let Some((&b, rest)) = self.0.split_first() {
                    buf.put_slice(&[b]);
                    self.0 = rest;
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        let mut r = ResponseReader::new(OneByte(wire));
        assert_eq!(r.read_response(100).await?.body, b"abc");
        let b = r.read_response(100).await?;
        assert_eq!((b.head.status, b.body.as_slice()), (201, &b"ok"[..]));
        Ok(())
    }
}
