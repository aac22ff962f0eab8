//! `GET /events` served straight on the TCP connection, without the HTTP
//! framework: a streaming connection lives for hours, and this way it holds no
//! framework buffers (two of 8 KiB each) or task state of its own, only its
//! session, its stream state and a few hundred bytes. More than half the memory an
//! idle connection would cost otherwise.
//!
//! Only a plain request is served here ([`super::head::Checked::direct`]); everything
//! else goes to the router. Both paths send the same headers ([`sse::RESPONSE_HEADERS`]) and
//! close a reader that stopped reading the same way ([`sse::close_when_stalled`]).

use std::io::IoSlice;
use std::sync::Arc;

use axum::http::{HeaderMap, Uri};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::http::sse::{self, SlowConsumer, SseStream};
use crate::http::{ApiError, ConnectionInfo, Services};

/// Serves the stream request `uri` with `headers` on `socket`, starting the
/// response with `response_head` (from [`response_head`]). A refusal gets the
/// usual error response, and the connection is closed after it; so is the
/// connection when the stream ends.
///
/// While a write is blocked the stream still watches for the connection's queue
/// overflowing and for `info.close`, so a reader that stopped is closed.
///
/// The future is what an idle stream costs for its whole life, so it holds only
/// what the stream needs: opening (admission, resume) runs boxed and is gone once
/// the stream is open, the request's head and the error path are not kept, and
/// the caller runs it as a task of its own rather than inside the connection's.
pub(super) fn serve(
    app: Services,
    headers: HeaderMap,
    uri: Uri,
    info: ConnectionInfo,
    response_head: Bytes,
    cors_headers: Arc<HeaderMap>,
    mut socket: TcpStream,
) -> impl Future<Output = ()> + Send + 'static {
    let close = info.close.clone();
    let opening = Box::pin(async move { SseStream::open(&app, &headers, &uri, Some(&info)).await });
    async move {
        // Taken out of the match first: a value matched on is kept for as long as
        // the match, which would hold a second copy of the stream for its life.
        let stream = match opening.await {
            Ok(stream) => stream,
            Err(error) => {
                let _ = Box::pin(write_error(&mut socket, error, &cors_headers)).await;
                return;
            }
        };
        run(stream, socket, close, response_head).await;
    }
}

/// Writes `stream` to `socket` until it ends, the client leaves or `close` fires.
///
/// Not an `async fn`: its arguments would be kept twice in the future, once as
/// given and once as the body's own; the block below holds them once.
#[allow(clippy::manual_async_fn)]
fn run(
    mut stream: SseStream,
    mut socket: TcpStream,
    close: CancellationToken,
    mut head: Bytes,
) -> impl Future<Output = ()> + Send {
    async move {
        let signal = stream.overflow_signal();
        let mut probe = [0u8; 1];
        loop {
            let chunk = tokio::select! {
                biased;
                _ = close.cancelled() => return,
                readable = socket.readable() => {
                    // Nothing may follow a stream's request (no answer could ever
                    // follow it): EOF is the client leaving, and data closes the
                    // stream, as on the router's path.
                    if readable.is_err() {
                        return;
                    }
                    match socket.try_read(&mut probe) {
                        Ok(_) => return,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                    continue;
                }
                chunk = stream.next_chunk() => chunk,
            };
            let (chunk, last) = match chunk {
                Some(Ok(chunk)) => (chunk, false),
                // A slow consumer: close at once.
                Some(Err(SlowConsumer)) => return,
                None => (Bytes::new(), true),
            };
            // The chunk is the shared frame itself: it is written with its chunked
            // framing around it, not copied.
            let mut size = [0u8; 20];
            let size = chunk_size_line(&mut size, chunk.len());
            let mut parts = [
                IoSlice::new(&head),
                IoSlice::new(if last { b"" } else { size }),
                IoSlice::new(&chunk),
                IoSlice::new(if last { b"0\r\n\r\n" } else { b"\r\n" }),
            ];
            let written = tokio::select! {
                biased;
                _ = close.cancelled() => return,
                _ = sse::close_when_stalled(signal.clone(), close.clone()) => {
                    stream.stalled();
                    return;
                }
                written = write_all_vectored(&mut socket, &mut parts) => written,
            };
            if written.is_err() || last {
                return;
            }
            head = Bytes::new();
        }
    }
}

/// The response head of a directly served stream: status, [`sse::RESPONSE_HEADERS`],
/// chunked encoding, and the CORS policy's `cors_headers` (see
/// [`crate::http::cors_headers_without_origin`]).
pub(super) fn response_head(cors_headers: &HeaderMap) -> Bytes {
    let mut out = BytesMut::with_capacity(160 + cors_headers.len() * 48);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in sse::RESPONSE_HEADERS {
        put_header(&mut out, name.as_bytes(), value.as_bytes());
    }
    put_header(&mut out, b"transfer-encoding", b"chunked");
    put_headers(&mut out, cors_headers);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `headers` as HTTP/1.1 header lines.
fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// The size line of a chunk of `len` bytes (`1a2\r\n`), written into `buf`.
fn chunk_size_line(buf: &mut [u8; 20], len: usize) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{len:x}\r\n");
    let end = cursor.position() as usize;
    &buf[..end]
}

/// Writes every byte of `parts` with vectored writes.
async fn write_all_vectored(
    socket: &mut TcpStream,
    mut parts: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let n = socket.write_vectored(parts).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

/// Writes an error response (status, headers and JSON body, as the router sends
/// it, with the CORS policy's `cors_headers`) and asks the client to close the
/// connection.
pub(super) async fn write_error(
    socket: &mut TcpStream,
    error: ApiError,
    cors_headers: &HeaderMap,
) -> std::io::Result<()> {
    use axum::response::IntoResponse;
    use std::fmt::Write;
    let (parts, body) = error.into_response().into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let mut out = BytesMut::with_capacity(256 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    put_headers(&mut out, &parts.headers);
    put_headers(&mut out, cors_headers);
    let _ = write!(
        out,
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(&body);
    socket.write_all(&out).await?;
    socket.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_response_head_is_the_router_s_headers_chunked() {
        let head = response_head(&HeaderMap::new());
        assert_eq!(
            &head[..],
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
cache-control: no-cache, no-transform\r\nx-accel-buffering: no\r\n\
transfer-encoding: chunked\r\n\r\n"
        );
        let mut cors = HeaderMap::new();
        cors.insert("vary", HeaderValue::from_static("origin"));
        let head = response_head(&cors);
        assert!(head.ends_with(b"transfer-encoding: chunked\r\nvary: origin\r\n\r\n"));
    }
}
