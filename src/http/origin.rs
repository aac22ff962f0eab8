//! Which pages may use the auth cookie.
//!
//! A browser attaches the cookie to every request to the hub, whichever page makes
//! it: a WebSocket handshake, an `EventSource`, a form posted from another site. So
//! the cookie proves whose browser sent a request, not that one of the hub's pages
//! (or an application's page the hub trusts) asked for it. A request whose
//! credential is the cookie is therefore accepted only when the browser says it
//! comes from an allowed page ([`CookieAuth::check`]):
//!
//! 1. `Sec-Fetch-Site: same-origin`: the browser vouches that the page is on the
//!    origin it sent the request to, which is the hub's, whatever a proxy in front
//!    of the hub rewrote (pages cannot set this header; browsers leave it out of
//!    WebSocket handshakes, which carry `Origin` only);
//! 2. else, with an `Origin`, it must be one of `http.cors_origins` (`*` does not
//!    count: a wildcard CORS policy never allows credentials either) or the hub's
//!    own origin, `http://` or `https://` followed by the request's `Host`. The
//!    scheme is not known here (TLS usually ends at a proxy). Forwarded headers
//!    (`X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded: proto=/host=`) are not
//!    read, not even from a proxy of `http.trusted_proxies`: a client address is a
//!    chain each proxy appends to, so the hub can stop at what a trusted proxy saw
//!    itself ([`super::proxies`]), but a host or a scheme is a single value, and a
//!    proxy that does not set it passes on what the client wrote, which the hub
//!    cannot tell apart. The `Host` a proxy passes on is all this rule needs, and
//!    `Sec-Fetch-Site` covers one that rewrites it (for all but WebSocket
//!    handshakes). `null` (a sandboxed page, a redirect across origins) is never
//!    allowed;
//! 3. else, without an `Origin`, `Sec-Fetch-Site` must be absent or `none`. A
//!    browser sends `Origin` with every WebSocket handshake and every cross-origin
//!    request it lets a page read, and current browsers send `Sec-Fetch-Site` with
//!    their other requests; a request with neither comes from a client that is not a
//!    browser (which carries no victim's cookie), from the address bar, or from an
//!    old browser's same-origin read. `same-site` and `cross-site` are another
//!    page's request (an image, a script, a link) and are refused.
//!
//! A bearer header or a `token` parameter is not affected: a page cannot make the
//! browser send those on its own, so they prove the page holds the token.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::ApiError;

/// The header a browser sets to say how the page that made a request relates to
/// the request's target.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// The auth cookie's name and the origins, besides the hub's own, whose pages may
/// use it.
#[derive(Debug, Clone)]
pub(crate) struct CookieAuth {
    name: String,
    /// `http.cors_origins` without `*`, normalised ([`normalise`]).
    origins: Vec<String>,
}

impl CookieAuth {
    /// The cookie `name`, usable from the hub's own pages and those of
    /// `cors_origins` (as configured; `*` is left out).
    pub(crate) fn new(name: &str, cors_origins: &[String]) -> Self {
        Self {
            name: name.to_owned(),
            origins: cors_origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| normalise(o))
                .collect(),
        }
    }

    /// The cookie's value, when the request carries it (and it is not empty).
    pub(crate) fn value<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.name)
            .map(|(_, value)| value)
            .filter(|value| !value.is_empty())
    }

    /// Whether the page that made the request may use the cookie (see the module's
    /// rule); a 403 `origin_not_allowed` naming the origin when it may not.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let site = headers.get(SEC_FETCH_SITE).map(HeaderValue::as_bytes);
        if site == Some(b"same-origin") {
            return Ok(());
        }
        let mut origins = headers.get_all(header::ORIGIN).iter();
        match (origins.next(), origins.next()) {
            (Some(origin), None) => {
                let allowed = origin
                    .to_str()
                    .ok()
                    .and_then(normalise)
                    .is_some_and(|o| self.origins.contains(&o) || is_own(&o, headers));
                if allowed {
                    Ok(())
                } else {
                    Err(self.refusal(&format!(
                        "from a page on {:?}",
                        String::from_utf8_lossy(origin.as_bytes())
                    )))
                }
            }
            (Some(_), Some(_)) => Err(self.refusal("from a request with several Origin headers")),
            (None, _) => match site {
                None | Some(b"none") => Ok(()),
                Some(site) => Err(self.refusal(&format!(
                    "from another page's request without Origin (Sec-Fetch-Site: {})",
                    String::from_utf8_lossy(site)
                ))),
            },
        }
    }

    fn refusal(&self, from: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!(
                "the {} cookie is not accepted {from}: only the hub's own origin and those in \
                 http.cors_origins may use it; send the token in the Authorization header instead",
                self.name
            ),
        )
    }
}

