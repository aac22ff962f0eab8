//! Checks of a WebSocket upgrade request (RFC 6455, section 4.2.1), beyond what the
//! framework's extractor looks at: it takes any `Sec-WebSocket-Key`, even an empty
//! one. A refused upgrade is an HTTP error with the usual JSON body naming the
//! header at fault: 426 when the request is not for a WebSocket of version 13 (with
//! `Upgrade: websocket` and `Sec-WebSocket-Version: 13` saying what would do), 400
//! when it asks for one but malformed.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use base64::Engine;

use super::ApiError;

/// The one version of the protocol the hub speaks.
const VERSION: &str = "13";

/// The upgrade, or the refusal of a request that is not a well-formed one.
pub(super) fn accept(
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    if let Some(refusal) = refusal(headers) {
        return Err(refusal);
    }
    upgrade.map_err(|rejection| match rejection {
        WebSocketUpgradeRejection::ConnectionNotUpgradable(_) => {
            upgrade_required("this connection cannot be upgraded: a WebSocket needs HTTP/1.1")
        }
        other => invalid(other.body_text()),
    })
}

/// Why the upgrade request with `headers` is refused, if it is.
fn refusal(headers: &HeaderMap) -> Option<ApiError> {
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Some(upgrade_required(
            "this endpoint speaks WebSocket: send `Upgrade: websocket`",
        ));
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Some(invalid(
            "the Connection header of a WebSocket upgrade must include `Upgrade`",
        ));
    }
    let versions: Vec<&HeaderValue> = headers
        .get_all(header::SEC_WEBSOCKET_VERSION)
        .iter()
        .collect();
    match versions.as_slice() {
        [] => {
            return Some(
                invalid("Sec-WebSocket-Version is missing: this hub speaks version 13")
                    .with_header(
                        header::SEC_WEBSOCKET_VERSION,
                        HeaderValue::from_static(VERSION),
                    ),
            );
        }
        [version] if version.as_bytes() == VERSION.as_bytes() => {}
        _ => {
            return Some(upgrade_required(
                "Sec-WebSocket-Version must be 13, the only version this hub speaks",
            ));
        }
    }
    let keys: Vec<&HeaderValue> = headers.get_all(header::SEC_WEBSOCKET_KEY).iter().collect();
    match keys.as_slice() {
        [key] if valid_key(key) => None,
        [] => Some(invalid("Sec-WebSocket-Key is missing")),
        [_] => Some(invalid(
            "Sec-WebSocket-Key must be the base64 encoding of 16 bytes",
        )),
        _ => Some(invalid("Sec-WebSocket-Key must be sent once")),
    }
}

/// Whether `key` is the base64 encoding of 16 bytes, as a client's nonce must be.
fn valid_key(key: &HeaderValue) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .is_ok_and(|nonce| nonce.len() == 16)
}

/// Whether a comma-separated header `name` lists `token` (in any case).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A 426: the request is not for the WebSocket the hub speaks.
fn upgrade_required(message: &str) -> ApiError {
    ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", message)
        .with_header(header::UPGRADE, HeaderValue::from_static("websocket"))
        .with_header(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(VERSION),
        )
}

/// A 400: an upgrade request that is malformed.
fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_upgrade", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn refused(change: impl FnOnce(&mut Vec<(&'static str, &'static str)>)) -> Option<u16> {
        let mut lines = GOOD.to_vec();
        change(&mut lines);
        refusal(&headers(&lines)).map(|e| e.status().as_u16())
    }

    #[test]
    fn a_well_formed_upgrade_passes() {
        assert_eq!(refused(|_| {}), None);
        assert_eq!(refused(|l| l[0].1 = "WebSocket"), None);
    }

    #[test]
    fn keys_must_be_one_base64_nonce_of_16_bytes() {
        for key in [
            "",
            "not base64!",
            "AAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAA==",
        ] {
            assert_eq!(refused(|l| l[3].1 = key), Some(400), "{key:?}");
        }
        assert_eq!(refused(|l| l.truncate(3)), Some(400));
        assert_eq!(refused(|l| l.push(GOOD[3])), Some(400));
    }

    #[test]
    fn versions_and_upgrade_headers_are_checked() {
        assert_eq!(
            refused(|l| {
                l.remove(2);
            }),
            Some(400)
        );
        assert_eq!(refused(|l| l[2].1 = "8"), Some(426));
        assert_eq!(
            refused(|l| l.push(("sec-websocket-version", "8"))),
            Some(426)
        );
        assert_eq!(refused(|l| l[1].1 = "keep-alive"), Some(400));
        assert_eq!(refused(|l| l[0].1 = "h2c"), Some(426));
        assert_eq!(
            refused(|l| {
                l.remove(0);
            }),
            Some(426)
        );
    }
}
