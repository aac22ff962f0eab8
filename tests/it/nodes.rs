//! Hub processes of several nodes sharing a broker (Redis on 127.0.0.1:6379, NATS
//! with JetStream on 127.0.0.1:4222, or private servers the tests kill): every
//! subscriber gets every event once and in order, a killed hub's subscribers
//! resume on another with nothing lost, and hubs recover by themselves when their
//! broker comes back.
//!
//! Each test uses a key prefix or stream of its own and removes it at the end. A
//! test whose service is not running is skipped with a `SKIP` line, or fails with
//! `HERALD_REQUIRE_SERVICES=1`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::fixture::process::ProcessBuilder;
use crate::fixture::{
    Client, HubProcess, Kind, PATIENCE, Place, PrivateNats, PrivateRedis, Sse, TestHub, eventually,
};

/// What a reader that subscribes to `channels` expects of event `i`: events go to
/// `a`, `b`, or both, in turn.
fn targets(i: usize) -> serde_json::Value {
    match i % 3 {
        0 => json!({"channel": "a"}),
        1 => json!({"channel": "b"}),
        _ => json!({"channels": ["a", "b"]}),
    }
}

fn wanted(i: usize, query: &str) -> bool {
    query.contains("channel=b") || i % 3 != 1
}

/// How a follower tells the test that its first stream is live.
type Live = mpsc::UnboundedSender<()>;

/// A client that reads `query` from `hubs` (the first one first) until it
/// receives the event whose data is `end`, moving to the next hub with its last id
/// whenever its stream ends or a hub does not answer; it says on `live` when its
/// first stream is. Returns the data of every event, in order, and how many times
/// it reconnected.
async fn follow_until(
    hubs: Vec<Client>,
    query: &'static str,
    token: String,
    end: String,
    live: Live,
) -> (Vec<String>, usize) {
    let follow = async {
        let mut received = Vec::new();
        let mut reconnects = 0;
        let mut last: Option<String> = None;
        let mut at = 0;
        let mut live = Some(live);
        loop {
            let mut stream;
            (stream, at) = open_any(&hubs, at, query, &token, last.as_deref()).await;
            if let Some(live) = live.take() {
                let _ = live.send(());
            }
            while let Some((id, data)) = stream.next_received().await {
                assert_ne!(id, "reset", "history covers every gap: {data}");
                let done = data == end;
                received.push(data);
                last = Some(id);
                if done {
                    return (received, reconnects);
                }
            }
            at = (at + 1) % hubs.len();
            reconnects += 1;
        }
    };
    tokio::time::timeout(PATIENCE * 4, follow)
        .await
        .unwrap_or_else(|_| panic!("gave up following {query}"))
}

/// A stream of `query` resuming after `last` on the first of `hubs` that serves
/// it, trying them in turn from `from`; and which hub that is.
async fn open_any(
    hubs: &[Client],
    from: usize,
    query: &str,
    token: &str,
    last: Option<&str>,
) -> (Sse, usize) {
    eventually(format!("a hub to serve {query}"), || async {
        for k in 0..hubs.len() {
            let at = (from + k) % hubs.len();
            if let Some(stream) = hubs[at].try_subscribe_from(query, Some(token), last).await {
                return Some((stream, at));
            }
        }
        None
    })
    .await
}

/// Waits until `n` followers say their first stream is live (`connected`
/// received), so none misses what is published next.
async fn followers_live(live: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for k in 0..n {
        tokio::time::timeout(PATIENCE, live.recv())
            .await
            .unwrap_or_else(|_| panic!("{k} of {n} followers live after {PATIENCE:?}"));
    }
}

/// Starts three hubs from `node`, one after the other, and waits until all are
/// ready.
async fn start_three_ready(node: ProcessBuilder) -> Vec<HubProcess> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node.clone().start().await);
    }
    for node in &nodes {
        node.wait_ready(200).await;
    }
    nodes
}

