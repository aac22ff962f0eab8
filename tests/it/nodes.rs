//! Fixtures for the brokers of several nodes: brokers built in process over the
//! real services (each with its own key prefix or stream), hub processes of the
//! `herald` binary, and a private `redis-server` a test may kill and restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herald::auth::{Authenticator, Claims};
use herald::broker::{Broker, LocalDelivery};
use herald::config::AuthConfig;
use herald::core::{ChannelPattern, Fanout, HistoryPolicy, NamespacePolicy, Policies};
use herald::stats::Stats;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::fixture::{PATIENCE, SECRET};

/// The shared Redis of this machine.
pub(crate) const REDIS: &str = "127.0.0.1:6379";
/// The shared NATS (with JetStream) of this machine.
pub(crate) const NATS: &str = "127.0.0.1:4222";

/// A name no other test run uses.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Redis,
    Nats,
}

/// Where a broker keeps its data, so two brokers can share it (two nodes) and the
/// test can remove it afterwards.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) kind: Kind,
    /// The Redis key prefix or the NATS stream name.
    pub(crate) name: String,
}

impl Place {
    /// A fresh place for `kind`, or `None` (the test is skipped) when its service is
    /// not running.
    pub(crate) async fn new(kind: Kind) -> Option<Self> {
        let up = match kind {
            Kind::Memory => true,
            Kind::Redis => crate::fixture::service_available("Redis", REDIS).await,
            Kind::Nats => crate::fixture::service_available("NATS", NATS).await,
        };
        up.then(|| Self {
            kind,
            name: unique(match kind {
                Kind::Nats => "HERALDTEST_",
                _ => "heraldtest-",
            }),
        })
    }

    /// The NATS subject of this place's stream.
    pub(crate) fn subject(&self) -> String {
        format!("heraldtest.{}.events", self.name.to_lowercase())
    }

    /// The environment a hub process needs to use this place.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        match self.kind {
            Kind::Memory => vec![("HERALD_BROKER".into(), "memory".into())],
            Kind::Redis => vec![
                ("HERALD_BROKER".into(), format!("redis://{REDIS}")),
                ("HERALD_REDIS__PREFIX".into(), self.name.clone()),
            ],
            Kind::Nats => vec![
                ("HERALD_BROKER".into(), format!("nats://{NATS}")),
                ("HERALD_NATS__STREAM".into(), self.name.clone()),
                ("HERALD_NATS__SUBJECT".into(), self.subject()),
                ("HERALD_NATS__STORAGE".into(), "memory".into()),
            ],
        }
    }

    /// A broker of one node over this place, delivering into `fanout`.
    pub(crate) fn broker(&self, policies: Policies, fanout: Arc<Fanout>) -> Arc<dyn Broker> {
        let delivery = LocalDelivery::new(fanout, Arc::new(Stats::default()));
        let policies = Arc::new(policies);
        match self.kind {
            Kind::Memory => Arc::new(herald::broker::memory::MemoryBroker::new(
                policies, delivery,
            )),
            Kind::Redis => {
                let config = herald::config::RedisConfig {
                    prefix: self.name.clone(),
                    ..Default::default()
                };
                Arc::new(
                    herald::broker::redis::RedisBroker::start(
                        &format!("redis://{REDIS}"),
                        &config,
                        policies,
                        delivery,
                    )
                    .unwrap(),
                )
            }
            Kind::Nats => {
                let config = herald::config::NatsConfig {
                    stream: self.name.clone(),
                    subject: self.subject(),
                    storage: herald::config::NatsStorage::Memory,
                    ..Default::default()
                };
                Arc::new(
                    herald::broker::nats::NatsBroker::start(
                        &format!("nats://{NATS}"),
                        &config,
                        policies,
                        delivery,
                    )
                    .unwrap(),
                )
            }
        }
    }

    /// Removes what the tests left in the service. Brokers still running may be
    /// writing again for a moment (a stream deleted under a node is created again
    /// when it reconnects), so it removes twice.
    pub(crate) async fn clean(&self) {
        for round in 0..2 {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            match self.kind {
                Kind::Memory => return,
                Kind::Redis => clean_redis(&format!("redis://{REDIS}"), &self.name).await,
                Kind::Nats => {
                    if let Ok(client) = async_nats::connect(NATS).await {
                        let js = async_nats::jetstream::new(client);
                        let _ = js.delete_stream(&self.name).await;
                    }
                }
            }
        }
    }
}

