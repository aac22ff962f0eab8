//! The brokers of several nodes against the real services (Redis on 127.0.0.1:6379,
//! NATS with JetStream on 127.0.0.1:4222): the memory broker's contract, run against
//! each of them, then whole hub processes sharing a broker, killed and recovering.
//!
//! Each test uses a key prefix or stream of its own and removes it at the end. A
//! test whose service is not running is skipped with a `SKIP` line, or fails with
//! `HERALD_REQUIRE_SERVICES=1`.

use std::sync::Arc;
use std::time::Duration;

use herald::broker::{Accepted, Broker, BrokerError, Replay, ResumeFrom};
use herald::core::{ChannelName, Fanout, Item, ManualClock, NewEvent, ResetReason, Subscription};
use herald::hub::{Start, Subscribe};

use crate::fixture::place::{clean_redis, policies, ready};
use crate::fixture::services::{REDIS, redis_available, unique};
use crate::fixture::{Kind, PATIENCE, Place, TestHub, eventually};

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

/// Lets the events on `a` of `b` grow older than its history keeps them (`age`
/// is longer than that): a broker keeping history in this process (memory, a NATS
/// node's copy) ages it by `clock`, which moves; Redis ages it by its server's
/// clock, so there the test waits, in real time, until it has.
async fn outlive_history(kind: Kind, b: &dyn Broker, clock: &ManualClock, age: Duration) {
    match kind {
        Kind::Memory | Kind::Nats => clock.advance(age),
        Kind::Redis | Kind::ShardedRedis => {
            eventually("the Redis server to expire the history of `a`", || async {
                b.history(&ch("a"), 10).await.unwrap().is_empty()
            })
            .await;
        }
    }
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
            async fn sharded_redis() {
                ($test)(Kind::ShardedRedis).await;
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

for_each_broker!(the_head_is_the_newest_position, |kind| async move {
    let Some((b, place)) = broker(kind, 10).await else {
        return;
    };
    let empty = b.head().await.unwrap();
    assert!(empty.ends_with("-0"), "nothing published yet: {empty}");
    publish(b.as_ref(), &["a"]).await;
    let last = publish(b.as_ref(), &["b"]).await;
    assert_eq!(b.head().await.unwrap(), last.id);
    let r = b
        .replay(&[ch("a"), ch("b")], ResumeFrom::After(last.id))
        .await
        .unwrap();
    assert!(
        r.events.is_empty() && r.reset.is_none(),
        "known and current"
    );
    drop(b);
    place.clean().await;
});

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
    let clock = ManualClock::starting_now();
    let b = place.broker_on(
        policies(10, Duration::from_millis(400)),
        Fanout::new(),
        clock.clock(),
    );
    ready(b.as_ref()).await;
    let first = publish(b.as_ref(), &["a"]).await;
    let second = publish(b.as_ref(), &["a"]).await;
    let r = b
        .replay(&[ch("a")], ResumeFrom::After(first.id.clone()))
        .await
        .unwrap();
    assert_eq!(seqs(&r), vec![second.seq]);
    outlive_history(kind, b.as_ref(), &clock, Duration::from_millis(600)).await;
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

fn with_id(channels: &[&str], id: &str) -> NewEvent {
    let mut new = NewEvent::text(ch(channels[0]), id).with_id(id);
    new.channels = channels.iter().map(|c| ch(c)).collect();
    new
}

fn conflict_at(result: Result<Vec<Accepted>, BrokerError>) -> usize {
    match result {
        Err(BrokerError::IdConflict { index, .. }) => index,
        other => panic!("expected an id conflict, got {other:?}"),
    }
}

for_each_broker!(
    a_publisher_id_names_one_event_across_channels,
    |kind| async move {
        let Some((b, place)) = broker(kind, 10).await else {
            return;
        };
        let first = b.publish(vec![with_id(&["a"], "order-1")]).await.unwrap();
        let seq = first[0].seq;
        // The same id on other channels is another event: refused, not a duplicate.
        for channels in [&["b"][..], &["a", "b"], &["b", "a"]] {
            let taken = b.publish(vec![with_id(channels, "order-1")]).await;
            assert_eq!(conflict_at(taken), 0, "{channels:?}");
        }
        // The same id on the same channels is a retry.
        let again = b.publish(vec![with_id(&["a"], "order-1")]).await.unwrap();
        assert!(again[0].duplicate);
        assert_eq!(again[0].seq, seq);
        // A conflict anywhere in a batch publishes nothing of it, also when the
        // batch gives one id to two events.
        let batch = vec![with_id(&["a"], "fresh-1"), with_id(&["b"], "order-1")];
        assert_eq!(conflict_at(b.publish(batch).await), 1);
        let batch = vec![with_id(&["a"], "twin"), with_id(&["c"], "twin")];
        assert_eq!(conflict_at(b.publish(batch).await), 1);
        let r = b
            .replay(
                &[ch("a"), ch("b"), ch("c")],
                ResumeFrom::After("order-1".into()),
            )
            .await
            .unwrap();
        assert!(r.events.is_empty(), "nothing of the refused batches: {r:?}");
        assert!(r.reset.is_none());
        // One id twice with the same channels in a batch: one event.
        let batch = vec![with_id(&["a", "b"], "pair"), with_id(&["b", "a"], "pair")];
        let pair = b.publish(batch).await.unwrap();
        assert!(!pair[0].duplicate && pair[1].duplicate, "{pair:?}");
        assert_eq!(pair[0].seq, pair[1].seq);
        let r = b
            .replay(&[ch("a"), ch("b")], ResumeFrom::After("order-1".into()))
            .await
            .unwrap();
        assert_eq!(seqs(&r), vec![pair[0].seq]);
        drop(b);
        place.clean().await;
    }
);

/// Two nodes: an id one of them published cannot be taken on the other for other
/// channels, and a retry on the other is a duplicate.
async fn a_publisher_id_names_one_event_on_every_node(kind: Kind) {
    let Some(place) = Place::new(kind).await else {
        return;
    };
    let a = place.broker(policies(10, Duration::from_secs(3600)), Fanout::new());
    let b = place.broker(policies(10, Duration::from_secs(3600)), Fanout::new());
    ready(a.as_ref()).await;
    ready(b.as_ref()).await;
    let first = a.publish(vec![with_id(&["x"], "shared-1")]).await.unwrap();
    assert_eq!(
        conflict_at(b.publish(vec![with_id(&["y"], "shared-1")]).await),
        0
    );
    let again = b.publish(vec![with_id(&["x"], "shared-1")]).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].seq, first[0].seq);
    drop((a, b));
    place.clean().await;
}