/// `origin` as compared: lower case, without a trailing `/` or the scheme's default
/// port; `None` unless it is `http://` or `https://` and a host.
fn normalise(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https") || authority.is_empty() || authority.contains('/') {
        return None;
    }
    Some(format!(
        "{scheme}://{}",
        without_default_port(scheme, authority)
    ))
}

/// `authority` without the default port of `scheme` (`:80` for http, `:443` for
/// https), which browsers leave out of `Origin` and some clients put in `Host`.
fn without_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let port = if scheme == "https" { ":443" } else { ":80" };
    authority.strip_suffix(port).unwrap_or(authority)
}

/// Whether the normalised `origin` is the hub's own: its host is the request's
/// `Host`, with either scheme.
fn is_own(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    !host.is_empty() && authority == without_default_port(scheme, &host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn auth() -> CookieAuth {
        CookieAuth::new("herald_token", &["https://App.example/".into(), "*".into()])
    }

    fn allowed(lines: &[(&'static str, &'static str)]) -> bool {
        auth().check(&headers(lines)).is_ok()
    }

    #[test]
    fn configured_origins_and_the_hubs_own_may_use_the_cookie() {
        let host = ("host", "hub.example:8080");
        assert!(allowed(&[host, ("origin", "https://app.example")]));
        assert!(allowed(&[host, ("origin", "https://app.example:443")]));
        assert!(allowed(&[host, ("origin", "http://hub.example:8080")]));
        assert!(allowed(&[host, ("origin", "https://HUB.example:8080")]));
        assert!(allowed(&[
            ("host", "hub.example:443"),
            ("origin", "https://hub.example")
        ]));
        assert!(allowed(&[
            ("host", "hub.example"),
            ("origin", "https://hub.example")
        ]));
        for refused in [
            "https://evil.example",
            "http://app.example",
            "https://app.example.evil.example",
            "https://hub.example",
            "null",
            "*",
        ] {
            assert!(!allowed(&[host, ("origin", refused)]), "{refused}");
        }
        assert!(!allowed(&[("origin", "http://hub.example")]), "no Host");
        assert!(!allowed(&[
            host,
            ("origin", "https://app.example"),
            ("origin", "https://app.example"),
        ]));
    }

    #[test]
    fn without_origin_the_fetch_metadata_decides() {
        assert!(allowed(&[]), "not a browser");
        assert!(allowed(&[("sec-fetch-site", "none")]));
        assert!(allowed(&[("sec-fetch-site", "same-origin")]));
        assert!(!allowed(&[("sec-fetch-site", "same-site")]));
        assert!(!allowed(&[("sec-fetch-site", "cross-site")]));
        // The browser vouches for its own page behind a proxy that rewrote Host.
        assert!(allowed(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://hub.example"),
            ("sec-fetch-site", "same-origin"),
        ]));
    }

    #[test]
    fn a_refusal_is_a_403_naming_the_origin() {
        let error = auth()
            .check(&headers(&[("origin", "https://evil.example")]))
            .unwrap_err();
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        assert!(
            error.message().contains("\"https://evil.example\""),
            "{error:?}"
        );
        assert!(error.message().contains("herald_token"), "{error:?}");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let auth = auth();
        assert_eq!(
            auth.value(&headers(&[("cookie", "a=1; herald_token=t")])),
            Some("t")
        );
        assert_eq!(auth.value(&headers(&[("cookie", "herald_token=")])), None);
        assert_eq!(
            auth.value(&headers(&[("cookie", "x_herald_token=t")])),
            None
        );
    }
}
