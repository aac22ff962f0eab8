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

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The first read of a request head; a longer head grows the buffer.
const HEAD_READ_BYTES: usize = 1024;

/// Beyond this a head is left to the HTTP server to refuse.
const MAX_HEAD_BYTES: usize = 16 * 1024;

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

/// Reads until the end of a request head (or `MAX_HEAD_BYTES`, or the end of the
/// stream). `None` when the client closed before sending anything.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(HEAD_READ_BYTES);
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len());
        }
        let from = buf.len().saturating_sub(3);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_HEAD_BYTES {
            return Ok(Some(buf));
        }
    }
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
