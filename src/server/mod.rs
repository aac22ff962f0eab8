//! Serving the hub on a TCP listener, with a bounded graceful shutdown.
//!
//! [`serve`] accepts connections and runs HTTP/1.1 on each. Each request gets a
//! [`ConnectionInfo`] so that the SSE transport can apply per-address limits and
//! close a connection whose reader has stalled (a write that never completes would
//! otherwise keep it open). On shutdown it stops accepting, lets streams end with
//! their reconnect hint, and waits at most `shutdown.grace` for connections to close.
//!
//! A connection's request head is read first, into a small buffer. A plain
//! `GET /events` is served directly on the socket ([`direct`]):
//! a streaming connection lives for hours, and this way it holds no HTTP framework
//! buffers (two of 8 KiB each) or task state of its own, which more than halves the
//! memory an idle connection costs. Every other request, and a stream the hub
//! refuses, goes to the router over HTTP/1.1 with the bytes already read put back.
//! A request target longer than the HTTP server takes is answered here, 414 with
//! the usual JSON body, where the HTTP server would drop the connection unanswered.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::http::{ConnectionInfo, cors_headers_without_origin};
use crate::hub::Hub;
use crate::node::Node;

mod direct;
pub(crate) mod fuzzing;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The first read of a request head; a longer head grows the buffer.
const HEAD_READ_BYTES: usize = 1024;

/// Beyond this a head is left to the HTTP server to refuse.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The longest request target the HTTP server takes (it drops a longer one without
/// an answer); a longer one is refused here, with a 414 and a JSON body.
const MAX_TARGET_BYTES: usize = u16::MAX as usize - 1;

/// Room for a request target with the method and version around it.
const MAX_REQUEST_LINE: usize = MAX_TARGET_BYTES + 32;

/// How long, and for how many bytes, a connection refused before its request was
/// read whole goes on reading it (and dropping it), so that closing the connection
/// does not reset it before the client has read the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Serves `node` on `listener` until [`Node::shutdown`] is called, then drains
/// open connections for at most the configured grace period.
pub async fn serve(listener: TcpListener, node: Node) -> io::Result<()> {
    let router = node.router();
    let app = node.services().clone();
    let hub = node.hub().clone();
    let config = node.config();
    // What the CORS policy adds to every response, also sent by directly served
    // streams, and the response head of those streams.
    let cors_headers = std::sync::Arc::new(cors_headers_without_origin(&config.http.cors_origins));
    let stream_head = direct::response_head(&cors_headers);
    let connections = TaskTracker::new();
    let close_all = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = hub.shutting_down() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept:
                    // wait a little rather than spin, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let close = close_all.child_token();
        let info = ConnectionInfo {
            peer,
            close: close.clone(),
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(info.clone());
            let mut router = router.clone();
            async move { router.call(request.map(axum::body::Body::new)).await }
        });
        let hub = hub.clone();
        let cors = !config.http.cors_origins.is_empty();
        let cors_headers = cors_headers.clone();
        let stream_head = stream_head.clone();
        let app = app.clone();
        connections.spawn(async move {
            let mut stream = stream;
            let head = tokio::select! {
                head = tokio::time::timeout(HEADER_READ_TIMEOUT, read_head(&mut stream)) => head,
                _ = close.cancelled() => return,
                _ = hub.shutting_down() => return,
            };
            let Ok(Ok(Some(head))) = head else {
                return;
            };
            if target_too_long(&head) {
                drop(head);
                refuse_long_target(&mut stream, &cors_headers).await;
                return;
            }
            if let Some((uri, headers)) = direct::direct_stream(&head, cors) {
                // Only the stream's own state stays for the connection's life.
                drop(head);
                drop(service);
                let info = ConnectionInfo {
                    peer,
                    close: close.clone(),
                };
                direct::serve(
                    &app,
                    headers,
                    uri,
                    info,
                    stream_head,
                    &cors_headers,
                    &mut stream,
                )
                .await;
                return;
            }
            // Answers to pipelined requests (a publisher with several in flight) go
            // out in one write; but hyper then buffers a response body without bound,
            // so a stream to a reader that stopped reading would grow in memory
            // instead of falling behind and being closed.
            let pipeline_flush = !direct::is_stream_request(&head);
            let io = Prefixed {
                prefix: Bytes::from(head),
                inner: stream,
            };
            // Boxed, so that a directly served stream's task does not carry the
            // space of an HTTP connection's state.
            Box::pin(serve_http(io, service, hub, close, pipeline_flush)).await;
        });
    }
    drop(listener);
    connections.close();
    let grace = config.shutdown.grace;
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the grace period; closing them"
        );
        close_all.cancel();
    }
    Ok(())
}

