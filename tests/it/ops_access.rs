//! Who may read the counters: `/stats` and `/metrics` behind `ops.token`, and on an
//! address of their own with `ops.listen` (no longer on the main listener), while
//! `/healthz` and `/readyz` stay open on both.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::fixture::process::herald_command;
use crate::fixture::{PATIENCE, SECRET, TestHub};

const OPS_TOKEN: &str = "ops-token-3b3b-0123456789";

/// `GET url` with `token` as its bearer credential, if any: the status, the
/// `WWW-Authenticate` header and the body.
async fn get(url: &str, token: Option<&str>) -> (StatusCode, Option<String>, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, response.text().await.unwrap())
}

/// Asserts a JSON error with `status` and `code`.
fn assert_error(answer: &(StatusCode, Option<String>, String), status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.2);
    let body: Value = serde_json::from_str(&answer.2).expect("a JSON body");
    assert_eq!(body["error"]["code"], code, "{body}");
}

#[tokio::test]
async fn with_an_ops_token_the_counters_need_it_and_health_does_not() {
    let hub = TestHub::builder()
        .config(|c| c.ops.token = Some(OPS_TOKEN.into()))
        .start()
        .await;
    for path in ["/metrics", "/stats"] {
        let url = format!("{}{path}", hub.url);
        let missing = get(&url, None).await;
        assert_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(missing.1.is_some(), "{path}: WWW-Authenticate");
        let wrong = get(&url, Some("ops-token-3b3b-0123456788")).await;
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "invalid_token");
        let short = get(&url, Some("x")).await;
        assert_error(&short, StatusCode::UNAUTHORIZED, "invalid_token");
        let (status, _, body) = get(&url, Some(OPS_TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body.contains("auth_failures"), "{path}: {body}");
    }
    // A user's or publisher's token is not the ops token.
    let user = hub.token(Some("ana"), &["*"], &["*"]);
    let answer = get(&format!("{}/metrics", hub.url), Some(&user)).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_token");
    for path in ["/healthz", "/readyz"] {
        let (status, _, body) = get(&format!("{}{path}", hub.url), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
}

#[tokio::test]
async fn with_ops_listen_the_counters_are_served_there_only() {
    let hub = TestHub::builder()
        .config(|c| {
            c.ops.listen = Some("127.0.0.1:0".into());
            c.ops.token = Some(OPS_TOKEN.into());
        })
        .start()
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(herald::serve_ops(listener, hub.node.clone()));

    for path in ["/metrics", "/stats"] {
        let main = get(&format!("{}{path}", hub.url), Some(OPS_TOKEN)).await;
        assert_error(&main, StatusCode::NOT_FOUND, "not_found");
        let (status, _, body) = get(&format!("{ops}{path}"), Some(OPS_TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let without = get(&format!("{ops}{path}"), None).await;
        assert_error(&without, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    for path in ["/healthz", "/readyz"] {
        for base in [&hub.url, &ops] {
            let (status, _, body) = get(&format!("{base}{path}"), None).await;
            assert_eq!(status, StatusCode::OK, "{base}{path}: {body}");
        }
    }
    // Nothing else is served on the ops address.
    let token = hub.token(Some("ana"), &["a"], &[]);
    let events = get(&format!("{ops}/events?channel=a"), Some(&token)).await;
    assert_error(&events, StatusCode::NOT_FOUND, "not_found");

    // It stops with the node.
    hub.node.shutdown();
    tokio::time::timeout(PATIENCE, served)
        .await
        .expect("the ops listener stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn serve_prints_the_ops_address_and_serves_the_counters_there() {
    let mut child = herald_command()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_JWT_SECRET", SECRET)
        .env("HERALD_OPS__LISTEN", "127.0.0.1:0")
        .env("HERALD_SHUTDOWN__GRACE", "2s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut main, mut ops) = (None, None);
    while let Ok(Ok(Some(line))) = tokio::time::timeout(PATIENCE, lines.next_line()).await {
        if let Some(rest) = line.split("listening on ").nth(1) {
            main = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("ops on ") {
            ops = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let main = main.expect("the address is printed");
    let ops = ops.expect("the ops address is printed");
    assert_ne!(main, ops);
    let (status, _, body) = get(&format!("{ops}/metrics"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("herald_connections"), "{body}");
    let (status, _, _) = get(&format!("{ops}/readyz"), None).await;
    assert_eq!(status, StatusCode::OK);
    let on_main = get(&format!("{main}/metrics"), None).await;
    assert_error(&on_main, StatusCode::NOT_FOUND, "not_found");

    // SIGTERM stops both listeners and the process.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn check_config_hides_the_ops_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        format!("[ops]\nlisten = \"127.0.0.1:9090\"\ntoken = \"{OPS_TOKEN}\"\n"),
    )
    .unwrap();
    let out = herald_command()
        .env("HERALD_JWT_SECRET", SECRET)
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(OPS_TOKEN), "{stdout}");
    assert!(stdout.contains("#   ops.token: "), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "token = \"{}\"",
            herald::config::SECRET_PLACEHOLDER
        )),
        "{stdout}"
    );
    assert!(stdout.contains("listen = \"127.0.0.1:9090\""), "{stdout}");
}