/// One client on both channels per hub, each starting at its own hub and moving
/// through the others in turn, following until the event whose data is `end`;
/// returns once each is live.
async fn follow_from_every_hub(
    nodes: &[HubProcess],
    reader_token: &str,
) -> Vec<JoinHandle<(Vec<String>, usize)>> {
    let (live, mut lives) = mpsc::unbounded_channel();
    let followers: Vec<_> = (0..nodes.len())
        .map(|first| {
            let order: Vec<Client> = (0..nodes.len())
                .map(|k| Client::clone(&nodes[(first + k) % nodes.len()]))
                .collect();
            tokio::spawn(follow_until(
                order,
                "channel=a&channel=b",
                reader_token.to_owned(),
                "end".into(),
                live.clone(),
            ))
        })
        .collect();
    followers_live(&mut lives, followers.len()).await;
    followers
}

/// Publishes event `i` as `body` on `node` while its broker may be down: a 503
/// is allowed (and logged), anything else but 200 fails. Returns whether the
/// event was accepted.
async fn publish_unless_down(
    node: &HubProcess,
    publisher: &str,
    i: usize,
    body: &serde_json::Value,
) -> bool {
    let (status, answer) = node.publish_with(Some(publisher), body).await;
    assert!(
        status == 200 || status == 503,
        "publish {i}: {status} {answer}"
    );
    if status != 200 {
        eprintln!("publish {i}: {status} {answer}");
    }
    status == 200
}

/// Event `i`, to the channels [`targets`] gives it.
fn numbered(i: usize) -> serde_json::Value {
    let mut body = targets(i);
    body["data"] = json!(i);
    body
}

/// The numbers a follower received, without the final `end`.
fn numbers(received: &[String]) -> Vec<usize> {
    received
        .iter()
        .filter(|d| *d != "end")
        .map(|d| d.parse().unwrap())
        .collect()
}

/// Each follower got events in order, each once, and every `accepted` one.
async fn assert_none_lost(readers: Vec<JoinHandle<(Vec<String>, usize)>>, accepted: &[usize]) {
    for reader in readers {
        let (received, _) = reader.await.unwrap();
        let numbers = numbers(&received);
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "in order, each once: {numbers:?}"
        );
        let missing: Vec<&usize> = accepted.iter().filter(|n| !numbers.contains(n)).collect();
        assert!(missing.is_empty(), "accepted but lost: {missing:?}");
    }
}

/// Three hub processes over one broker: subscribers on each, publishes on each,
/// then one hub is killed while events keep flowing and its subscribers resume on
/// another hub. Everyone gets every event once, in order.
async fn three_hubs_survive_a_killed_hub(place: Place) {
    let mut nodes = start_three_ready(
        HubProcess::builder()
            .on(&place)
            .env("HERALD_CHANNELS__HISTORY_SIZE", "10000"),
    )
    .await;
    let reader_token = nodes[0].token(Some("tester"), &["a", "b"], &[]);
    let publisher = nodes[0].token(Some("tester"), &[], &["*"]);
    const TOTAL: usize = 240;
    let mut readers = Vec::new();
    let (live, mut lives) = mpsc::unbounded_channel();
    for first in 0..3 {
        let order: Vec<Client> = (0..3)
            .map(|k| Client::clone(&nodes[(first + k) % 3]))
            .collect();
        for query in ["channel=a&channel=b", "channel=a"] {
            let mut last_wanted = TOTAL - 1;
            while !wanted(last_wanted, query) {
                last_wanted -= 1;
            }
            readers.push((
                first,
                query,
                tokio::spawn(follow_until(
                    order.clone(),
                    query,
                    reader_token.clone(),
                    last_wanted.to_string(),
                    live.clone(),
                )),
            ));
        }
    }
    // Every reader is live before anything is published.
    followers_live(&mut lives, readers.len()).await;
    for i in 0..TOTAL {
        // Publish on every hub in turn; after a third of the events, only on the
        // two that will survive, and kill the third while events keep flowing.
        let node = if i < TOTAL / 3 {
            &nodes[i % 3]
        } else {
            &nodes[i % 2]
        };
        let (status, answer) = node.publish_with(Some(&publisher), &numbered(i)).await;
        assert_eq!(status, 200, "publish {i}: {answer}");
        if i == TOTAL / 2 {
            nodes[2].kill().await;
        }
    }
    for (first, query, reader) in readers {
        let (received, reconnects) = reader.await.unwrap();
        if first == 2 {
            assert!(
                reconnects > 0,
                "the readers of the killed hub moved to another"
            );
        }
        let expected: Vec<String> = (0..TOTAL)
            .filter(|&i| wanted(i, query))
            .map(|i| i.to_string())
            .collect();
        assert_eq!(received, expected, "{query}: every event once, in order");
    }
    for node in &mut nodes {
        node.kill().await;
    }
    place.clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_over_redis_survive_a_killed_hub() {
    if let Some(place) = Place::new(Kind::Redis).await {
        three_hubs_survive_a_killed_hub(place).await;
    }
}

/// The same over two Redis servers, channel `a` on the first and `b` on the
/// second: a client on both gets every event once, in order, on any hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_over_sharded_redis_survive_a_killed_hub() {
    let (Some(first), Some(second)) = (PrivateRedis::start().await, PrivateRedis::start().await)
    else {
        return;
    };
    three_hubs_survive_a_killed_hub(Place::on_redis_shards(&[&first, &second])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_over_nats_survive_a_killed_hub() {
    if let Some(place) = Place::new(Kind::Nats).await {
        three_hubs_survive_a_killed_hub(place).await;
    }
}

/// A private Redis, killed and restarted while three hubs run: they stay up for
/// their subscribers, turn unready and answer 503 while it is down, recover by
/// themselves, and no event accepted with a 2xx is lost. A dropped subscription
/// (`CLIENT KILL TYPE pubsub`) is caught up from the log without closing anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_recover_when_their_redis_is_killed_and_restarted() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let place = Place::on_redis(&redis);
    hubs_recover_when_redis_restarts(redis, place).await;
}

/// The same with histories sharded over two servers, the first one (which orders
/// events and carries the fan-out) killed and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_recover_when_their_sequencing_redis_shard_is_killed_and_restarted() {
    let (Some(first), Some(second)) = (PrivateRedis::start().await, PrivateRedis::start().await)
    else {
        return;
    };
    let place = Place::on_redis_shards(&[&first, &second]);
    hubs_recover_when_redis_restarts(first, place).await;
}