/// Serves HTTP/1.1 on a connection until it closes, `close` is cancelled, or the
/// hub shuts down (then open requests may finish).
async fn serve_http<S>(
    io: Prefixed,
    service: S,
    hub: Hub,
    close: CancellationToken,
    pipeline_flush: bool,
) where
    S: hyper::service::HttpService<Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .pipeline_flush(pipeline_flush)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = close.cancelled() => return,
        _ = hub.shutting_down() => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = close.cancelled() => {}
    }
}

/// Reads until the end of a request head (or `MAX_HEAD_BYTES` once the request
/// line is whole, or `MAX_REQUEST_LINE` while it is not, or the end of the stream).
/// `None` when the client closed before sending anything.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(HEAD_READ_BYTES);
    let mut line_whole = false;
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len());
        }
        let from = buf.len().saturating_sub(3);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        line_whole = line_whole || buf[from..].contains(&b'\n');
        // A blank line ends the head, its line ends `\r\n` or a bare `\n` as
        // the HTTP server also takes them: a head ended by bare ones would otherwise
        // wait here, unanswered, for bytes its client will never send.
        if buf[from..].windows(2).any(|w| w == b"\n\n")
            || buf[from..].windows(3).any(|w| w == b"\n\r\n")
            || (buf.len() >= MAX_HEAD_BYTES && line_whole)
            || buf.len() >= MAX_REQUEST_LINE
        {
            return Ok(Some(buf));
        }
    }
}

/// Whether the request target of `head` is longer than the HTTP server takes.
fn target_too_long(head: &[u8]) -> bool {
    let Some(end) = head.iter().position(|&b| b == b'\n') else {
        return head.len() >= MAX_REQUEST_LINE;
    };
    head[..end]
        .split(|&b| b == b' ')
        .nth(1)
        .is_some_and(|target| target.len() > MAX_TARGET_BYTES)
}

/// Answers a request whose target is too long with a 414 and closes the
/// connection, reading what the client still sends for a while first.
async fn refuse_long_target(stream: &mut TcpStream, cors_headers: &HeaderMap) {
    let error = crate::http::ApiError::new(
        axum::http::StatusCode::URI_TOO_LONG,
        "uri_too_long",
        format!("the request target is longer than {MAX_TARGET_BYTES} bytes"),
    );
    if direct::write_error(stream, error, cors_headers)
        .await
        .is_err()
    {
        return;
    }
    let mut sink = vec![0u8; 16 * 1024];
    let drain = async {
        let mut read = 0;
        while read < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// A TCP stream with bytes already read from it put back in front.
struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_targets_past_the_http_servers_limit_are_too_long() {
        let head = |target_len: usize| {
            format!(
                "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(target_len - 1)
            )
            .into_bytes()
        };
        assert!(!target_too_long(&head(100)));
        assert!(!target_too_long(&head(MAX_TARGET_BYTES)));
        assert!(target_too_long(&head(MAX_TARGET_BYTES + 1)));
        let unfinished = [b"GET /".as_slice(), &vec![b'a'; MAX_REQUEST_LINE]].concat();
        assert!(target_too_long(&unfinished));
        assert!(
            !target_too_long(&unfinished[..MAX_TARGET_BYTES]),
            "the client stopped early"
        );
    }
}
