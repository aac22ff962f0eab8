//! Serving the hub on a TCP listener, with a bounded graceful shutdown.
//!
//! [`serve`] accepts connections and runs HTTP/1.1 on each. Each request gets a
//! [`ConnectionInfo`] so that the SSE transport can apply per-address limits and
//! close a connection whose reader has stalled (a write that never completes would
//! otherwise keep it open). On shutdown it stops accepting, lets streams end with
//! their reconnect hint, and waits at most `shutdown.grace` for connections to close.

use std::io;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::http::ConnectionInfo;
use crate::hub::Hub;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `hub` on `listener` until [`Hub::shutdown`] is called, then drains open
/// connections for at most the configured grace period.
pub async fn serve(listener: TcpListener, hub: Hub) -> io::Result<()> {
    let router = hub.router();
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
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
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
        });
    }
    drop(listener);
    connections.close();
    let grace = hub.config().shutdown.grace;
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