/// A hub at `place` that retries its Redis quickly and keeps enough history for
/// every event of a test.
fn redis_hub(place: &Place) -> ProcessBuilder {
    HubProcess::builder()
        .on(place)
        .env("HERALD_REDIS__RECONNECT_MAX", "300ms")
        .env("HERALD_REDIS__TIMEOUT", "5s")
        .env("HERALD_CHANNELS__HISTORY_SIZE", "10000")
}

/// Three hubs at `place`, whose Redis (or first shard) is `redis`.
async fn hubs_recover_when_redis_restarts(mut redis: PrivateRedis, place: Place) {
    let nodes = start_three_ready(redis_hub(&place)).await;
    let reader_token = nodes[0].token(Some("tester"), &["a", "b"], &[]);
    let publisher = nodes[0].token(Some("tester"), &[], &["*"]);
    let readers = follow_from_every_hub(&nodes, &reader_token).await;

    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut i = 0;
    let publish = async |i: usize, nodes: &[HubProcess]| {
        publish_unless_down(&nodes[i % 3], &publisher, i, &numbered(i)).await
    };
    // Live, then with every node's subscription dropped once.
    while i < 60 {
        if i == 30 {
            let client = redis::Client::open(redis.url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let killed: u64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(killed, 3, "one subscription per hub");
        }
        if publish(i, &nodes).await {
            accepted.push(i);
        }
        i += 1;
    }
    // Redis dies: the hubs keep their subscribers, refuse publishes, and are unready.
    redis.kill().await;
    for node in &nodes {
        node.wait_ready(503).await;
    }
    for _ in 0..6 {
        if publish(i, &nodes).await {
            accepted.push(i);
        } else {
            refused += 1;
        }
        i += 1;
    }
    assert!(refused >= 6, "publishes fail while Redis is down");
    // Redis comes back with its data: the hubs recover by themselves.
    redis.restart().await;
    for node in &nodes {
        node.wait_ready(200).await;
    }
    while i < 100 {
        assert!(publish(i, &nodes).await, "publish {i} after recovery");
        accepted.push(i);
        i += 1;
    }
    let (status, _) = nodes[0]
        .publish_with(Some(&publisher), &json!({"channel": "a", "data": "end"}))
        .await;
    assert_eq!(status, 200);

    assert_none_lost(readers, &accepted).await;
    let stats = nodes[0].stats().await;
    assert!(stats["broker_reconnects"].as_u64().unwrap() >= 2, "{stats}");
}

/// A hub whose Redis is down when it starts still starts: unready, refusing
/// publishes with 503, serving subscribers; once Redis is up it is ready and its
/// subscribers get what is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_starts_while_its_redis_is_down() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    redis.kill().await;
    let node = HubProcess::builder()
        .on(&Place::on_redis(&redis))
        .env("HERALD_REDIS__RECONNECT_MAX", "200ms")
        .start()
        .await;
    assert_eq!(node.readyz().await, 503);
    let publisher = node.token(Some("tester"), &[], &["*"]);
    let (status, answer) = node
        .publish_with(Some(&publisher), &json!({"channel": "a", "data": 1}))
        .await;
    assert_eq!(status, 503, "{answer}");
    let reader_token = node.token(Some("tester"), &["a"], &[]);
    let mut reader = node
        .try_subscribe_from("channel=a", Some(&reader_token), None)
        .await
        .expect("subscribers are served while Redis is down");
    redis.restart().await;
    node.wait_ready(200).await;
    let (status, answer) = node
        .publish_with(Some(&publisher), &json!({"channel": "a", "data": 2}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (id, data) = reader.next_received().await.unwrap();
    assert_eq!(data, "2");
    assert!(!id.is_empty());
}

/// A private NATS: down when two hubs start, then up, then killed and restarted
/// while they run. The hubs start unready, refuse publishes with 503 while it is
/// down, serve their subscribers throughout, recover by themselves, and no event
/// accepted with a 2xx is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_recover_when_their_nats_is_down_and_restarted() {
    let Some(mut nats) = PrivateNats::new().await else {
        return;
    };
    // The stream on disk, so it outlives a restart of the server.
    let node = HubProcess::builder()
        .on(&Place::on_nats(&nats))
        .env("HERALD_NATS__STORAGE", "file")
        .env("HERALD_NATS__RECONNECT_MAX", "300ms")
        .env("HERALD_NATS__TIMEOUT", "1s")
        .env("HERALD_CHANNELS__HISTORY_SIZE", "10000");
    let nodes = [node.clone().start().await, node.start().await];
    let publisher = nodes[0].token(Some("tester"), &[], &["*"]);
    for node in &nodes {
        assert_eq!(node.readyz().await, 503);
        let (status, _) = node
            .publish_with(Some(&publisher), &json!({"channel": "a", "data": -1}))
            .await;
        assert_eq!(status, 503);
    }
    let reader_token = nodes[0].token(Some("tester"), &["a", "b"], &[]);
    let readers = follow_from_every_hub(&nodes, &reader_token).await;
    nats.start().await;
    for node in &nodes {
        node.wait_ready(200).await;
    }
    let publish =
        async |i: usize| publish_unless_down(&nodes[i % 2], &publisher, i, &numbered(i)).await;
    let mut accepted = Vec::new();
    for i in 0..40 {
        assert!(publish(i).await, "publish {i}");
        accepted.push(i);
    }
    nats.kill().await;
    for node in &nodes {
        node.wait_ready(503).await;
    }
    let mut refused = 0;
    for i in 40..44 {
        if publish(i).await {
            accepted.push(i);
        } else {
            refused += 1;
        }
    }
    assert!(refused > 0, "publishes fail while NATS is down");
    nats.start().await;
    for node in &nodes {
        node.wait_ready(200).await;
    }
    for i in 44..80 {
        assert!(publish(i).await, "publish {i} after recovery");
        accepted.push(i);
    }
    let (status, _) = nodes[1]
        .publish_with(Some(&publisher), &json!({"channel": "b", "data": "end"}))
        .await;
    assert_eq!(status, 200);
    assert_none_lost(readers, &accepted).await;
}

/// Two Redis shards, channel `a` on the first and `b` on the second, and the
/// second killed and restarted while three hubs run: publishes to `b` are refused
/// with 503 and the hubs are unready while it is down, `a` keeps working, the hubs
/// recover by themselves, and a client on both channels that moves between hubs
/// gets every accepted event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_refuse_only_the_channels_of_a_redis_shard_that_is_down() {
    let (Some(first), Some(mut second)) =
        (PrivateRedis::start().await, PrivateRedis::start().await)
    else {
        return;
    };
    let place = Place::on_redis_shards(&[&first, &second]);
    let nodes = start_three_ready(redis_hub(&place)).await;
    let reader_token = nodes[0].token(Some("tester"), &["a", "b"], &[]);
    let publisher = nodes[0].token(Some("tester"), &[], &["*"]);
    let readers = follow_from_every_hub(&nodes, &reader_token).await;
    let publish = async |i: usize, channel: &str| {
        let body = json!({"channel": channel, "data": i});
        publish_unless_down(&nodes[i % 3], &publisher, i, &body).await
    };
    let mut accepted = Vec::new();
    for i in 0..30 {
        assert!(publish(i, ["a", "b"][i % 2]).await, "publish {i}");
        accepted.push(i);
    }
    second.kill().await;
    for node in &nodes {
        node.wait_ready(503).await;
    }
    for i in 30..40 {
        if i % 2 == 0 {
            assert!(publish(i, "a").await, "`a` is on the shard that is up");
            accepted.push(i);
        } else {
            assert!(!publish(i, "b").await, "`b` is on the shard that is down");
        }
    }
    second.restart().await;
    for node in &nodes {
        node.wait_ready(200).await;
    }
    for i in 40..70 {
        assert!(
            publish(i, ["a", "b"][i % 2]).await,
            "publish {i} after recovery"
        );
        accepted.push(i);
    }
    let (status, _) = nodes[0]
        .publish_with(Some(&publisher), &json!({"channel": "b", "data": "end"}))
        .await;
    assert_eq!(status, 200);
    for reader in readers {
        let (received, _) = reader.await.unwrap();
        assert_eq!(
            numbers(&received),
            accepted,
            "every accepted event once, in order"
        );
    }
    // A client that was away the whole time resumes on any hub with nothing lost.
    let mut late = nodes[2]
        .try_subscribe_from("channel=a&channel=b", Some(&reader_token), Some("earliest"))
        .await
        .expect("a stream");
    let mut numbers = Vec::new();
    while numbers.len() < accepted.len() {
        let (id, data) = late.next_received().await.expect("an event");
        assert_ne!(id, "reset", "{data}");
        numbers.push(data.parse::<usize>().unwrap());
    }
    assert_eq!(numbers, accepted);
}

