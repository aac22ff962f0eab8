//! Long-polling: `GET /poll`, for clients whose network will not carry a stream
//! (a proxy that buffers responses, a firewall that cuts long-lived ones).
//!
//! The same credentials, channels, limits, history and resets as `GET /events`
//! (the request opens a [`Session`] like any stream), answered as one
//! JSON document: what the client missed since `last_event_id` at once, or else the
//! first live events within `timeout`, and the id to send on the next request.
//! Each request registers its subscription before reading the history after the
//! client's id, as a resuming stream does, so nothing published between two
//! requests is lost, except live-only events (typing indicators, presence changes),
//! which are never kept. A request without `last_event_id` is answered at once with
//! the hub's current position, from which the next one continues.
//!
//! A waiting request holds a connection slot; it does not count as presence on its
//! channels (requests come and go, and would make the user join and leave).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::{ApiError, ConnectionInfo, Services, query, stream};
use crate::core::{ChannelName, Item};
use crate::protocol::{End, ResetNotice, event_json_with_id, matching_channels};
use crate::session::{Heartbeat, Session, SessionOptions, Step};

/// How long a request waits for an event when it names no `timeout`.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(25);

/// The longest a request may wait: below the idle timeouts of common proxies and
/// load balancers (often 60 s), which would otherwise cut it.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(55);

/// At most this many events go in one answer; the next request continues after
/// the last one.
const MAX_EVENTS: usize = 1000;

/// At most about this many bytes of events go in one answer.
const MAX_BYTES: usize = 1024 * 1024;

/// The `timeout` query parameter: seconds, fractions allowed, capped at
/// [`MAX_TIMEOUT`]. The query is bounded as for the rest of the request (see
/// [`stream::parse_query`]): past `max_channels` parameters and a few more, it is
/// refused.
pub(super) fn timeout_of(query: Option<&str>, max_channels: usize) -> Result<Duration, ApiError> {
    let mut timeout = None;
    for (read, pair) in query::pairs(query).enumerate() {
        if read == max_channels + query::SPARE_PARAMETERS {
            return Err(query::too_many_channels(max_channels));
        }
        let (key, value) = pair?;
        if key == "timeout" {
            query::once(&mut timeout, "timeout", value)?;
        }
    }
    let Some(value) = timeout else {
        return Ok(DEFAULT_TIMEOUT);
    };
    match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Duration::from_secs_f64(
            seconds.min(MAX_TIMEOUT.as_secs_f64()),
        )),
        _ => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("timeout must be a number of seconds from 0, not {value:?}"),
        )),
    }
}

/// One answer being filled.
struct Answer {
    events: Vec<String>,
    bytes: usize,
    reset: Option<ResetNotice>,
    last_event_id: String,
    retry_ms: u64,
    user: Option<String>,
    channels: Vec<ChannelName>,
}

impl Answer {
    fn new(last_event_id: String, user: Option<String>, channels: Vec<ChannelName>) -> Self {
        Self {
            events: Vec::new(),
            bytes: 0,
            reset: None,
            last_event_id,
            retry_ms: 0,
            user,
            channels,
        }
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.reset.is_none()
    }

    fn is_full(&self) -> bool {
        self.events.len() >= MAX_EVENTS || self.bytes >= MAX_BYTES
    }

    fn push(&mut self, item: Item, session: &Session) {
        // With several partitions, the connection's cursor is the id of each item.
        let cursor = session.cursor_id();
        match item {
            Item::Event(event) => {
                let matching = matching_channels(&event, session.channels());
                let channel = matching.first().copied().or(event.channels.first());
                let id = cursor.unwrap_or_else(|| event.id.clone());
                let all: &[&ChannelName] = if matching.len() > 1 { &matching } else { &[] };
                let json = event_json_with_id(&event, &id, channel, "{", "type", all);
                self.bytes += json.len();
                self.events.push(json);
                self.last_event_id = id;
            }
            Item::Reset(reset) => {
                let id = cursor.unwrap_or_else(|| reset.id.clone());
                let mut notice = ResetNotice::of(&reset);
                notice.id = Some(id.clone());
                self.reset = Some(notice);
                self.last_event_id = id;
            }
        }
    }

