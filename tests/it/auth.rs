//! Credentials: HS256, RS256, ES256 and JWKS tokens, API keys, cookies, expiry.

use std::path::PathBuf;
use std::time::Duration;

use herald::auth::Claims;
use herald::core::ChannelPattern;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::fixture::TestHub;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn signed(alg: Algorithm, kid: Option<&str>, private: &str, sub: &str) -> String {
    let pem = std::fs::read(fixture(private)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut claims = Claims::new(Some(sub.into()), Duration::from_secs(600));
    claims.herald.subscribe = vec![ChannelPattern::parse("a").unwrap()];
    claims.herald.publish = vec![ChannelPattern::parse("a").unwrap()];
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[tokio::test]
async fn rs256_and_es256_tokens_are_accepted_with_their_public_keys() {
    for (alg, private, public) in [
        (Algorithm::RS256, "rsa-private.pem", "rsa-public.pem"),
        (Algorithm::ES256, "ec-private.pem", "ec-public.pem"),
    ] {
        let hub = TestHub::builder()
            .config(|c| {
                c.auth.jwt_secret = None;
                c.auth.jwt_public_key = Some(fixture(public));
            })
            .start()
            .await;
        let token = signed(alg, None, private, "ana");
        let mut sse = hub.subscribe("channel=a", Some(&token)).await;
        assert_eq!(sse.connected["user"], "ana");
        let (status, _) = hub
            .publish_with(Some(&token), &json!({"channel": "a", "data": 1}))
            .await;
        assert_eq!(status, 200, "{alg:?}");
        assert_eq!(sse.expect().await.data, "1");
        // An HS256 token is refused when no secret is configured.
        let response = hub
            .open(
                "channel=a",
                Some(&TestHub::start().await.token(None, &["a"], &[])),
                None,
            )
            .await;
        assert_eq!(response.status(), 401);
    }
}

#[tokio::test]
async fn jwks_keys_are_chosen_by_kid() {
    let hub = TestHub::builder()
        .config(|c| c.auth.jwks = Some(fixture("jwks.json")))
        .start()
        .await;
    let token = signed(Algorithm::RS256, Some("test-rsa"), "rsa-private.pem", "ana");
    let sse = hub.subscribe("channel=a", Some(&token)).await;
    assert_eq!(sse.connected["user"], "ana");
    let wrong_kid = signed(Algorithm::RS256, Some("other"), "rsa-private.pem", "ana");
    assert_eq!(
        hub.open("channel=a", Some(&wrong_kid), None).await.status(),
        401
    );
}

#[tokio::test]
async fn api_keys_publish_within_their_grants() {
    let hub = TestHub::builder()
        .config(|c| {
            c.auth.api_keys.push(herald::config::ApiKeyConfig {
                name: "backend".into(),
                key: Some("backend-key-1".into()),
                key_sha256: None,
                publish: vec![ChannelPattern::parse("orders:*").unwrap()],
            })
        })
        .start()
        .await;
    let (status, _) = hub
        .publish_with(
            Some("backend-key-1"),
            &json!({"channel": "orders:1", "data": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = hub
        .publish_with(
            Some("backend-key-1"),
            &json!({"channel": "team:1", "data": 1}),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, body) = hub
        .publish_with(
            Some("wrong-key"),
            &json!({"channel": "orders:1", "data": 1}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_token");
    // An API key is for publishing, not for subscribing.
    let response = hub
        .open("channel=orders:1", Some("backend-key-1"), None)
        .await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn tokens_are_read_from_the_query_and_the_cookie() {
    let hub = TestHub::start().await;
    let token = hub.token(Some("ana"), &["a"], &[]);
    let sse = hub
        .subscribe(&format!("channel=a&token={token}"), None)
        .await;
    assert_eq!(sse.connected["user"], "ana");
    let response = hub
        .http
        .get(format!("{}/events?channel=a", hub.url))
        .header("Cookie", format!("theme=dark; herald_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_expiring_token_ends_its_stream() {
    // No leeway: the stream ends at the token's `exp`, not a few seconds later.
    let hub = TestHub::builder()
        .config(|c| c.auth.leeway = Duration::ZERO)
        .start()
        .await;
    let token = hub.token_for(Some("ana"), &["a"], &[], Duration::from_secs(2));
    let mut sse = hub.subscribe("channel=a", Some(&token)).await;
    let started = tokio::time::Instant::now();
    let e = sse.expect().await;
    assert_eq!(e.event, "token_expired");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(sse.next().await.is_none(), "the stream ends");
    let response = hub.open("channel=a", Some(&token), None).await;
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_expired");
}

#[tokio::test]
async fn subscribing_needs_the_right_credential() {
    let hub = TestHub::builder()
        .config(|c| {
            c.namespaces.insert(
                "lobby".into(),
                herald::config::NamespaceConfig {
                    subscribe: Some(herald::core::SubscribeRule::Authenticated),
                    ..Default::default()
                },
            );
        })
        .start()
        .await;
    let cases = [
        ("channel=a", None, 401, "unauthorized"),
        ("channel=lobby:1", None, 401, "unauthorized"),
        ("channel=a", Some("not-a-jwt"), 401, "invalid_token"),
        ("channel=user:bob", None, 401, "unauthorized"),
    ];
    for (query, token, status, code) in cases {
        let response = hub.open(query, token, None).await;
        assert_eq!(response.status().as_u16(), status, "{query}");
        assert!(response.headers().contains_key("www-authenticate"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{query}");
    }
    let only_b = hub.token(Some("ana"), &["b"], &[]);
    let response = hub.open("channel=a", Some(&only_b), None).await;
    assert_eq!(response.status(), 403);
    // Any valid token opens the `authenticated` namespace.
    let sse = hub.subscribe("channel=lobby:1", Some(&only_b)).await;
    assert_eq!(sse.connected["channels"][0], "lobby:1");
    assert!(hub.node.stats().auth_failures >= 1);
}

#[tokio::test]
async fn a_configured_issuer_and_audience_must_be_in_the_token() {
    let hub = TestHub::builder()
        .config(|c| {
            c.auth.issuer = Some("https://auth.example.com".into());
            c.auth.audience = Some("herald".into());
        })
        .start()
        .await;
    let secret = EncodingKey::from_secret(crate::fixture::SECRET.as_bytes());
    let token = |claims: serde_json::Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &secret).unwrap()
    };
    let exp = herald::auth::unix_now() + 600;
    let grants = json!({"subscribe": ["a"], "publish": ["a"]});
    let complete = token(json!({
        "sub": "ana", "exp": exp, "iss": "https://auth.example.com", "aud": "herald",
        "herald": grants,
    }));
    let sse = hub.subscribe("channel=a", Some(&complete)).await;
    assert_eq!(sse.connected["user"], "ana");
    let (status, body) = hub
        .publish_with(Some(&complete), &json!({"channel": "a", "data": 1}))
        .await;
    assert_eq!(status, 200, "{body}");

    for (missing, claims) in [
        (
            "iss",
            json!({"sub": "ana", "exp": exp, "aud": "herald", "herald": grants}),
        ),
        (
            "aud",
            json!({"sub": "ana", "exp": exp, "iss": "https://auth.example.com", "herald": grants}),
        ),
    ] {
        let incomplete = token(claims);
        let response = hub.open("channel=a", Some(&incomplete), None).await;
        assert_eq!(response.status(), 401, "without `{missing}`");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_token");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{missing}`")), "{message}");

        let (status, body) = hub
            .publish_with(Some(&incomplete), &json!({"channel": "a", "data": 2}))
            .await;
        assert_eq!(status, 401, "without `{missing}`: {body}");
        assert_eq!(body["error"]["code"], "invalid_token");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{missing}`")),
            "{body}"
        );
    }
}
