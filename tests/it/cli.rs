//! The `herald` binary: serve, token, publish, check-config.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::fixture::process::{HubProcess, herald_command as herald};
use crate::fixture::{SECRET, TestHub, get_json};

#[tokio::test]
async fn a_killed_hub_loses_no_accepted_notification() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("inbox.db");
    let db = db.to_str().unwrap();
    let auth = herald::auth::Authenticator::from_config(&herald::config::AuthConfig {
        jwt_secret: Some(SECRET.into()),
        ..Default::default()
    })
    .unwrap();
    let mint = |sub: &str, publish: &str| {
        let mut claims = herald::auth::Claims::new(Some(sub.into()), Duration::from_secs(600));
        if !publish.is_empty() {
            claims.herald.publish = vec![herald::core::ChannelPattern::parse(publish).unwrap()];
        }
        auth.mint(&claims).unwrap()
    };
    let (publisher, alice) = (mint("svc", "*"), mint("alice", ""));
    let http = reqwest::Client::new();

    let mut hub = HubProcess::builder()
        .env("HERALD_STORE__PATH", db)
        .start()
        .await;
    let url = hub.url.clone();
    let mut accepted = Vec::new();
    for i in 0..20 {
        let response = http
            .post(format!("{url}/api/notifications"))
            .bearer_auth(&publisher)
            .json(&serde_json::json!({"user": "alice", "title": format!("n{i}"), "type": "info"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        accepted.push(body["notifications"][0]["id"].as_str().unwrap().to_owned());
    }
    // No graceful shutdown: the process is killed outright.
    hub.kill().await;

    let mut hub = HubProcess::builder()
        .env("HERALD_STORE__PATH", db)
        .start()
        .await;
    let url = hub.url.clone();
    let page = get_json(
        &http,
        &format!("{url}/api/notifications?limit=100"),
        Some(&alice),
    )
    .await;
    let mut listed: Vec<String> = page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    listed.reverse();
    assert_eq!(listed, accepted);
    assert_eq!(page["unread_count"], 20);
    hub.kill().await;
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("herald.db");
    let out = herald()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_STORE__PATH", path.to_str().unwrap())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.path"));
    let out = herald()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_STORE__KIND", "postgres")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.url"));
}

#[tokio::test]
async fn a_bad_config_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "[limits]\nmax_connections = -3\n").unwrap();
    let out = herald()
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("limits.max_connections"), "{stderr}");

    let out = herald()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_SSE__HEARTBEAT", "soon")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sse.heartbeat"));

    let out = herald()
        .args(["serve", "--listen", "nowhere"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`listen`"));

    std::fs::write(&file, "[sse]\nheartbeat = '10s'\n").unwrap();
    let out = herald()
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("heartbeat"));
}

#[tokio::test]
async fn token_mints_a_jwt_the_hub_accepts() {
    let hub = TestHub::start().await;
    let out = herald()
        .args([
            "token",
            "--sub",
            "ana",
            "--subscribe",
            "team:*",
            "--publish",
            "team:1",
            "--ttl",
            "60",
        ])
        .env("HERALD_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let identity = hub.node.authenticator().authenticate(token.trim()).unwrap();
    assert_eq!(identity.user.as_deref(), Some("ana"));
    assert!(identity.subscribe[0].matches("team:9"));
    assert!(identity.may_publish(&herald::ChannelName::new("team:1").unwrap()));

    let out = herald()
        .args(["token", "--sub", "ana"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.jwt_secret"));
}

#[tokio::test]
async fn publish_sends_an_event_from_the_shell() {
    let hub = TestHub::start().await;
    let token = hub.token(None, &["a"], &[]);
    let mut sse = hub.subscribe("channel=a", Some(&token)).await;
    let out = herald()
        .args([
            "publish",
            "--url",
            &hub.url,
            "--channel",
            "a",
            "--type",
            "ping",
            r#"{"n": 1}"#,
        ])
        .env("HERALD_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"id\""));
    let e = sse.expect().await;
    assert_eq!((e.event.as_str(), e.data.as_str()), ("ping", r#"{"n":1}"#));

    let out = herald()
        .args([
            "publish",
            "--url",
            &hub.url,
            "--channel",
            "a",
            "--token",
            "wrong",
            "x",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[tokio::test]
async fn serve_prints_its_address_and_stops_on_sigterm() {
    let mut child = herald()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HERALD_SHUTDOWN__GRACE", "2s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    let mut secret = None;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        if let Some(rest) = line.split("listening on ").nth(1) {
            url = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.split("HERALD_JWT_SECRET=").nth(1) {
            secret = Some(rest.trim().to_owned());
            break;
        }
    }
    let url = url.expect("the address is printed");
    assert!(
        secret.is_some_and(|s| s.len() >= 32),
        "a development secret is printed"
    );
    let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let demo = reqwest::get(format!("{url}/")).await.unwrap();
    assert_eq!(demo.status(), 200);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn serve_says_when_the_open_file_limit_caps_max_connections() {
    // A shell lowers the open-file limit (soft and hard) to 256 before starting the
    // hub, whose default `limits.max_connections` is 10,000. The shell gets the
    // environment every test hub process has.
    let base = herald();
    let mut shell = tokio::process::Command::new("sh");
    for (key, value) in base.as_std().get_envs() {
        match value {
            Some(value) => shell.env(key, value),
            None => shell.env_remove(key),
        };
    }
    let mut child = shell
        .args([
            "-c",
            "ulimit -n 256 && exec \"$0\" serve --listen 127.0.0.1:0",
        ])
        .arg(env!("CARGO_BIN_EXE_herald"))
        .env_remove("HERALD_LIMITS__MAX_CONNECTIONS")
        .env("HERALD_JWT_SECRET", SECRET)
        .env("HERALD_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut notice = None;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        if line.contains("limits.max_connections") {
            notice = Some(line);
            break;
        }
    }
    let _ = child.kill().await;
    let notice = notice.expect("the hub says that the open-file limit caps max_connections");
    assert!(notice.starts_with("warning: "), "{notice}");
    assert!(
        notice.contains("lowered from 10000 to 192"),
        "names both figures: {notice}"
    );
    assert!(notice.contains("open-file limit"), "{notice}");
    assert!(notice.contains("256"), "names the limit: {notice}");
}