    /// Takes whatever the subscription has ready now. An overflowed queue ends the
    /// answer early: the next request reads the rest from history.
    fn drain(&mut self, session: &mut Session) {
        while !self.is_full() {
            match session.try_next() {
                Ok(Some(item)) => self.push(item, session),
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn into_response(self) -> Response {
        let mut body = String::with_capacity(self.bytes + 128);
        body.push_str("{\"events\":[");
        body.push_str(&self.events.join(","));
        body.push_str("],\"reset\":");
        body.push_str(&self.reset.map_or_else(
            || "null".to_owned(),
            |r| serde_json::to_string(&r).unwrap_or_default(),
        ));
        body.push_str(",\"last_event_id\":");
        body.push_str(&serde_json::Value::from(self.last_event_id).to_string());
        body.push_str(",\"retry_ms\":");
        body.push_str(&self.retry_ms.to_string());
        body.push_str(",\"user\":");
        body.push_str(&serde_json::Value::from(self.user).to_string());
        body.push_str(",\"channels\":");
        body.push_str(&serde_json::to_string(&self.channels).unwrap_or_default());
        body.push('}');
        let mut response = (StatusCode::OK, body).into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// `GET /poll?channel=..&last_event_id=..&timeout=..`: the events after
/// `last_event_id`, waiting up to `timeout` seconds for one when there are none yet.
pub(super) async fn poll(
    State(app): State<Services>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let info = request.extensions().get::<ConnectionInfo>().cloned();
    let max_channels = app.settings.limits.max_channels_per_connection;
    let timeout = timeout_of(request.uri().query(), max_channels)?;
    let (open, _) = stream::read(
        request.uri(),
        &headers,
        &app.cookie,
        info.as_ref(),
        true,
        max_channels,
    )?;
    let admitted = app.sessions.admit(open)?;
    let user = admitted.identity().user.clone();
    let Some(start) = admitted.resume().map(|from| from.as_id().to_owned()) else {
        let head = admitted.position().await?;
        let channels = admitted.channels().to_vec();
        return Ok(Answer::new(head, user, channels).into_response());
    };
    // A request must not outlive its token: the session ends when the token
    // expires, and the next request is refused, which tells the client to renew it.
    let options = SessionOptions {
        heartbeat: Heartbeat::Off,
        presence: false,
    };
    let mut session = admitted.start(options).await?;
    let mut answer = Answer::new(start, user, session.channels().to_vec());
    answer.drain(&mut session);
    if !answer.is_empty() || timeout.is_zero() {
        return Ok(answer.into_response());
    }
    tokio::select! {
        step = session.next() => match step {
            Step::Item(item) => {
                answer.push(item, &session);
                answer.drain(&mut session);
            }
            Step::End(End::Shutdown { retry }) => answer.retry_ms = retry.as_millis() as u64,
            Step::End(_) | Step::Heartbeat => {}
        },
        _ = tokio::time::sleep_until(Instant::now() + timeout) => {}
    }
    Ok(answer.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_defaults_caps_and_refuses_nonsense() {
        assert_eq!(timeout_of(None, 64).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout_of(Some("channel=a"), 64).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(
            timeout_of(Some("timeout=1.5"), 64).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(timeout_of(Some("timeout=0"), 64).unwrap(), Duration::ZERO);
        assert_eq!(timeout_of(Some("timeout=3600"), 64).unwrap(), MAX_TIMEOUT);
        for bad in [
            "timeout=-1",
            "timeout=soon",
            "timeout=NaN",
            "timeout=",
            "timeout=1&timeout=2",
        ] {
            assert!(timeout_of(Some(bad), 64).is_err(), "{bad}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(crate::fuzzing::cases(256))]

            /// A number of seconds from 0 waits that long, at most the cap; anything
            /// else in `timeout` is a 400.
            #[test]
            fn a_timeout_is_its_seconds_capped_or_refused(
                seconds in prop_oneof![0.0f64..100.0, any::<f64>()],
                junk in "[^&]{0,12}",
            ) {
                let query = format!("channel=a&timeout={seconds}");
                let got = timeout_of(Some(&query), 64);
                if seconds.is_finite() && seconds >= 0.0 {
                    let want = Duration::from_secs_f64(seconds.min(MAX_TIMEOUT.as_secs_f64()));
                    prop_assert_eq!(got.expect("a number of seconds"), want);
                } else {
                    prop_assert!(got.is_err());
                }
                match timeout_of(Some(&format!("timeout={junk}")), 64) {
                    Ok(timeout) => prop_assert!(timeout <= MAX_TIMEOUT),
                    Err(e) => prop_assert_eq!(e.status().as_u16(), 400),
                }
            }
        }
    }
}
