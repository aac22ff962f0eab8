//! Behind a reverse proxy (`http.trusted_proxies`): the client address a trusted
//! proxy forwards is the one per-address limits count, on both paths a stream is
//! served by; from anyone else, forwarded headers change nothing.

use herald::config::ForwardedHeader;
use reqwest::StatusCode;
use serde_json::Value;

use crate::fixture::TestHub;

const APP: &str = "https://app.example";

/// How a test hub serves its streams: straight on the socket, or through the
/// router (a CORS policy and an `Origin` take that path).
#[derive(Debug, Clone, Copy)]
enum Path {
    Direct,
    Router,
}

/// A hub allowing one stream per client address, trusting `proxies`.
async fn hub(proxies: &[&str], header: ForwardedHeader, path: Path) -> TestHub {
    let proxies: Vec<String> = proxies.iter().map(|p| (*p).to_owned()).collect();
    TestHub::builder()
        .config(move |c| {
            c.limits.max_connections_per_ip = 1;
            c.http.trusted_proxies = proxies;
            c.http.forwarded_header = header;
            if let Path::Router = path {
                c.http.cors_origins = vec![APP.into()];
            }
        })
        .start()
        .await
}

/// Opens a stream on `hub` from 127.0.0.1 with `headers`; the response is kept
/// (and so the stream open) by the caller.
async fn open(hub: &TestHub, path: Path, headers: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let token = hub.token(None, &["a"], &[]);
    let mut request = client
        .get(format!("{}/events?channel=a", hub.url))
        .bearer_auth(token);
    if let Path::Router = path {
        request = request.header("origin", APP);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Asserts that a stream was refused by the per-address limit.
async fn assert_per_address_refusal(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    assert!(response.headers().contains_key("retry-after"), "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "too_many_connections_from_address",
        "{what}"
    );
}

#[tokio::test]
async fn clients_forwarded_by_a_trusted_proxy_are_limited_each() {
    for path in [Path::Direct, Path::Router] {
        let hub = hub(&["127.0.0.1/32"], ForwardedHeader::XForwardedFor, path).await;
        let first = open(&hub, path, &[("x-forwarded-for", "1.2.3.4")]).await;
        assert_eq!(first.status(), StatusCode::OK, "{path:?}");
        let other = open(&hub, path, &[("x-forwarded-for", "5.6.7.8")]).await;
        assert_eq!(other.status(), StatusCode::OK, "{path:?}: another client");
        let again = open(&hub, path, &[("x-forwarded-for", "1.2.3.4")]).await;
        assert_per_address_refusal(again, &format!("{path:?}: the same client")).await;
        // A chain through another trusted proxy names the same client.
        let chained = open(&hub, path, &[("x-forwarded-for", "1.2.3.4, 127.0.0.1")]).await;
        assert_per_address_refusal(chained, &format!("{path:?}: 1.2.3.4 via a proxy")).await;
        // What the client wrote left of its own address is not believed.
        let forged = open(&hub, path, &[("x-forwarded-for", "9.9.9.9, 5.6.7.8")]).await;
        assert_per_address_refusal(forged, &format!("{path:?}: 5.6.7.8 forging")).await;
        // Garbage at the right end counts as the proxy itself.
        let unknown = open(&hub, path, &[("x-forwarded-for", "unknown")]).await;
        assert_eq!(unknown.status(), StatusCode::OK, "{path:?}: as 127.0.0.1");
        let unknown = open(&hub, path, &[("x-forwarded-for", "1.2.3.4, garbage")]).await;
        assert_per_address_refusal(unknown, &format!("{path:?}: 127.0.0.1 again")).await;
        drop((first, other));
    }
}

#[tokio::test]
async fn rfc_7239_forwarded_is_read_when_configured_and_then_only_it() {
    let path = Path::Direct;
    let hub = hub(&["127.0.0.0/8"], ForwardedHeader::Forwarded, path).await;
    let v6 = [("forwarded", "for=\"[2001:db8::17]:4711\";proto=https")];
    let first = open(&hub, path, &v6).await;
    assert_eq!(first.status(), StatusCode::OK);
    let other = open(&hub, path, &[("forwarded", "for=192.0.2.60")]).await;
    assert_eq!(other.status(), StatusCode::OK);
    let again = open(&hub, path, &[("forwarded", "for=\"[2001:db8::17]:1\"")]).await;
    assert_per_address_refusal(again, "the same IPv6 client, another port").await;
    // X-Forwarded-For is not read: these are the proxy's own first and second.
    let proxy = open(&hub, path, &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(proxy.status(), StatusCode::OK);
    let proxy_again = open(&hub, path, &[("x-forwarded-for", "198.51.100.2")]).await;
    assert_per_address_refusal(proxy_again, "the proxy itself").await;
    drop((first, other, proxy));
}

#[tokio::test]
async fn without_a_trusted_proxy_forwarded_headers_change_nothing() {
    for (proxies, path) in [
        (&[][..], Path::Direct),
        (&[][..], Path::Router),
        (&["10.0.0.0/8", "::1"][..], Path::Direct),
        (&["10.0.0.0/8", "::1"][..], Path::Router),
    ] {
        for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            let hub = hub(proxies, header, path).await;
            let what = format!("{proxies:?} {path:?} {header:?}");
            let first = open(&hub, path, &[("x-forwarded-for", "1.2.3.4")]).await;
            assert_eq!(first.status(), StatusCode::OK, "{what}");
            let forged = [("x-forwarded-for", "5.6.7.8"), ("forwarded", "for=5.6.7.8")];
            let second = open(&hub, path, &forged).await;
            assert_per_address_refusal(second, &what).await;
            drop(first);
        }
    }
}