/// With `redis.wait_replicas`, a publish is answered 2xx only once a replica has it:
/// without one it is answered 503 naming the replicas (and a retry with the same
/// publisher id, once a replica is there, is a duplicate, not a second event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_waits_for_the_replicas_it_is_told_to() {
    let Some(primary) = PrivateRedis::start().await else {
        return;
    };
    let hub = TestHub::builder()
        .on(&Place::on_redis(&primary))
        .config(|c| {
            c.redis.wait_replicas = 1;
            c.redis.wait_timeout = Duration::from_secs(1);
        })
        .start()
        .await;
    hub.wait_ready(200).await;
    let token = hub.token(None, &["orders"], &[]);
    let mut sse = hub.subscribe("channel=orders", Some(&token)).await;
    let body = json!({"channel": "orders", "data": 1, "id": "order-1"});
    let (status, answer) = hub.publish_with(Some(&hub.publisher()), &body).await;
    assert_eq!(status, 503, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("0 of 1 replicas"), "{message}");
    assert_eq!(sse.expect().await.data, "1", "published all the same");

    let Some(_replica) = PrivateRedis::replica_of(&primary).await else {
        return;
    };
    // Once the replica has caught up (a full sync first), the retry is
    // acknowledged, as a duplicate.
    let acknowledged = |body: Value| {
        let hub = &hub;
        async move {
            let mut answer = Value::Null;
            for _ in 0..60 {
                let (status, got) = hub.publish_with(Some(&hub.publisher()), &body).await;
                answer = got;
                if status == 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            answer
        }
    };
    let answer = acknowledged(body).await;
    assert_eq!(answer["duplicate"], true, "{answer}");
    let answer = acknowledged(json!({"channel": "orders", "data": 2, "id": "order-2"})).await;
    assert_eq!(
        answer,
        json!({"id": "order-2"}),
        "published, not a duplicate"
    );
    assert_eq!(
        sse.expect().await.data,
        "2",
        "the retry was not delivered again"
    );
}
