//! The brokers of several nodes against the real services (Redis on 127.0.0.1:6379,
//! NATS with JetStream on 127.0.0.1:4222): the memory broker's contract, run against
//! each of them, then whole hub processes sharing a broker, killed and recovering.
//!
//! Each test uses a key prefix or stream of its own and removes it at the end. A
//! test whose service is not running is skipped with a `SKIP` line, or fails with
//! `HERALD_REQUIRE_SERVICES=1`.

use std::sync::Arc;
use std::time::Duration;

use herald::broker::{Accepted, Broker, Replay, ResumeFrom};
use herald::core::{ChannelName, Fanout, Item, NewEvent, ResetReason, Subscription};
use serde_json::json;

use crate::fixture::PATIENCE;
use crate::nodes::{Kind, Node, Place, PrivateNats, PrivateRedis, Reader, policies, ready, token};

fn ch(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

async fn publish(b: &dyn Broker, channels: &[&str]) -> Accepted {
    let mut new = NewEvent::text(ch(channels[0]), "x");
    new.channels = channels.iter().map(|c| ch(c)).collect();
    b.publish(vec![new]).await.unwrap().remove(0)
}

fn seqs(r: &Replay) -> Vec<u64> {
    r.events.iter().map(|e| e.seq).collect()
}

/// A broker of `kind` with history `size` (and an hour's age), ready; with its place.
async fn broker(kind: Kind, size: usize) -> Option<(Arc<dyn Broker>, Place)> {
    let place = Place::new(kind).await?;
    let b = place.broker(policies(size, Duration::from_secs(3600)), Fanout::new());
    ready(b.as_ref()).await;
    Some((b, place))
}

/// Runs `test` against every broker whose service is up.
macro_rules! for_each_broker {
    ($name:ident, $test:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn memory() {
                ($test)(Kind::Memory).await;
            }

            #[tokio::test]
            async fn redis() {
                ($test)(Kind::Redis).await;
            }

            #[tokio::test]
            async fn nats() {
                ($test)(Kind::Nats).await;
            }
        }
    };
}

for_each_broker!(
    resumes_across_channels_in_order_without_duplicates,
    |kind| async move {
        let Some((b, place)) = broker(kind, 10).await else {
            return;
        };
        let first = publish(b.as_ref(), &["a"]).await;
        publish(b.as_ref(), &["b"]).await;
        publish(b.as_ref(), &["a", "b"]).await;
        publish(b.as_ref(), &["c"]).await;
        publish(b.as_ref(), &["b"]).await;
        let r = b
            .replay(&[ch("a"), ch("b")], ResumeFrom::After(first.id))
            .await
            .unwrap();
        assert_eq!(seqs(&r), vec![2, 3, 5]);
        assert!(r.reset.is_none());
        assert_eq!(r.after_seq, 1);
        assert_eq!(r.events[1].channels, vec![ch("a"), ch("b")]);
        drop(b);
        place.clean().await;
    }
);

for_each_broker!(unknown_and_foreign_ids_get_a_reset, |kind| async move {
    let Some((b, place)) = broker(kind, 10).await else {
        return;
    };
    let first = publish(b.as_ref(), &["a"]).await;
    let epoch = first.id.split_once('-').unwrap().0.to_owned();
    for id in ["nope", "ffffffff-1", "1"] {
        let r = b
            .replay(&[ch("a")], ResumeFrom::After(id.into()))
            .await
            .unwrap();
        let reset = r.reset.expect("reset");
        assert_eq!(reset.reason, ResetReason::UnknownId);
        assert_eq!(reset.id, first.id, "the reset carries the head");
        assert!(r.events.is_empty());
    }
    let r = b
        .replay(&[ch("a")], ResumeFrom::After(format!("{epoch}-99")))
        .await
        .unwrap();
    assert!(r.reset.is_some(), "a position past the head is unknown");
    drop(b);
    place.clean().await;
});

