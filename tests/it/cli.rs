//! The `herald` binary: serve, token, publish, check-config.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::fixture::process::{HubProcess, herald_command as herald};
use crate::fixture::{PATIENCE, Place, PrivateNats, PrivateRedis, SECRET, TestHub, eventually};

#[tokio::test]
async fn a_killed_hub_loses_no_accepted_notification() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("inbox.db");
    let db = db.to_str().unwrap();
    let http = reqwest::Client::new();

    let mut hub = HubProcess::builder()
        .env("HERALD_STORE__PATH", db)
        .start()
        .await;
    // Accepted by the hub started again too: both go by the test secret.
    let publisher = hub.token(Some("svc"), &[], &["*"]);
    let alice = hub.token(Some("alice"), &[], &[]);
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
    let page = hub.get_json("/api/notifications?limit=100", &alice).await;
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

/// One distinct secret in each place a configuration can hold one.
const PLANTED: &[&str] = &[
    "pw-broker-41a7",
    "pw-shard-5c2e",
    "pw-source-93d0",
    "pw-postgres-c7e2",
    "pw-store-1d9a",
    "pw-webhook-0b3c",
    "tok-webhook-8d4f",
    "webhook-secret-6a1e-0123456789",
    "api-key-7e15-abcdef",
    "jwt-secret-2f6b-0123456789",
    "pw-nats-3e8b",
    "tok-nats-a5a5",
];

/// The JWT secret planted in [`with_secrets`].
const PLANTED_JWT_SECRET: &str = "jwt-secret-2f6b-0123456789";

/// A configuration file with a planted secret in every place but the broker,
/// whose settings `broker` gives. Every server is on a closed port.
fn with_secrets(broker: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
{broker}

[redis_source]
url = "redis://source:pw-source-93d0@127.0.0.1:1"

[[redis_source.routes]]
pattern = "user:*"

[auth]
jwt_secret = "{PLANTED_JWT_SECRET}"

[[auth.api_keys]]
name = "backend"
key = "api-key-7e15-abcdef"
publish = ["orders:*"]

[webhooks]
url = "http://hook:pw-webhook-0b3c@127.0.0.1:1/hooks?token=tok-webhook-8d4f"
secret = "webhook-secret-6a1e-0123456789"

[postgres]
url = "postgres://herald:pw-postgres-c7e2@127.0.0.1:1/app"

[[postgres.routes]]
notify = "tasks"
channels = ["team:{{team_id}}"]
when = {{ op = ["insert", "update"] }}

[store]
kind = "postgres"
url = "postgres://store:pw-store-1d9a@127.0.0.1:1/inbox"
"#
    )
}

/// The planted secrets found in `text`.
fn secrets_in(text: &str) -> Vec<&'static str> {
    PLANTED
        .iter()
        .copied()
        .filter(|s| text.contains(s))
        .collect()
}

#[tokio::test]
async fn check_config_prints_no_secret_and_its_output_is_accepted_back() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = [
        "broker = \"redis://herald:pw-broker-41a7@127.0.0.1:1/0\"\n[redis]\nshards = [\"redis://herald:pw-broker-41a7@127.0.0.1:1/0\", \"redis://:pw-shard-5c2e@127.0.0.1:1/1\"]",
        "broker = \"nats://herald:pw-nats-3e8b@127.0.0.1:1,127.0.0.1:2\"",
        "broker = \"nats://tok-nats-a5a5@127.0.0.1:1\"",
    ];
    for (i, broker) in brokers.into_iter().enumerate() {
        let file = dir.path().join(format!("secrets-{i}.toml"));
        let text = with_secrets(broker);
        std::fs::write(&file, &text).unwrap();
        let planted = secrets_in(&text);
        assert!(planted.len() >= 9, "{planted:?}");
        let out = herald()
            .arg("check-config")
            .arg("--config")
            .arg(&file)
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stderr}");
        assert_eq!(secrets_in(&stdout), Vec::<&str>::new(), "{stdout}");
        assert_eq!(secrets_in(&stderr), Vec::<&str>::new(), "{stderr}");
        assert!(stdout.contains(":REDACTED@127.0.0.1:1") || stdout.contains("//REDACTED@"));
        assert!(stdout.contains("# Secrets are hidden"), "{stdout}");

        // The output is a configuration file: checked again, it passes.
        let printed = dir.path().join(format!("printed-{i}.toml"));
        std::fs::write(&printed, stdout.as_bytes()).unwrap();
        let again = herald()
            .arg("check-config")
            .arg("--config")
            .arg(&printed)
            .output()
            .await
            .unwrap();
        assert!(
            again.status.success(),
            "{}\n{stdout}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(
            secrets_in(&String::from_utf8_lossy(&again.stdout)),
            Vec::<&str>::new()
        );

        // A hub starts with it, but never verifies (or signs) with the placeholder
        // that stands in for its secrets: a token signed with it is refused.
        let mut hub = LoggingHub::start(&printed).await;
        hub.wait_for(&["auth.jwt_secret holds the placeholder"])
            .await;
        let forged = herald::auth::Authenticator::from_config(&herald::config::AuthConfig {
            jwt_secret: Some(herald::config::SECRET_PLACEHOLDER.into()),
            ..Default::default()
        })
        .unwrap()
        .mint(&herald::auth::Claims::new(
            Some("mallory".into()),
            Duration::from_secs(60),
        ))
        .unwrap();
        let answer = reqwest::Client::new()
            .get(format!("{}/events?channel=user:mallory", hub.url))
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
        hub.kill().await;
    }
}