#[tokio::test]
async fn a_publisher_id_names_one_event_on_every_redis_node() {
    a_publisher_id_names_one_event_on_every_node(Kind::Redis).await;
}

#[tokio::test]
async fn a_publisher_id_names_one_event_on_every_sharded_redis_node() {
    a_publisher_id_names_one_event_on_every_node(Kind::ShardedRedis).await;
}

#[tokio::test]
async fn a_publisher_id_names_one_event_on_every_nats_node() {
    a_publisher_id_names_one_event_on_every_node(Kind::Nats).await;
}

/// Each node of a NATS deployment keeps its copy of the history within
/// `limits.history_memory`, evicting the oldest events first; a resume from before
/// what it evicted reads the gap from the stream, which still holds it.
#[tokio::test]
async fn a_nats_node_keeps_its_history_within_the_budget_and_reads_the_rest_from_the_stream() {
    const BUDGET: usize = 128 * 1024;
    let Some(hub) = TestHub::builder()
        .nats()
        .config(|c| c.limits.history_memory = BUDGET)
        .try_start()
        .await
    else {
        return;
    };
    let place = hub.place().expect("a node of a deployment").clone();
    eventually("the node to be ready", || hub.node.ready()).await;
    let before = hub
        .publish(serde_json::json!({"channel": "x", "data": 0}))
        .await;
    hub.publish(serde_json::json!({"channel": "a", "data": 0}))
        .await;
    for batch in 0..2 {
        let events: Vec<serde_json::Value> = (0..1000)
            .map(|i| serde_json::json!({"channel": format!("many:{batch}-{i}"), "data": i}))
            .collect();
        let (status, answer) = hub
            .publish_with(Some(&hub.publisher()), &serde_json::Value::Array(events))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    // Reading history waits until this node has applied everything published.
    let newest = hub.node.hub().history(&ch("many:1-999"), 1).await.unwrap();
    assert_eq!(newest.len(), 1);
    let stats = hub.node.stats();
    assert!(stats.history_bytes <= BUDGET as u64, "{stats:?}");
    assert!(stats.history_evicted > 1000, "{stats:?}");
    let resume = |from| {
        hub.node.hub().subscribe(Subscribe {
            channels: vec![ch("a")],
            start: Start::After(from),
            queue: None,
        })
    };
    let mut all = resume(ResumeFrom::Earliest).await.unwrap().subscription;
    assert!(
        all.try_next().unwrap().is_none(),
        "the event of `a` was evicted"
    );
    let mut after = resume(ResumeFrom::After(before))
        .await
        .unwrap()
        .subscription;
    let Some(Item::Event(event)) = after.try_next().unwrap() else {
        panic!("the event of `a`, read from the stream");
    };
    assert_eq!(event.channels, vec![ch("a")]);
    assert!(after.try_next().unwrap().is_none(), "once, and no reset");
    drop(hub);
    place.clean().await;
}

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

/// Hubs in process made nodes of one deployment by the fixture's builder: what is
/// published on one reaches the subscribers of the other, and a client resumes on
/// either with the id it got.
async fn in_process_hubs_on_one_place_share_events(kind: Kind) {
    let builder = match kind {
        Kind::Redis => TestHub::builder().redis(),
        _ => TestHub::builder().nats(),
    };
    let Some(a) = builder.try_start().await else {
        return;
    };
    let place = a.place().expect("a node of a deployment").clone();
    let b = TestHub::builder().on(&place).start().await;
    for hub in [&a, &b] {
        eventually("the node to be ready", || hub.node.ready()).await;
    }
    let token = b.token(Some("reader"), &["room"], &[]);
    let mut on_b = b.subscribe("channel=room", Some(&token)).await;
    let first = a
        .publish(serde_json::json!({"channel": "room", "data": "one"}))
        .await;
    let second = b
        .publish(serde_json::json!({"channel": "room", "data": "two"}))
        .await;
    let got = on_b.expect().await;
    assert_eq!(
        (got.id.as_str(), got.data.as_str()),
        (first.as_str(), "one")
    );
    assert_eq!(on_b.expect().await.id, second);
    let mut on_a = a
        .subscribe_from("channel=room", Some(&token), Some(&first))
        .await;
    let resumed = on_a.expect().await;
    assert_eq!((resumed.id, resumed.data), (second, "two".to_owned()));
    drop((a, b));
    place.clean().await;
}

#[tokio::test]
async fn in_process_hubs_over_redis_share_events() {
    in_process_hubs_on_one_place_share_events(Kind::Redis).await;
}

#[tokio::test]
async fn in_process_hubs_over_nats_share_events() {
    in_process_hubs_on_one_place_share_events(Kind::Nats).await;
}

#[tokio::test]
async fn two_redis_nodes_deliver_everything_in_one_order() {
    two_nodes_deliver_everything_in_one_order(Kind::Redis).await;
}

/// Channels `x` and `y` live on different shards.
#[tokio::test]
async fn two_sharded_redis_nodes_deliver_everything_in_one_order() {
    two_nodes_deliver_everything_in_one_order(Kind::ShardedRedis).await;
}

#[tokio::test]
async fn two_nats_nodes_deliver_everything_in_one_order() {
    two_nodes_deliver_everything_in_one_order(Kind::Nats).await;
}

/// Messages applications `PUBLISH` to Redis channels become events on the Herald
/// channels the routes name.
#[tokio::test]
async fn messages_published_to_redis_channels_are_delivered() {
    use herald::config::{RedisMessageFormat, RedisRoute, RedisSourceConfig};
    if !redis_available().await {
        return;
    }
    let app = unique("app");
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
    let hub = TestHub::builder()
        .config(move |c| {
            c.redis.prefix = prefix;
            c.redis_source = Some(RedisSourceConfig {
                url: Some(format!("redis://{}", REDIS)),
                routes,
            });
        })
        .start()
        .await;
    let token = hub.token(Some("42"), &["orders", "news"], &[]);
    let mut sse = hub
        .subscribe("channel=orders&channel=news", Some(&token))
        .await;
    let client = redis::Client::open(format!("redis://{}", REDIS)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // The source subscribes shortly after the hub starts: probe until a probe
    // reaches it (its PUBLISH counts a receiver), then read that one probe.
    let probe = conn.clone();
    eventually("the source to subscribe", || {
        let mut conn = probe.clone();
        let channel = format!("{app}:channel:news");
        async move {
            let receivers: i64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg("probe")
                .query_async(&mut conn)
                .await
                .unwrap();
            receivers > 0
        }
    })
    .await;
    let e = sse.expect().await;
    assert_eq!(e.data, "probe");
    let mut send = async |channel: String, message: &str| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut conn)
            .await
            .unwrap();
    };
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
    let history = hub.node.hub().history(&ch("orders"), 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(hub.node.stats().source_notifications >= 7);
    clean_redis(&format!("redis://{}", REDIS), &app).await;
}

/// A channel whose history expired and was dropped, then published to again, still
/// reports the gap to a client that was there before the expired events.
async fn a_channel_dropped_and_published_again_keeps_its_gap(kind: Kind) {
    let Some(place) = Place::new(kind).await else {
        return;
    };
    let clock = ManualClock::starting_now();
    let b = place.broker_on(
        policies(10, Duration::from_millis(300)),
        Fanout::new(),
        clock.clock(),
    );
    ready(b.as_ref()).await;
    let before = publish(b.as_ref(), &["other"]).await;
    publish(b.as_ref(), &["a"]).await;
    outlive_history(kind, b.as_ref(), &clock, Duration::from_millis(500)).await;
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
async fn a_memory_channel_dropped_and_published_again_keeps_its_gap() {
    a_channel_dropped_and_published_again_keeps_its_gap(Kind::Memory).await;
}

#[tokio::test]
async fn a_redis_channel_dropped_and_published_again_keeps_its_gap() {
    a_channel_dropped_and_published_again_keeps_its_gap(Kind::Redis).await;
}

#[tokio::test]
async fn a_sharded_redis_channel_dropped_and_published_again_keeps_its_gap() {
    a_channel_dropped_and_published_again_keeps_its_gap(Kind::ShardedRedis).await;
}

#[tokio::test]
async fn a_nats_channel_dropped_and_published_again_keeps_its_gap() {
    a_channel_dropped_and_published_again_keeps_its_gap(Kind::Nats).await;
}
