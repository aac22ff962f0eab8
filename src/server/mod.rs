//! Serving the hub on a TCP listener, with a bounded graceful shutdown.
//!
//! [`serve`] accepts connections and runs HTTP/1.1 on each. Each request gets a
//! [`ConnectionInfo`] so that the SSE transport can apply per-address limits and
//! close a connection whose reader has stalled (a write that never completes would
//! otherwise keep it open). On shutdown it stops accepting, lets streams end with
//! their reconnect hint, and waits at most `shutdown.grace` for connections to close.
//!
//! A connection's first request head is read here first, into a small buffer, within
//! `http.head_timeout`, and checked ([`head`]): a head the HTTP server would refuse
//! without a body, or drop, is answered here with the hub's JSON error (400, 408,
//! 414, 431) and the connection closed. A plain `GET /events` is then served directly
//! on the socket ([`direct`]): a streaming connection lives for hours, and this way
//! it holds no HTTP framework buffers (two of 8 KiB each) or task state of its own,
//! which more than halves the memory an idle connection costs. Every other request
//! goes to the router over HTTP/1.1 with the bytes already read put back.
//!
//! Behind a reverse proxy listed in `http.trusted_proxies`, each request's
//! [`ConnectionInfo::peer`] is the client the proxy names in its forwarded header
//! ([`crate::http::proxies`]), on both paths, so per-address limits and logs see
//! clients rather than the proxy.
//!
//! A stream is a response that never ends, so nothing its client sends after the
//! request can be answered: bytes that came with the request are refused (400
//! `pipelined_request`) before the stream starts, and bytes that come later close it,
//! on both paths alike.
//!
//! Connections waiting on their client (for a head, or for a body, which must arrive
//! within `http.body_timeout`) are bounded in number as well as in time
//! ([`waiting`]).
//!
//! [`serve_ops`] serves the operational routes on an address of their own
//! (`ops.listen`).

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

use crate::http::proxies::TrustedProxies;
use crate::http::{ConnectionInfo, cors_headers_without_origin};
use crate::hub::Hub;
use crate::node::Node;

mod direct;
pub(crate) mod fuzzing;
mod head;
mod waiting;

use head::Verdict;
use waiting::{ClientBody, Waiting};

/// How long, and for how many bytes, a connection refused before its request was
/// read whole goes on reading it (and dropping it), so that closing the connection
/// does not reset it before the client has read the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// The fewest connections that may wait on their client at once, whatever
/// `limits.max_connections` is.
const MIN_WAITING: usize = 1024;

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
    let timeouts = Timeouts {
        head: config.http.head_timeout,
        body: config.http.body_timeout,
    };
    let waiting = Waiting::new(MIN_WAITING.max(config.limits.max_connections / 2));
    let proxies = std::sync::Arc::new(TrustedProxies::new(
        &config.http.trusted_proxies,
        config.http.forwarded_header,
    ));
    let shared = std::sync::Arc::new(Shared {
        router,
        app,
        hub: hub.clone(),
        cors: !config.http.cors_origins.is_empty(),
        cors_headers,
        stream_head,
        timeouts,
        waiting: waiting.clone(),
    });
    let connections = TaskTracker::new();
    let close_all = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = hub.shutting_down() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before accept):
                    // a connection still waiting on its client gives its own up, or
                    // else wait a little rather than spin, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    let freed = out_of_files(&e) && waiting.close_oldest();
                    let pause = if freed { 5 } else { 50 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let close = close_all.child_token();
        // Counted from the accept, so that a flood of connections that send nothing
        // is bounded before any of them is read.
        let waiting_for_head = waiting.enter(&close);
        let connection = Box::new(Connection {
            stream,
            peer,
            // Behind a trusted proxy the client is named anew by each request: a
            // proxy carries many clients' requests over one kept-alive connection.
            proxy: proxies.trusts(peer.ip()).then(|| proxies.clone()),
            close,
            waiting_for_head,
            shared: shared.clone(),
        });
        connections.spawn(serve_connection(connection));
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

/// What every connection of a listener shares.
struct Shared {
    router: axum::Router,
    app: crate::http::Services,
    hub: Hub,
    /// Whether a CORS policy is configured.
    cors: bool,
    cors_headers: std::sync::Arc<HeaderMap>,
    stream_head: Bytes,
    timeouts: Timeouts,
    waiting: Waiting,
}

/// A connection just accepted.
struct Connection {
    stream: TcpStream,
    peer: std::net::SocketAddr,
    proxy: Option<std::sync::Arc<TrustedProxies>>,
    close: CancellationToken,
    waiting_for_head: waiting::Wait,
    shared: std::sync::Arc<Shared>,
}

/// A directly served stream, ready to run.
type DirectStream = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves one connection until it closes. The task's future is what an idle stream
/// costs for its whole life, so everything before the stream (the first head, the
/// HTTP path) runs boxed and is freed once the stream is open, and the stream is a
/// box of its own: the task holds two pointers, and the stream only its own state.
async fn serve_connection(connection: Box<Connection>) {
    // Its own statement, so that the first box is freed before the stream starts.
    let stream = Box::pin(connection.open()).await;
    if let Some(stream) = stream {
        stream.await;
    }
}

impl Connection {
    /// Reads and checks the first request head, then serves the connection over
    /// HTTP, or returns the stream request to serve directly.
    async fn open(self: Box<Self>) -> Option<DirectStream> {
        let Connection {
            mut stream,
            peer,
            proxy,
            close,
            waiting_for_head,
            shared,
        } = *self;
        let timeouts = shared.timeouts;
        let mut head = Vec::new();
        let read = tokio::select! {
            read = tokio::time::timeout(timeouts.head, head::read(&mut stream, &mut head)) => read,
            _ = close.cancelled() => return None,
            _ = shared.hub.shutting_down() => return None,
        };
        drop(waiting_for_head);
        let verdict = match read {
            Ok(Ok(())) => head::check(&head, shared.cors),
            Ok(Err(_)) => return None,
            // A client that has sent part of a head is told why it is closed; a
            // connection that sent nothing (a browser's spare one) just is.
            Err(_) if head.is_empty() => return None,
            Err(_) => Verdict::Refuse(crate::http::ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request head did not arrive within {}",
                    humantime::format_duration(timeouts.head)
                ),
            )),
        };
        let checked = match verdict {
            Verdict::Serve(checked) => checked,
            Verdict::Refuse(error) => {
                drop(head);
                refuse(&mut stream, error, &shared.cors_headers).await;
                return None;
            }
            Verdict::Unfinished => return None,
        };
        if let Some((uri, headers)) = checked.direct {
            let client = match &proxy {
                Some(proxies) => proxies.client(peer, &headers),
                None => peer,
            };
            let info = ConnectionInfo {
                peer: client,
                tcp_peer: peer,
                close,
            };
            return Some(Box::pin(direct::serve(
                shared.app.clone(),
                headers,
                uri,
                info,
                shared.stream_head.clone(),
                shared.cors_headers.clone(),
                stream,
            )));
        }
        let info = ConnectionInfo {
            peer,
            tcp_peer: peer,
            close: close.clone(),
        };
        let router = shared.router.clone();
        let body_waiting = shared.waiting.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let mut info = info.clone();
            if let Some(proxies) = &proxy {
                info.peer = proxies.client(peer, request.headers());
            }
            request.extensions_mut().insert(info.clone());
            let close = info.close.clone();
            let waiting = body_waiting.clone();
            let request = request.map(|body| {
                let body = ClientBody::new(body, timeouts.body, move || waiting.enter(&close));
                axum::body::Body::new(body)
            });
            let mut router = router.clone();
            async move { router.call(request).await }
        });
        let io = Prefixed {
            prefix: Bytes::from(head),
            inner: stream,
            // Nothing may follow a stream's request: what does closes it.
            last: checked.stream.then(|| close.clone()),
        };
        serve_http(io, service, shared.hub.clone(), close, timeouts.head).await;
        None
    }
}

