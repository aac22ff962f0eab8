//! Connections waiting on their client: for a request head, or for the rest of a
//! request body.
//!
//! Such a connection holds a file descriptor and buffers at a pace the client
//! sets, before `limits.max_connections` counts it (only streams count there). The
//! head and body timeouts bound how long each waits; [`Waiting`] bounds how many
//! wait at once: past its cap, and whenever the process runs out of file
//! descriptors, the connection that has waited longest is closed. A client that
//! sends its request at once never waits long enough to be the oldest, so a flood
//! of idle or trickling connections closes its own members first.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::http::BodyTimeout;

/// The connections waiting on their client, oldest first. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Waiting {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug)]
struct Shared {
    cap: usize,
    next: u64,
    /// Each waiting connection's close token, by when it started waiting.
    open: BTreeMap<u64, CancellationToken>,
}

impl Waiting {
    /// At most `cap` connections wait at once.
    pub(super) fn new(cap: usize) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                cap: cap.max(1),
                next: 0,
                open: BTreeMap::new(),
            })),
        }
    }

    /// Counts the connection that `close` closes as waiting until the returned
    /// [`Wait`] is dropped; if that makes one too many, closes the one that has
    /// waited longest.
    pub(super) fn enter(&self, close: &CancellationToken) -> Wait {
        let mut shared = self.shared.lock();
        let id = shared.next;
        shared.next += 1;
        shared.open.insert(id, close.clone());
        if shared.open.len() > shared.cap
            && let Some((_, oldest)) = shared.open.pop_first()
        {
            oldest.cancel();
        }
        Wait {
            shared: self.shared.clone(),
            id,
        }
    }

    /// Closes the connection that has waited longest, to free its file
    /// descriptor; false when none waits.
    pub(super) fn close_oldest(&self) -> bool {
        let oldest = self.shared.lock().open.pop_first();
        oldest.map(|(_, close)| close.cancel()).is_some()
    }

    /// How many connections wait now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shared.lock().open.len()
    }
}

/// A connection counted in [`Waiting`] until this is dropped.
#[derive(Debug)]
pub(super) struct Wait {
    shared: Arc<Mutex<Shared>>,
    id: u64,
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.shared.lock().open.remove(&self.id);
    }
}

/// A request body as the client sends it, which fails with [`BodyTimeout`] once
/// it has taken longer than its timeout, and counts its connection as waiting
/// until it has arrived whole.
///
/// A body that has already arrived with its head (most do) costs nothing more: the
/// timer and the place among the waiting are taken only when the body has to be
/// waited for, with the deadline still counted from when the request arrived.
pub(super) struct ClientBody<W> {
    inner: Incoming,
    timeout: Duration,
    /// When the request arrived; `None` when there is no body to wait for.
    arrived: Option<Instant>,
    /// Set once the body has been waited for.
    deadline: Option<Pin<Box<Sleep>>>,
    enter: Option<W>,
    wait: Option<Wait>,
}

impl<W: FnOnce() -> Wait> ClientBody<W> {
    /// `inner`, which must arrive whole within `timeout`; `enter` counts the
    /// connection as waiting, until the body has arrived, if it has to be waited
    /// for. Nothing is set up for a request without a body.
    pub(super) fn new(inner: Incoming, timeout: Duration, enter: W) -> Self {
        let waits = !inner.is_end_stream();
        Self {
            arrived: waits.then(Instant::now),
            deadline: None,
            enter: waits.then_some(enter),
            wait: None,
            inner,
            timeout,
        }
    }

    /// Whether the body took longer than its timeout; the first time it is waited
    /// for, sets the timer and counts the connection as waiting.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(arrived) = self.arrived else {
            return false;
        };
        if let Some(enter) = self.enter.take() {
            self.wait = Some(enter());
        }
        let timeout = self.timeout;
        self.deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(arrived + timeout)))
            .as_mut()
            .poll(cx)
            .is_ready()
    }

    /// The body is over, whole or not: the connection no longer waits on it.
    fn done(&mut self) {
        self.arrived = None;
        self.enter = None;
        self.wait = None;
        self.deadline = None;
    }
}

impl<W: FnOnce() -> Wait + Unpin> Body for ClientBody<W> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done();
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => {
                if !this.timed_out(cx) {
                    return Poll::Pending;
                }
                this.done();
                Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_connection_waiting_longest_is_closed() {
        let waiting = Waiting::new(2);
        let tokens: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
        let first = waiting.enter(&tokens[0]);
        let second = waiting.enter(&tokens[1]);
        assert!(!tokens[0].is_cancelled());
        let third = waiting.enter(&tokens[2]);
        assert!(tokens[0].is_cancelled(), "the oldest is closed");
        assert!(!tokens[1].is_cancelled() && !tokens[2].is_cancelled());
        assert_eq!(waiting.len(), 2);
        drop(first);
        assert_eq!(waiting.len(), 2, "already gone");
        drop(second);
        assert_eq!(
            waiting.len(),
            1,
            "a connection no longer waiting is not counted"
        );
        assert!(waiting.close_oldest());
        assert!(tokens[2].is_cancelled());
        assert!(!waiting.close_oldest(), "none waits");
        drop(third);
    }
}