/// Deletes every key under `{prefix}:`.
pub(crate) async fn clean_redis(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let pattern = format!("{{{prefix}}}:*");
    let mut cursor: u64 = 0;
    loop {
        let reply: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await;
        let Ok((next, keys)) = reply else { return };
        if !keys.is_empty() {
            let _: Result<u64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Policies with one default history bound.
pub(crate) fn policies(size: usize, ttl: Duration) -> Policies {
    Policies {
        default: NamespacePolicy {
            history: HistoryPolicy { size, ttl },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Waits until `broker` is ready.
pub(crate) async fn ready(broker: &dyn Broker) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match broker.check().await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("the broker did not become ready: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Mints tokens the way every test hub process accepts them.
pub(crate) fn token(subscribe: &[&str], publish: &[&str]) -> String {
    let auth = Authenticator::from_config(&AuthConfig {
        jwt_secret: Some(SECRET.into()),
        ..Default::default()
    })
    .unwrap();
    let mut claims = Claims::new(Some("tester".into()), Duration::from_secs(3600));
    claims.herald.subscribe = subscribe
        .iter()
        .map(|p| ChannelPattern::parse(p).unwrap())
        .collect();
    claims.herald.publish = publish
        .iter()
        .map(|p| ChannelPattern::parse(p).unwrap())
        .collect();
    auth.mint(&claims).unwrap()
}

/// A `herald serve` process on a free port.
pub(crate) struct Node {
    pub(crate) url: String,
    child: Child,
}

impl Node {
    /// Starts a hub with the test secret and `env`; returns once it listens.
    pub(crate) async fn start(env: &[(String, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("HERALD_LISTEN")
            .env_remove("HERALD_BROKER")
            .env("HERALD_JWT_SECRET", SECRET)
            .env("HERALD_STORE__PATH", ":memory:")
            .env(
                "HERALD_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "herald=error".into()),
            )
            .env("HERALD_SHUTDOWN__GRACE", "1s")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(at) = line.find("http://") {
                    return line[at..].trim().to_owned();
                }
            }
            panic!("the hub exited before listening");
        })
        .await
        .expect("the hub listens");
        // Keep reading its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { url, child }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub(crate) async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// The status of `/readyz`.
    pub(crate) async fn readyz(&self) -> u16 {
        match http().get(format!("{}/readyz", self.url)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits until `/readyz` answers `status`.
    pub(crate) async fn wait_ready(&self, status: u16) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.readyz().await != status {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never answered /readyz {status}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes `body`; returns the status and the answer.
    pub(crate) async fn publish(
        &self,
        token: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = http()
            .post(format!("{}/publish", self.url))
            .bearer_auth(token)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match response {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(serde_json::Value::Null))
            }
            Err(_) => (0, serde_json::Value::Null),
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One received event: its id and data.
pub(crate) type Received = (String, String);

/// An SSE reader on a hub: it records every event (id, data) and tells when the
/// stream ended, so the test can reconnect elsewhere with the last id.
pub(crate) struct Reader {
    events: tokio::sync::mpsc::UnboundedReceiver<Option<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reader {
    /// Opens `GET /events?{query}` on `url`, resuming after `last` if given, and
    /// returns once the stream is live (`connected` received). `None` if it could not.
    pub(crate) async fn open(
        url: &str,
        query: &str,
        token: &str,
        last: Option<&str>,
    ) -> Option<Self> {
        let mut request = http_stream()
            .get(format!("{url}/events?{query}"))
            .bearer_auth(token);
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        let response = tokio::time::timeout(PATIENCE, request.send())
            .await
            .ok()?
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        let mut stream = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
        let first = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .ok()??
            .ok()?;
        if first.event != "connected" {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                if event.event == "reset" {
                    let _ = tx.send(Some(("reset".into(), event.data)));
                    continue;
                }
                if tx.send(Some((event.id, event.data))).is_err() {
                    return;
                }
            }
            let _ = tx.send(None);
        });
        Some(Self { events: rx, task })
    }

    /// The next event, `None` when the stream ended; fails after [`PATIENCE`].
    pub(crate) async fn next(&mut self) -> Option<Received> {
        match tokio::time::timeout(PATIENCE, self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => None,
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }
}

fn http_stream() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A `redis-server` of the test's own, on its own port and directory, with an
/// append-only file synced on every write (so a kill loses nothing accepted).
pub(crate) struct PrivateRedis {
    pub(crate) port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one, or `None` (the test is skipped) when `redis-server` is missing.
    pub(crate) async fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var("HERALD_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("redis-server is required (HERALD_REQUIRE_SERVICES=1) but not installed");
            }
            eprintln!(
                "SKIP: redis-server is not installed; set HERALD_REQUIRE_SERVICES=1 to make this a failure"
            );
            return None;
        }
        let port = free_port();
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart().await;
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), with the data it had; returns once it answers.
    pub(crate) async fn restart(&mut self) {
        let dir: PathBuf = self.dir.path().to_owned();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server at once (SIGKILL).
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// A port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server` with JetStream of the test's own, on its own port and storage
/// directory, which a test may kill and restart.
pub(crate) struct PrivateNats {
    pub(crate) port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    /// Reserves a port and a directory without starting the server, or `None` (the
    /// test is skipped) when `nats-server` is missing.
    pub(crate) async fn new() -> Option<Self> {
        let found = Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var("HERALD_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("nats-server is required (HERALD_REQUIRE_SERVICES=1) but not installed");
            }
            eprintln!(
                "SKIP: nats-server is not installed; set HERALD_REQUIRE_SERVICES=1 to make this a failure"
            );
            return None;
        }
        Some(Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) with the data it had; returns once it answers.
    pub(crate) async fn start(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server at once (SIGKILL).
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}