/// Serves the node's operational routes ([`Node::ops_router`]: `/healthz`, `/readyz`,
/// `/stats`, `/metrics`) on `listener`, the address of `ops.listen`, until
/// [`Node::shutdown`] is called; open requests then get `shutdown.grace` to finish.
/// A request head must arrive within `http.head_timeout`, as on the main listener.
pub async fn serve_ops(listener: TcpListener, node: Node) -> io::Result<()> {
    let router = node.ops_router();
    let hub = node.hub().clone();
    let config = node.config();
    let head_timeout = config.http.head_timeout;
    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = hub.shutting_down() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the ops listener");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let hub = hub.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = hub.shutting_down() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    connections.close();
    // What is left is a scrape or a probe in flight; it is not waited for longer.
    let _ = tokio::time::timeout(config.shutdown.grace, connections.wait()).await;
    Ok(())
}

/// Whether an `accept` failed for want of file descriptors (EMFILE, ENFILE).
fn out_of_files(error: &io::Error) -> bool {
    cfg!(unix) && matches!(error.raw_os_error(), Some(23 | 24))
}

/// How long a client has for a request head and for a request body.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    head: Duration,
    body: Duration,
}

/// Serves HTTP/1.1 on a connection until it closes, `close` is cancelled, or the
/// hub shuts down (then open requests may finish). A later request head must
/// arrive within `head_timeout` of the previous response, which also closes an idle
/// connection.
async fn serve_http<S>(
    io: Prefixed,
    service: S,
    hub: Hub,
    close: CancellationToken,
    head_timeout: Duration,
) where
    S: hyper::service::HttpService<Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Answers to pipelined requests (a publisher with several in flight) go out in
    // one write; but hyper then buffers a response body without bound, so a stream
    // (which takes nothing after its request anyway) flushes each chunk, falling
    // behind and being closed when its reader stops reading instead of growing.
    let pipeline_flush = io.last.is_none();
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        // The first head was checked against the same limits, so that the HTTP
        // server never refuses it with a bare status. Its header limit is its
        // default, [`head::MAX_HEADERS`] (setting it makes every parse allocate).
        .max_buf_size(head::MAX_HEAD_BYTES + 16 * 1024)
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

/// Answers a request refused before it was read whole with `error` and closes the
/// connection, reading what the client still sends for a while first.
async fn refuse(stream: &mut TcpStream, error: crate::http::ApiError, cors_headers: &HeaderMap) {
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
    /// Set when the request put back is a stream's, after which the client may send
    /// nothing: a byte more cancels this (closing the connection) and fails the read.
    last: Option<CancellationToken>,
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
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(close) = &this.last
            && buf.filled().len() > before
        {
            buf.set_filled(before);
            close.cancel();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client sent more after a stream request",
            )));
        }
        Poll::Ready(Ok(()))
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
