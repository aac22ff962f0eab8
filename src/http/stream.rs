//! What the streaming endpoints (`/events`, `/ws`, `/poll`) read from an HTTP
//! request, the same way for each: the query string, the credential, the last
//! event id and the client's address, turned into a [`OpenRequest`] for the
//! session; and how the session's refusals are answered over HTTP.

use axum::http::{HeaderMap, StatusCode, Uri};

use super::origin::CookieAuth;
use super::{ApiError, ConnectionInfo, credential, query};
use crate::session::{OpenRequest, Refusal};

/// What a streaming request accepts in its query string.
#[derive(Debug, Default)]
pub(super) struct StreamQuery {
    pub(super) channels: Vec<String>,
    pub(super) last_event_id: Option<String>,
    pub(super) token: Option<String>,
    pub(super) envelope: bool,
}

/// Reads the query of a stream request. It is bounded as it is read: past
/// `max_channels` parameters or channel names and [`query::SPARE_PARAMETERS`]
/// more, it is refused before any name is looked at.
pub(super) fn parse_query(
    query: Option<&str>,
    max_channels: usize,
) -> Result<StreamQuery, ApiError> {
    let most = max_channels + query::SPARE_PARAMETERS;
    let mut q = StreamQuery::default();
    let mut envelope = None;
    for (read, pair) in query::pairs(query).enumerate() {
        if read == most {
            return Err(query::too_many_channels(max_channels));
        }
        let (key, value) = pair?;
        let mut push = |name: &str| {
            if q.channels.len() == most {
                return Err(query::too_many_channels(max_channels));
            }
            q.channels.push(name.to_owned());
            Ok(())
        };
        match &*key {
            "channel" => push(&value)?,
            "channels" => {
                for name in value.split(',').filter(|c| !c.is_empty()) {
                    push(name)?;
                }
            }
            "last_event_id" | "lastEventId" => {
                query::once(&mut q.last_event_id, "last_event_id", value)?;
            }
            "token" => query::once(&mut q.token, "token", value)?,
            "envelope" => query::once(&mut envelope, "envelope", value)?,
            _ => {}
        }
    }
    q.envelope = match envelope.as_deref() {
        None | Some("0" | "false") => false,
        Some("" | "1" | "true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("envelope must be true or false, not {other:?}"),
            )
            .for_parameter("envelope"));
        }
    };
    Ok(q)
}

/// The session's view of a streaming request: its credential (bearer header, then
/// `token` parameter, then the auth cookie), channels, last event id (the header
/// before the parameter) and the client's address.
///
/// The cookie counts only from a page allowed to use it ([`CookieAuth::check`]),
/// else the request is refused (403) before anything is opened: a WebSocket before
/// its upgrade, a stream on either path it is served by.
pub(super) fn open_request(
    query: StreamQuery,
    headers: &HeaderMap,
    cookie: &CookieAuth,
    info: Option<&ConnectionInfo>,
    require_channel: bool,
) -> Result<OpenRequest, ApiError> {
    let credential = credential(headers, query.token.as_deref(), cookie)?.map(str::to_owned);
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id);
    Ok(OpenRequest {
        credential,
        channels: query.channels,
        last_event_id,
        peer: info.map(|i| i.peer.ip()),
        require_channel,
    })
}

/// Reads a streaming request whose query has the usual parameters, at most
/// `max_channels` channel names (and a few more parameters).
pub(super) fn read(
    uri: &Uri,
    headers: &HeaderMap,
    cookie: &CookieAuth,
    info: Option<&ConnectionInfo>,
    require_channel: bool,
    max_channels: usize,
) -> Result<(OpenRequest, bool), ApiError> {
    let query = parse_query(uri.query(), max_channels)?;
    let envelope = query.envelope;
    Ok((
        open_request(query, headers, cookie, info, require_channel)?,
        envelope,
    ))
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        use crate::limits::Rejection;
        let status = match &refusal {
            Refusal::Credential(e) => return ApiError::from(e.clone()),
            Refusal::Unavailable(e) => return ApiError::from(e.clone()),
            Refusal::Denied(crate::core::Denied::NeedsCredential(_)) => StatusCode::UNAUTHORIZED,
            Refusal::Denied(_) | Refusal::NotPublishable(_) | Refusal::HookRefused(_) => {
                StatusCode::FORBIDDEN
            }
            Refusal::Limit(Rejection::PerIp) | Refusal::RateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Refusal::Limit(Rejection::MaxConnections) | Refusal::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let retry_after = match &refusal {
            Refusal::Limit(_) => Some(5),
            Refusal::ShuttingDown => Some(1),
            _ => None,
        };
        let mut error = ApiError::new(status, refusal.code(), refusal.to_string());
        if let Some(channel) = refusal.channel() {
            error = error.for_channel(channel);
        }
        match retry_after {
            Some(seconds) => error.retry_after(seconds),
            None => error,
        }
    }
}

/// A broker that cannot do what was asked now: 503, retry in a second.
impl From<crate::broker::BrokerError> for ApiError {
    fn from(e: crate::broker::BrokerError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
        .retry_after(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_accepts_repeated_and_comma_separated_channels() {
        let q = parse_query(
            Some("channel=a&channel=b&channels=c,d&last_event_id=x-1&envelope=1&token=t"),
            64,
        )
        .unwrap();
        assert_eq!(q.channels, vec!["a", "b", "c", "d"]);
        assert_eq!(q.last_event_id.as_deref(), Some("x-1"));
        assert!(q.envelope);
        assert_eq!(q.token.as_deref(), Some("t"));
        assert!(parse_query(Some("envelope=maybe"), 64).is_err());
    }

    #[test]
    fn query_parameters_taking_one_value_may_not_repeat() {
        for query in [
            "channel=a&last_event_id=1&last_event_id=2",
            "channel=a&last_event_id=1&lastEventId=2",
            "token=a&channel=a&token=b",
            "envelope=1&envelope=1",
        ] {
            assert!(parse_query(Some(query), 64).is_err(), "{query}");
        }
        let q = parse_query(Some("channel=a&channel=a&channels=a,b"), 64).unwrap();
        assert_eq!(q.channels, vec!["a", "a", "a", "b"]);
        assert!(parse_query(Some("channel=%FF"), 64).is_err());
    }

    #[test]
    fn queries_are_refused_past_the_channel_limit_and_a_little_more() {
        let most = 4 + query::SPARE_PARAMETERS;
        let names = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
        let query = format!("channels={}", names(most).join(","));
        assert_eq!(parse_query(Some(&query), 4).unwrap().channels.len(), most);
        let query = format!("channels={}", names(most + 1).join(","));
        assert!(parse_query(Some(&query), 4).is_err());
        let query = "x=1&".repeat(most + 1);
        assert!(parse_query(Some(&query), 4).is_err());
        let query = "channel=a&".repeat(100_000);
        let error = parse_query(Some(&query), 4).unwrap_err();
        assert!(error.message().contains("at most 4 channels"), "{error:?}");
    }

    #[test]
    fn refusals_keep_their_status_code_and_channel() {
        use crate::core::{ChannelName, Denied};
        let denied: ApiError = Refusal::Denied(Denied::NotGranted("a".into())).into();
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        let anonymous: ApiError = Refusal::Denied(Denied::NeedsCredential("a".into())).into();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        let full: ApiError = Refusal::Limit(crate::limits::Rejection::MaxConnections).into();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        let invalid: ApiError = Refusal::InvalidChannel {
            name: "a b".into(),
            error: ChannelName::new("a b").unwrap_err(),
        }
        .into();
        assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    }
}
