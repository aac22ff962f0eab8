//! The HTTP layer's parsers of client input, reached from `herald::fuzzing`.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use serde_json::Value;

use super::{ApiError, Services};
use crate::auth::Identity;
use crate::core::NewEvent;
use crate::limits::Limits;
use crate::session::{OpenRequest, Session};

/// See `herald::fuzzing::StreamQuery`.
pub(crate) type StreamQuery = (Vec<String>, Option<String>, Option<String>, bool);

/// See `herald::fuzzing::stream_query`.
pub(crate) fn stream_query(
    query: Option<&str>,
    max_channels: usize,
) -> Result<StreamQuery, ApiError> {
    super::stream::parse_query(query, max_channels)
        .map(|q| (q.channels, q.last_event_id, q.token, q.envelope))
}

/// See `herald::fuzzing::stream_request`.
pub(crate) fn stream_request(
    uri: &Uri,
    headers: &HeaderMap,
    cookie: &str,
    require_channel: bool,
    max_channels: usize,
) -> Result<(OpenRequest, bool), ApiError> {
    let cookie = super::origin::CookieAuth::new(cookie, &[]);
    super::stream::read(uri, headers, &cookie, None, require_channel, max_channels)
}

/// See `herald::fuzzing::query_pairs`.
pub(crate) fn query_pairs(
    query: Option<&str>,
) -> impl Iterator<Item = Result<(Cow<'_, str>, Cow<'_, str>), ApiError>> {
    super::query::pairs(query)
}

/// See `herald::fuzzing::query_param`.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    super::query::Params::parse(query)?.one(name)
}

/// See `herald::fuzzing::poll_timeout`.
pub(crate) fn poll_timeout(query: Option<&str>, max_channels: usize) -> Result<Duration, ApiError> {
    super::poll::timeout_of(query, max_channels)
}

/// See `herald::fuzzing::publish_body`.
pub(crate) fn publish_body(
    body: &[u8],
    identity: &Identity,
    limits: &Limits,
) -> Result<(Vec<NewEvent>, bool), ApiError> {
    super::publish::events_of(body, identity, limits)
}

/// See `herald::fuzzing::ws_session`.
pub(crate) async fn ws_session(
    app: &Services,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Session, ApiError> {
    super::ws::open_session(app, uri, headers, None).await
}

/// See `herald::fuzzing::ws_frame`.
pub(crate) async fn ws_frame(session: &mut Session, text: &str) -> Value {
    super::ws::handle(session, text).await
}

/// See `herald::fuzzing::ws_close_code`.
pub(crate) fn ws_close_code(error: &axum::Error) -> Option<(u16, &'static str)> {
    super::ws_close::close_for(error)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::http::query::SPARE_PARAMETERS;

    /// Pieces of a stream query: its parameters, well-formed or not.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            "channel=[a-z:$*, %0-9A-F]{0,12}",
            "channels=[a-z:,]{0,30}",
            "(last_event_id|lastEventId|token|envelope|timeout)=[a-z0-9%-]{0,8}",
            "[a-z_]{1,8}(=[^&]{0,8})?",
            "%[0-9A-F]{2}",
            ".{0,4}",
        ]
    }

    proptest! {
        #![proptest_config(crate::fuzzing::cases(256))]

        /// Any query is read or refused with a 400; read, it never holds more
        /// channel names than the bound, and holds those it was given, in order.
        #[test]
        fn a_stream_query_is_bounded_or_refused(
            pieces in proptest::collection::vec(piece(), 0..120),
            max_channels in 0usize..8,
        ) {
            let query = pieces.join("&");
            match stream_query(Some(&query), max_channels) {
                Ok((channels, ..)) => {
                    prop_assert!(channels.len() <= max_channels + SPARE_PARAMETERS);
                }
                Err(e) => prop_assert_eq!(e.status().as_u16(), 400, "{:?}", e),
            }
        }

        /// Well-formed channel parameters are read as given, in order, up to the
        /// bound; past it the query is refused, naming the limit.
        #[test]
        fn channels_are_read_as_given_up_to_the_bound(
            names in proptest::collection::vec("[a-z][a-z0-9:]{0,10}", 0..40),
            comma in any::<bool>(),
            max_channels in 0usize..8,
        ) {
            let query = if comma {
                format!("channels={}", names.join(","))
            } else {
                names.iter().map(|n| format!("channel={n}")).collect::<Vec<_>>().join("&")
            };
            let got = stream_query(Some(&query), max_channels);
            if names.len() <= max_channels + SPARE_PARAMETERS {
                prop_assert_eq!(got.expect("within the bound").0, names);
            } else {
                let e = got.expect_err("past the bound");
                let want = format!("at most {max_channels} channels");
                prop_assert!(e.message().contains(&want));
            }
        }

        /// A stream request of any target and `Last-Event-ID` is read or refused
        /// with a 4xx; the header's id wins over the parameter.
        #[test]
        fn a_stream_request_is_read_or_refused_with_a_4xx(
            pieces in proptest::collection::vec(piece(), 0..20),
            last_event_id in proptest::option::of("[ -~]{0,40}"),
            authorization in proptest::option::of("(Bearer |bearer |Basic )?[ -~]{0,20}"),
        ) {
            let Ok(uri) = format!("/events?{}", pieces.join("&")).parse::<Uri>() else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            if let Some(id) = last_event_id.as_deref().and_then(|v| v.parse().ok()) {
                headers.insert("last-event-id", id);
            }
            if let Some(value) = authorization.as_deref().and_then(|v| v.parse().ok()) {
                headers.insert("authorization", value);
            }
            match stream_request(&uri, &headers, "herald_token", true, 8) {
                Ok((open, _)) => {
                    prop_assert!(open.channels.len() <= 8 + SPARE_PARAMETERS);
                    if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
                        prop_assert_eq!(open.last_event_id.as_deref(), Some(id));
                    }
                }
                Err(e) => prop_assert!(e.status().is_client_error(), "{:?}", e),
            }
        }
    }
}