/// A `herald serve` with `HERALD_LOG=debug` whose output is kept for reading.
struct LoggingHub {
    url: String,
    child: tokio::process::Child,
    /// Every line of its standard output and error so far.
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: String,
}

impl LoggingHub {
    async fn start(config: &std::path::Path) -> Self {
        let mut child = herald()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("HERALD_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        forward(child.stdout.take().unwrap(), tx.clone());
        forward(child.stderr.take().unwrap(), tx);
        let mut hub = Self {
            url: String::new(),
            child,
            lines,
            seen: String::new(),
        };
        let listening = hub.wait_for(&["listening on "]).await;
        let at = listening.find("http://").expect("an address");
        hub.url = listening[at..].trim().to_owned();
        hub
    }

    /// Reads output until each of `markers` has appeared on some line; returns the
    /// line of the first.
    async fn wait_for(&mut self, markers: &[&str]) -> String {
        let mut missing: Vec<&str> = markers
            .iter()
            .copied()
            .filter(|m| !self.seen.contains(m))
            .collect();
        let mut first = self
            .seen
            .lines()
            .find(|l| l.contains(markers[0]))
            .map(str::to_owned);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !missing.is_empty() {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("never logged {missing:?}; logged:\n{}", self.seen))
                .unwrap_or_else(|| panic!("exited before logging {missing:?}:\n{}", self.seen));
            missing.retain(|m| !line.contains(m));
            if first.is_none() && line.contains(markers[0]) {
                first = Some(line.clone());
            }
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        first.unwrap_or_default()
    }

    /// Kills the hub and returns all it printed.
    async fn kill(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        while let Some(line) = self.lines.recv().await {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        self.seen
    }
}

/// Sends each line `output` gives to `lines`.
fn forward(
    output: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    lines: tokio::sync::mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(output).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
}

/// `/readyz` until its body contains `wanted`: the body.
async fn readyz_saying(url: &str, wanted: &str) -> String {
    eventually(format!("/readyz to say {wanted:?}"), || async {
        let body = reqwest::get(format!("{url}/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains(wanted) {
            Ok(body)
        } else {
            Err(body)
        }
    })
    .await
}

#[tokio::test]
async fn a_hub_whose_services_fail_logs_and_shows_no_secret() {
    // The first Redis shard answers, so /readyz names the second, unreachable one.
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    let broker = format!(
        "broker = \"redis\"\n[redis]\nshards = [\"{}\", \"redis://:pw-shard-5c2e@127.0.0.1:1/1\"]",
        redis.url()
    );
    std::fs::write(&file, with_secrets(&broker)).unwrap();
    let mut hub = LoggingHub::start(&file).await;

    // A subscriber joins a presence channel, so a webhook is attempted; the inbox
    // is asked, so the store is tried.
    let auth = herald::auth::Authenticator::from_config(&herald::config::AuthConfig {
        jwt_secret: Some(PLANTED_JWT_SECRET.into()),
        ..Default::default()
    })
    .unwrap();
    let token = crate::fixture::mint(&auth, Some("ana"), &["*"], &[], Duration::from_secs(600));
    let events = reqwest::Client::new()
        .get(format!("{}/events?channel=demo:board", hub.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let inbox = reqwest::Client::new()
        .get(format!("{}/api/notifications", hub.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(inbox.status(), 503);
    let ready = readyz_saying(&hub.url, "redis shard").await;
    assert!(ready.contains("redis://:REDACTED@127.0.0.1:1/1"), "{ready}");

    hub.wait_for(&[
        "redis source: ",
        "postgres source down",
        "store unavailable",
        "webhook not delivered",
    ])
    .await;
    drop(events);
    let output = hub.kill().await;
    assert_eq!(secrets_in(&ready), Vec::<&str>::new(), "{ready}");
    assert_eq!(secrets_in(&output), Vec::<&str>::new(), "{output}");
}

#[tokio::test]
async fn a_hub_that_cannot_reach_nats_logs_no_credential() {
    let dir = tempfile::tempdir().unwrap();
    for (i, broker) in [
        "broker = \"nats://herald:pw-nats-3e8b@127.0.0.1:1\"",
        "broker = \"nats://tok-nats-a5a5@127.0.0.1:1\"",
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.path().join(format!("herald-{i}.toml"));
        std::fs::write(&file, with_secrets(broker)).unwrap();
        let mut hub = LoggingHub::start(&file).await;
        // async-nats logs each attempt, naming the server, at debug level.
        hub.wait_for(&["connection attempt failed", "postgres source down"])
            .await;
        let ready = readyz_saying(&hub.url, "nats").await;
        let output = hub.kill().await;
        assert_eq!(secrets_in(&ready), Vec::<&str>::new(), "{ready}");
        assert_eq!(secrets_in(&output), Vec::<&str>::new(), "{output}");
    }
}

#[tokio::test]
async fn a_nats_broker_url_with_credentials_logs_the_hub_in() {
    let Some(mut nats) = PrivateNats::new().await else {
        return;
    };
    nats.start_with(&["--user", "herald", "--pass", "p@ss-9c9c"])
        .await;
    let place = Place::on_nats(&nats);
    let with_login = nats.url().replace("nats://", "nats://herald:p%40ss-9c9c@");
    let hub = HubProcess::builder()
        .on(&place)
        .env("HERALD_BROKER", with_login)
        .start()
        .await;
    hub.wait_ready(200).await;
    let (status, answer) = hub
        .publish_with(
            Some(&hub.token(Some("tester"), &[], &["a"])),
            &serde_json::json!({"channel": "a", "data": 1}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}