for_each_broker!(
    expired_history_resets_only_the_channels_with_a_gap,
    |kind| async move {
        let Some((b, place)) = broker(kind, 2).await else {
            return;
        };
        let first = publish(b.as_ref(), &["a"]).await;
        for _ in 0..3 {
            publish(b.as_ref(), &["a"]).await;
        }
        publish(b.as_ref(), &["b"]).await;
        let r = b
            .replay(&[ch("a"), ch("b")], ResumeFrom::After(first.id))
            .await
            .unwrap();
        assert_eq!(seqs(&r), vec![5]);
        let reset = r.reset.unwrap();
        assert_eq!(reset.channels, vec![ch("a")]);
        assert_eq!(reset.reason, ResetReason::Expired);
        assert_eq!(r.after_seq, 5);
        drop(b);
        place.clean().await;
    }
);

for_each_broker!(events_past_the_history_age_are_a_gap, |kind| async move {
    let Some(place) = Place::new(kind).await else {
        return;
    };
    let b = place.broker(policies(10, Duration::from_millis(400)), Fanout::new());
    ready(b.as_ref()).await;
    let first = publish(b.as_ref(), &["a"]).await;
    let second = publish(b.as_ref(), &["a"]).await;
    let r = b
        .replay(&[ch("a")], ResumeFrom::After(first.id.clone()))
        .await
        .unwrap();
    assert_eq!(seqs(&r), vec![second.seq]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = b
        .replay(&[ch("a")], ResumeFrom::After(first.id))
        .await
        .unwrap();
    assert_eq!(r.reset.unwrap().reason, ResetReason::Expired);
    let r = b
        .replay(&[ch("a")], ResumeFrom::After(second.id))
        .await
        .unwrap();
    assert!(r.reset.is_none(), "nothing after the newest event was lost");
    assert!(b.history(&ch("a"), 10).await.unwrap().is_empty());
    drop(b);
    place.clean().await;
});

for_each_broker!(earliest_replays_everything_kept, |kind| async move {
    let Some((b, place)) = broker(kind, 2).await else {
        return;
    };
    for _ in 0..3 {
        publish(b.as_ref(), &["a"]).await;
    }
    let r = b.replay(&[ch("a")], ResumeFrom::Earliest).await.unwrap();
    assert_eq!(seqs(&r), vec![2, 3]);
    assert!(r.reset.is_none());
    let newest: Vec<u64> = b
        .history(&ch("a"), 1)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(newest, vec![3]);
    drop(b);
    place.clean().await;
});

for_each_broker!(
    publisher_ids_are_kept_resumable_and_deduplicated,
    |kind| async move {
        let Some((b, place)) = broker(kind, 10).await else {
            return;
        };
        let new = NewEvent::text(ch("a"), "x").with_id("order-1");
        let first = b.publish(vec![new.clone()]).await.unwrap().remove(0);
        assert_eq!(first.id, "order-1");
        assert!(!first.duplicate);
        let again = b.publish(vec![new]).await.unwrap().remove(0);
        assert!(again.duplicate);
        assert_eq!(again.seq, first.seq);
        publish(b.as_ref(), &["a"]).await;
        let r = b
            .replay(&[ch("a")], ResumeFrom::After("order-1".into()))
            .await
            .unwrap();
        assert_eq!(seqs(&r), vec![2]);
        assert_eq!(b.history(&ch("a"), 10).await.unwrap()[0].id, "order-1");
        drop(b);
        place.clean().await;
    }
);

for_each_broker!(
    ephemeral_events_are_delivered_but_not_kept,
    |kind| async move {
        let Some(place) = Place::new(kind).await else {
            return;
        };
        let fanout = Fanout::new();
        let b = place.broker(policies(10, Duration::from_secs(3600)), fanout.clone());
        ready(b.as_ref()).await;
        let mut sub = fanout.register(1, vec![ch("a")], 16);
        let first = publish(b.as_ref(), &["a"]).await;
        let typing = NewEvent::text(ch("a"), "typing").ephemeral();
        b.publish(vec![typing]).await.unwrap();
        assert_eq!(next_data(&mut sub).await, "x");
        assert_eq!(next_data(&mut sub).await, "typing");
        let r = b
            .replay(&[ch("a")], ResumeFrom::After(first.id))
            .await
            .unwrap();
        assert!(r.events.is_empty());
        assert!(r.reset.is_none(), "a live-only event is no gap");
        assert_eq!(b.history(&ch("a"), 10).await.unwrap().len(), 1);
        drop(b);
        place.clean().await;
    }
);

for_each_broker!(dropped_logs_still_report_gaps, |kind| async move {
    let Some((b, place)) = broker(kind, 0).await else {
        return;
    };
    let first = publish(b.as_ref(), &["a"]).await;
    let latest = publish(b.as_ref(), &["a"]).await;
    b.maintain().await;
    assert_eq!(b.history_channels(), 0);
    let r = b
        .replay(&[ch("a")], ResumeFrom::After(first.id.clone()))
        .await
        .unwrap();
    assert!(r.reset.is_some(), "event 2 was missed and is not kept");
    let r = b
        .replay(&[ch("a")], ResumeFrom::After(latest.id))
        .await
        .unwrap();
    assert!(r.reset.is_none());
    drop(b);
    place.clean().await;
});

async fn next_data(sub: &mut Subscription) -> String {
    match tokio::time::timeout(PATIENCE, sub.next()).await {
        Ok(Ok(Some(Item::Event(e)))) => e.data.as_str().to_owned(),
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn next_seq(sub: &mut Subscription) -> u64 {
    match tokio::time::timeout(PATIENCE, sub.next()).await {
        Ok(Ok(Some(Item::Event(e)))) => e.seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Two nodes in one process over one service: each delivers every event, in
/// position order across channels, whichever node published it.
async fn two_nodes_deliver_everything_in_one_order(kind: Kind) {
    let Some(place) = Place::new(kind).await else {
        return;
    };
    let (fa, fb) = (Fanout::new(), Fanout::new());
    let a = place.broker(policies(1000, Duration::from_secs(3600)), fa.clone());
    let b = place.broker(policies(1000, Duration::from_secs(3600)), fb.clone());
    ready(a.as_ref()).await;
    ready(b.as_ref()).await;
    let channels = vec![ch("x"), ch("y")];
    let mut on_a = fa.register(1, channels.clone(), 1024);
    let mut on_b = fb.register(1, channels.clone(), 1024);
    let (pa, pb) = (a.clone(), b.clone());
    let one = tokio::spawn(async move {
        for _ in 0..100 {
            publish(pa.as_ref(), &["x"]).await;
        }
    });
    let two = tokio::spawn(async move {
        for _ in 0..100 {
            publish(pb.as_ref(), &["y", "x"]).await;
        }
    });
    one.await.unwrap();
    two.await.unwrap();
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..200 {
        seen_a.push(next_seq(&mut on_a).await);
        seen_b.push(next_seq(&mut on_b).await);
    }
    assert_eq!(seen_a, (1..=200).collect::<Vec<u64>>());
    assert_eq!(seen_a, seen_b);
    // A resume on either node from the middle gives the same rest.
    let mid = a.history(&ch("x"), 200).await.unwrap()[99].id.clone();
    let ra = a
        .replay(&channels, ResumeFrom::After(mid.clone()))
        .await
        .unwrap();
    let rb = b.replay(&channels, ResumeFrom::After(mid)).await.unwrap();
    assert_eq!(seqs(&ra), seqs(&rb));
    assert_eq!(seqs(&ra), (101..=200).collect::<Vec<u64>>());
    drop((a, b));
    place.clean().await;
}

#[tokio::test]
async fn two_redis_nodes_deliver_everything_in_one_order() {
    two_nodes_deliver_everything_in_one_order(Kind::Redis).await;
}

#[tokio::test]
async fn two_nats_nodes_deliver_everything_in_one_order() {
    two_nodes_deliver_everything_in_one_order(Kind::Nats).await;
}

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

/// A client that reads `query` from the hubs at `urls` (the first one first) until
/// it receives the event whose data is `end`, moving to the next hub with its last
/// id whenever its stream ends. Returns the data of every event, in order, and how
/// many times it reconnected.
async fn follow_until(
    urls: Vec<String>,
    query: &'static str,
    token: String,
    end: String,
) -> (Vec<String>, usize) {
    let mut received = Vec::new();
    let mut reconnects = 0;
    let mut last: Option<String> = None;
    let mut at = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE * 4;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up following {query}"
        );
        let Some(mut reader) = Reader::open(&urls[at], query, &token, last.as_deref()).await else {
            at = (at + 1) % urls.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while let Some((id, data)) = reader.next().await {
            assert_ne!(id, "reset", "history covers every gap: {data}");
            let done = data == end;
            received.push(data);
            last = Some(id);
            if done {
                return (received, reconnects);
            }
        }
        at = (at + 1) % urls.len();
        reconnects += 1;
    }
}

/// Three hub processes over one broker: subscribers on each, publishes on each,
/// then one hub is killed while events keep flowing and its subscribers resume on
/// another hub. Everyone gets every event once, in order.
async fn three_hubs_survive_a_killed_hub(kind: Kind) {
    let Some(place) = Place::new(kind).await else {
        return;
    };
    let mut env = place.env();
    env.push(("HERALD_CHANNELS__HISTORY_SIZE".into(), "10000".into()));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Node::start(&env).await);
    }
    for node in &nodes {
        node.wait_ready(200).await;
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let reader_token = token(&["a", "b"], &[]);
    let publisher = token(&[], &["*"]);
    const TOTAL: usize = 240;
    let mut readers = Vec::new();
    for first in 0..3 {
        let order: Vec<String> = (0..3).map(|k| urls[(first + k) % 3].clone()).collect();
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
                )),
            ));
        }
    }
    // Let every reader connect before publishing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..TOTAL {
        // Publish on every hub in turn; after a third of the events, only on the
        // two that will survive, and kill the third while events keep flowing.
        let node = if i < TOTAL / 3 {
            &nodes[i % 3]
        } else {
            &nodes[i % 2]
        };
        let mut body = targets(i);
        body["data"] = json!(i);
        let (status, answer) = node.publish(&publisher, &body).await;
        assert_eq!(status, 200, "publish {i}: {answer}");
        if i == TOTAL / 2 {
            nodes[2].kill().await;
        }
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
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
    three_hubs_survive_a_killed_hub(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_over_nats_survive_a_killed_hub() {
    three_hubs_survive_a_killed_hub(Kind::Nats).await;
}

/// A private Redis, killed and restarted while three hubs run: they stay up for
/// their subscribers, turn unready and answer 503 while it is down, recover by
/// themselves, and no event accepted with a 2xx is lost. A dropped subscription
/// (`CLIENT KILL TYPE pubsub`) is caught up from the log without closing anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_recover_when_their_redis_is_killed_and_restarted() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let env = vec![
        ("HERALD_BROKER".to_owned(), redis.url()),
        (
            "HERALD_REDIS__PREFIX".to_owned(),
            crate::nodes::unique("restart-"),
        ),
        ("HERALD_REDIS__RECONNECT_MAX".to_owned(), "300ms".to_owned()),
        ("HERALD_REDIS__TIMEOUT".to_owned(), "1s".to_owned()),
        (
            "HERALD_CHANNELS__HISTORY_SIZE".to_owned(),
            "10000".to_owned(),
        ),
    ];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Node::start(&env).await);
    }
    for node in &nodes {
        node.wait_ready(200).await;
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let reader_token = token(&["a", "b"], &[]);
    let publisher = token(&[], &["*"]);
    let mut readers = Vec::new();
    for first in 0..3 {
        let order: Vec<String> = (0..3).map(|k| urls[(first + k) % 3].clone()).collect();
        readers.push(tokio::spawn(follow_until(
            order,
            "channel=a&channel=b",
            reader_token.clone(),
            "end".into(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut i = 0;
    let publish = async |i: usize, nodes: &[Node]| {
        let mut body = targets(i);
        body["data"] = json!(i);
        let (status, answer) = nodes[i % 3].publish(&publisher, &body).await;
        assert!(
            status == 200 || status == 503,
            "publish {i}: {status} {answer}"
        );
        status == 200
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
        .publish(&publisher, &json!({"channel": "a", "data": "end"}))
        .await;
    assert_eq!(status, 200);

    for reader in readers {
        let (received, _) = reader.await.unwrap();
        let numbers: Vec<usize> = received
            .iter()
            .filter(|d| *d != "end")
            .map(|d| d.parse().unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "in order, each once: {numbers:?}"
        );
        let missing: Vec<&usize> = accepted.iter().filter(|n| !numbers.contains(n)).collect();
        assert!(missing.is_empty(), "accepted but lost: {missing:?}");
    }
    let stats: serde_json::Value = reqwest::get(format!("{}/stats", nodes[0].url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let env = vec![
        ("HERALD_BROKER".to_owned(), redis.url()),
        ("HERALD_REDIS__RECONNECT_MAX".to_owned(), "200ms".to_owned()),
    ];
    let node = Node::start(&env).await;
    assert_eq!(node.readyz().await, 503);
    let publisher = token(&[], &["*"]);
    let (status, answer) = node
        .publish(&publisher, &json!({"channel": "a", "data": 1}))
        .await;
    assert_eq!(status, 503, "{answer}");
    let mut reader = Reader::open(&node.url, "channel=a", &token(&["a"], &[]), None)
        .await
        .expect("subscribers are served while Redis is down");
    redis.restart().await;
    node.wait_ready(200).await;
    let (status, answer) = node
        .publish(&publisher, &json!({"channel": "a", "data": 2}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (id, data) = reader.next().await.unwrap();
    assert_eq!(data, "2");
    assert!(!id.is_empty());
}

/// Messages applications `PUBLISH` to Redis channels become events on the Herald
/// channels the routes name.
#[tokio::test]
async fn messages_published_to_redis_channels_are_delivered() {
    use herald::config::{RedisMessageFormat, RedisRoute, RedisSourceConfig};
    if !crate::fixture::service_available("Redis", crate::nodes::REDIS).await {
        return;
    }
    let app = crate::nodes::unique("app");
    let route = |pattern: String, channel: Option<&str>| RedisRoute {
        pattern,
        channel: channel.map(str::to_owned),
        broadcast: false,
        format: RedisMessageFormat::Data,
        kind: None,
        data_field: "data".into(),
        type_field: "type".into(),
        id_field: "id".into(),
    };
    let mut global = route(format!("{app}:global"), None);
    global.broadcast = true;
    global.kind = Some("announcement".into());
    let mut envelope = route(format!("{app}:events:*"), Some("{1}"));
    envelope.format = RedisMessageFormat::Envelope;
    envelope.type_field = "event".into();
    let routes = vec![
        route(format!("{app}:user:*"), Some("user:{1}")),
        route(format!("{app}:channel:*"), Some("{1}")),
        global,
        envelope,
    ];
    let prefix = app.clone();
    let hub = crate::fixture::TestHub::builder()
        .config(move |c| {
            c.redis.prefix = prefix;
            c.redis_source = Some(RedisSourceConfig {
                url: Some(format!("redis://{}", crate::nodes::REDIS)),
                routes,
            });
        })
        .start()
        .await;
    let token = hub.token(Some("42"), &["orders", "news"], &[]);
    let mut sse = hub
        .subscribe("channel=orders&channel=news", Some(&token))
        .await;
    let client = redis::Client::open(format!("redis://{}", crate::nodes::REDIS)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut send = async |channel: String, message: &str| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut conn)
            .await
            .unwrap();
    };
    // The source subscribes shortly after the hub starts: probe until it does.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the source never subscribed"
        );
        send(format!("{app}:channel:news"), "probe").await;
        if let Some(e) = sse.quiet_for(Duration::from_millis(200)).await {
            assert_eq!(e.data, "probe");
            break;
        }
    }
    send(format!("{app}:user:42"), r#"{"n": 1}"#).await;
    send(format!("{app}:user:43"), "for someone else").await;
    send(format!("{app}:channel:orders"), "plain text").await;
    send(format!("{app}:unrouted"), "no route subscribes to this").await;
    send(format!("{app}:global"), r#"{"text":"maintenance"}"#).await;
    let shipped = r#"{"event":"order.shipped","data":{"id":7},"id":"o-7","socket":null}"#;
    send(format!("{app}:events:orders"), shipped).await;
    send(format!("{app}:events:orders"), shipped).await;
    send(format!("{app}:channel:news"), "last").await;

    let mut got = Vec::new();
    while got.len() < 5 {
        let e = sse.expect().await;
        if e.data != "probe" {
            got.push((e.event, e.data, e.id));
        }
    }
    assert_eq!(got[0].1, r#"{"n":1}"#, "user:42, JSON as sent");
    assert_eq!(got[1].1, "plain text");
    assert_eq!(
        (got[2].0.as_str(), got[2].1.as_str()),
        ("announcement", r#"{"text":"maintenance"}"#)
    );
    assert_eq!(
        (got[3].0.as_str(), got[3].1.as_str(), got[3].2.as_str()),
        ("order.shipped", r#"{"id":7}"#, "o-7")
    );
    assert_eq!(got[4].1, "last", "the repeated id was published once");
    let history = hub.hub.history(&ch("orders"), 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(hub.hub.stats().source_notifications >= 7);
    crate::nodes::clean_redis(&format!("redis://{}", crate::nodes::REDIS), &app).await;
}

/// A channel whose history expired and was dropped, then published to again, still
/// reports the gap to a client that was there before the expired events.
async fn a_channel_dropped_and_published_again_keeps_its_gap(kind: Kind) {
    let Some(place) = Place::new(kind).await else {
        return;
    };
    let b = place.broker(policies(10, Duration::from_millis(300)), Fanout::new());
    ready(b.as_ref()).await;
    let before = publish(b.as_ref(), &["other"]).await;
    publish(b.as_ref(), &["a"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.maintain().await;
    let again = publish(b.as_ref(), &["a"]).await;
    let r = b
        .replay(&[ch("a")], ResumeFrom::After(before.id))
        .await
        .unwrap();
    assert_eq!(r.reset.expect("a reset").reason, ResetReason::Expired);
    let r = b
        .replay(&[ch("a")], ResumeFrom::After(again.id))
        .await
        .unwrap();
    assert!(r.reset.is_none());
    drop(b);
    place.clean().await;
}

#[tokio::test]
async fn a_redis_channel_dropped_and_published_again_keeps_its_gap() {
    a_channel_dropped_and_published_again_keeps_its_gap(Kind::Redis).await;
}

#[tokio::test]
async fn a_nats_channel_dropped_and_published_again_keeps_its_gap() {
    a_channel_dropped_and_published_again_keeps_its_gap(Kind::Nats).await;
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
    let env = vec![
        ("HERALD_BROKER".to_owned(), nats.url()),
        ("HERALD_NATS__RECONNECT_MAX".to_owned(), "300ms".to_owned()),
        ("HERALD_NATS__TIMEOUT".to_owned(), "1s".to_owned()),
        (
            "HERALD_CHANNELS__HISTORY_SIZE".to_owned(),
            "10000".to_owned(),
        ),
    ];
    let nodes = [Node::start(&env).await, Node::start(&env).await];
    let publisher = token(&[], &["*"]);
    for node in &nodes {
        assert_eq!(node.readyz().await, 503);
        let (status, _) = node
            .publish(&publisher, &json!({"channel": "a", "data": -1}))
            .await;
        assert_eq!(status, 503);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let reader_token = token(&["a", "b"], &[]);
    let mut readers = Vec::new();
    for first in 0..2 {
        let order = vec![urls[first].clone(), urls[1 - first].clone()];
        readers.push(tokio::spawn(follow_until(
            order,
            "channel=a&channel=b",
            reader_token.clone(),
            "end".into(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    nats.start().await;
    for node in &nodes {
        node.wait_ready(200).await;
    }
    let publish = async |i: usize| {
        let mut body = targets(i);
        body["data"] = json!(i);
        let (status, answer) = nodes[i % 2].publish(&publisher, &body).await;
        assert!(
            status == 200 || status == 503,
            "publish {i}: {status} {answer}"
        );
        status == 200
    };
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
        .publish(&publisher, &json!({"channel": "b", "data": "end"}))
        .await;
    assert_eq!(status, 200);
    for reader in readers {
        let (received, _) = reader.await.unwrap();
        let numbers: Vec<usize> = received
            .iter()
            .filter(|d| *d != "end")
            .map(|d| d.parse().unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "in order, each once: {numbers:?}"
        );
        let missing: Vec<&usize> = accepted.iter().filter(|n| !numbers.contains(n)).collect();
        assert!(missing.is_empty(), "accepted but lost: {missing:?}");
    }
}
