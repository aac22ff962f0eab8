//! What the streaming endpoints (`/events`, `/ws`, `/poll`) read from an HTTP
//! request, the same way for each: the query string, the credential, the last
//! event id and the client's address, turned into a [`OpenRequest`] for the
//! session; and how the session's refusals are answered over HTTP.

use axum::http::{HeaderMap, StatusCode, Uri};

use super::{ApiError, ConnectionInfo, credential};
use crate::session::{OpenRequest, Refusal};

/// What a streaming request accepts in its query string.
#[derive(Debug, Default)]
pub(super) struct StreamQuery {
    pub(super) channels: Vec<String>,
    pub(super) last_event_id: Option<String>,
    pub(super) token: Option<String>,
    pub(super) envelope: bool,
}

pub(super) fn parse_query(query: Option<&str>) -> Result<StreamQuery, ApiError> {
    let mut q = StreamQuery::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "channel" => q.channels.push(value.into_owned()),
            "channels" => q.channels.extend(
                value
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            ),
            "last_event_id" | "lastEventId" => q.last_event_id = Some(value.into_owned()),
            "token" => q.token = Some(value.into_owned()),
            "envelope" => {
                q.envelope = match &*value {
                    "" | "1" | "true" => true,
                    "0" | "false" => false,
                    other => {
                        return Err(ApiError::bad_request(
                            "invalid_parameter",
                            format!("envelope must be true or false, not {other:?}"),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(q)
}

/// The session's view of a streaming request: its credential (bearer header, then
/// `token` parameter, then the auth cookie), channels, last event id (the header
/// before the parameter) and the client's address.
pub(super) fn open_request(
    query: StreamQuery,
    headers: &HeaderMap,
    cookie: &str,
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

/// Reads a streaming request whose query has the usual parameters.
pub(super) fn read(
    uri: &Uri,
    headers: &HeaderMap,
    cookie: &str,
    info: Option<&ConnectionInfo>,
    require_channel: bool,
) -> Result<(OpenRequest, bool), ApiError> {
    let query = parse_query(uri.query())?;
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
        let q = parse_query(Some(
            "channel=a&channel=b&channels=c,d&last_event_id=x-1&envelope=1&token=t",
        ))
        .unwrap();
        assert_eq!(q.channels, vec!["a", "b", "c", "d"]);
        assert_eq!(q.last_event_id.as_deref(), Some("x-1"));
        assert!(q.envelope);
        assert_eq!(q.token.as_deref(), Some("t"));
        assert!(parse_query(Some("envelope=maybe")).is_err());
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
