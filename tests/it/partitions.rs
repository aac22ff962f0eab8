//! Channels spread over several partitions (`memory.partitions`): one id still
//! resumes every channel of a connection, an event on channels of several
//! partitions arrives once, and a gap resets only the channels of its partition.

use std::collections::BTreeMap;
use std::time::Duration;

use herald::core::{Cursor, Partitions};
use serde_json::json;

use crate::fixture::{Client, Kind, Place, TestHub, eventually, json};

const PARTITIONS: u16 = 8;

/// `count` channel names that fall in different partitions.
fn spread(count: usize) -> Vec<String> {
    let partitions = Partitions::new(PARTITIONS).unwrap();
    let mut taken = Vec::new();
    let mut names = Vec::new();
    for i in 0.. {
        let name = format!("room{i}");
        let partition = partitions.of_name(&name);
        if !taken.contains(&partition) {
            taken.push(partition);
            names.push(name);
            if names.len() == count {
                break;
            }
        }
    }
    names
}

async fn partitioned(history_size: usize) -> TestHub {
    TestHub::builder()
        .config(|c| {
            c.memory.partitions = PARTITIONS;
            c.channels.history_size = history_size;
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cursor_resumes_channels_of_several_partitions_losing_and_repeating_nothing() {
    let hub = partitioned(1000).await;
    let rooms = spread(3);
    let (a, b, c) = (&rooms[0], &rooms[1], &rooms[2]);
    let token = hub.token(None, &["*"], &[]);
    let query = format!("channel={a}&channel={b}&channel={c}&envelope=true");
    let mut sse = hub.subscribe(&query, Some(&token)).await;

    const TOTAL: u64 = 300;
    let targets = [
        json!([a]),
        json!([b]),
        json!([c]),
        json!([a, c]),
        json!([a, b, c]),
        json!(["elsewhere"]),
    ];
    // Two publishers at once, each publishing every other event in order.
    let publishing: Vec<_> = (0..2u64)
        .map(|k| {
            let client = Client::new(hub.url.clone());
            let targets = targets.clone();
            tokio::spawn(async move {
                for i in (k..TOTAL).step_by(2) {
                    let channels = targets[(i % 6) as usize].clone();
                    client
                        .publish(json!({"channels": channels, "data": {"i": i}}))
                        .await;
                }
            })
        })
        .collect();

    // Per channel, the events received in order; each event once across channels.
    let mut seen: Vec<u64> = Vec::new();
    let mut by_channel: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last_id = String::new();
    let mut reconnects = 0;
    let expected = TOTAL - TOTAL / 6;
    while (seen.len() as u64) < expected {
        for _ in 0..23 {
            if seen.len() as u64 == expected {
                break;
            }
            let e = sse.expect().await;
            assert_ne!(e.event, "reset", "history covers the gap");
            let body = json(&e);
            let i = body["data"]["i"].as_u64().unwrap();
            assert!(
                Cursor::parse(&e.id).is_some(),
                "the id is a cursor: {}",
                e.id
            );
            seen.push(i);
            let channels = match body["channels"].as_array() {
                Some(all) => all.iter().map(|c| c.as_str().unwrap().to_owned()).collect(),
                None => vec![body["channel"].as_str().unwrap().to_owned()],
            };
            let wanted = targets[(i % 6) as usize].as_array().unwrap().len();
            assert_eq!(
                channels.len(),
                wanted,
                "event {i} names each of its channels: {body}"
            );
            for channel in channels {
                by_channel.entry(channel).or_default().push(i);
            }
            last_id = e.id;
        }
        drop(sse);
        reconnects += 1;
        let after = seen.len() as u64;
        eventually(format!("more than {after} events published"), || {
            hub.node.stats().events_published > after + 2
        })
        .await;
        sse = hub
            .subscribe_from(&query, Some(&token), Some(&last_id))
            .await;
    }
    for publisher in publishing {
        publisher.await.unwrap();
    }
    assert!(reconnects >= 5, "the test disconnected mid-stream");
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    for (channel, got) in &by_channel {
        let index = rooms.iter().position(|r| r == channel).unwrap();
        let want: Vec<u64> = (0..TOTAL)
            .filter(|i| {
                targets[(i % 6) as usize]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t == &rooms[index])
            })
            .collect();
        let mut all = got.clone();
        all.sort_unstable();
        assert_eq!(all, want, "channel {channel}: every event");
        for k in 0..2 {
            let mine: Vec<u64> = got.iter().copied().filter(|i| i % 2 == k).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "channel {channel}: publisher {k}'s events in order: {mine:?}"
            );
        }
    }
    assert!(sse.quiet_for(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn a_gap_resets_only_the_channels_of_its_partition() {
    let hub = partitioned(3).await;
    let rooms = spread(2);
    let (a, b) = (&rooms[0], &rooms[1]);
    let token = hub.token(None, &["*"], &[]);
    let query = format!("channel={a}&channel={b}");
    let mut sse = hub.subscribe(&query, Some(&token)).await;
    hub.publish(json!({"channel": a, "data": "a0"})).await;
    hub.publish(json!({"channel": b, "data": "b0"})).await;
    sse.expect().await;
    let last = sse.expect().await;
    drop(sse);

    // Channel a misses more than its history keeps; channel b one event.
    for i in 1..=5 {
        hub.publish(json!({"channel": a, "data": format!("a{i}")}))
            .await;
    }
    hub.publish(json!({"channel": b, "data": "b1"})).await;
    let mut sse = hub
        .subscribe_from(&query, Some(&token), Some(&last.id))
        .await;
    let e = sse.expect().await;
    assert_eq!(
        e.data, "b1",
        "the partition that kept its history replays it"
    );
    let reset = sse.expect().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(json(&reset), json!({"reason": "expired", "channels": [a]}));
    drop(sse);

    // The reset's id resumes cleanly: nothing before it again.
    let live = hub.publish(json!({"channel": a, "data": "a6"})).await;
    let mut sse = hub
        .subscribe_from(&query, Some(&token), Some(&reset.id))
        .await;
    let e = sse.expect().await;
    assert_eq!((e.data.as_str(), e.event.as_str()), ("a6", "message"));
    assert_eq!(
        Cursor::parse(&e.id)
            .unwrap()
            .get(Partitions::new(PARTITIONS).unwrap().of_name(a)),
        Cursor::parse(&live)
            .unwrap()
            .get(Partitions::new(PARTITIONS).unwrap().of_name(a)),
    );
    assert!(sse.quiet_for(Duration::from_millis(100)).await.is_none());
}

#[tokio::test]
async fn ids_from_elsewhere_and_publisher_ids_resume_as_on_one_partition() {
    let hub = partitioned(100).await;
    let rooms = spread(2);
    let (a, b) = (&rooms[0], &rooms[1]);
    let token = hub.token(None, &["*"], &[]);
    let query = format!("channel={a}&channel={b}");

    // A publisher id names its event in each partition it reached.
    hub.publish(json!({"channels": [a, b], "data": 1, "id": "order-1"}))
        .await;
    hub.publish(json!({"channel": a, "data": 2})).await;
    hub.publish(json!({"channel": b, "data": 3})).await;
    let mut sse = hub
        .subscribe_from(&query, Some(&token), Some("order-1"))
        .await;
    let mut data = vec![sse.expect().await.data, sse.expect().await.data];
    data.sort();
    assert_eq!(data, ["2", "3"]);

    // An id of another form, or a cursor of epochs this hub never had, is unknown.
    for id in ["5f3a9c1e-42", "0.00000000.1_1.00000000.1"] {
        let mut sse = hub.subscribe_from(&query, Some(&token), Some(id)).await;
        let reset = sse.expect().await;
        assert_eq!(reset.event, "reset", "{id}");
        assert_eq!(json(&reset)["reason"], "unknown_id");
    }

    // The first message carries the connection's starting cursor, over its own
    // partitions only.
    let mut sse = hub.subscribe(&query, Some(&token)).await;
    let start = Cursor::parse(sse.connected["last_event_id"].as_str().unwrap()).unwrap();
    let partitions = Partitions::new(PARTITIONS).unwrap();
    let mut own = vec![
        partitions.of_name(a),
        partitions.of_name(b),
        partitions.of_name("$broadcast"),
    ];
    own.sort_unstable();
    own.dedup();
    let held: Vec<u16> = start.positions().iter().map(|p| p.partition).collect();
    assert_eq!(held, own, "the partitions of a, b and $broadcast");
    hub.publish(json!({"channel": b, "data": 4})).await;
    assert_eq!(sse.expect().await.data, "4");
}

#[tokio::test]
async fn a_publisher_id_that_looks_like_a_cursor_is_refused() {
    let hub = partitioned(10).await;
    let body = json!({"channel": "a", "data": 1, "id": "1.0000000a.5_3.0000000b.9"});
    let (status, answer) = hub.publish_with(Some(&hub.publisher()), &body).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("not valid"), "{answer}");
}

/// A hub with `PARTITIONS` partitions on the broker of `place`, with `change`.
async fn on_place(place: &Place, change: impl FnOnce(&mut herald::Config)) -> TestHub {
    let hub = TestHub::builder()
        .on(place)
        .config(|c| {
            c.redis.partitions = PARTITIONS;
            c.nats.partitions = PARTITIONS;
            c.channels.history_size = 100;
            change(c);
        })
        .start()
        .await;
    hub.wait_ready(200).await;
    hub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_cursor_from_one_hub_resumes_every_partition_on_another() {
    a_cursor_from_one_hub_resumes_every_partition_on_another(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_a_cursor_from_one_hub_resumes_every_partition_on_another() {
    a_cursor_from_one_hub_resumes_every_partition_on_another(Kind::Nats).await;
}

async fn a_cursor_from_one_hub_resumes_every_partition_on_another(kind: Kind) {
    let Some(place) = Place::new(kind).await else {
        return;
    };
    let (first, second) = (
        on_place(&place, |_| {}).await,
        on_place(&place, |_| {}).await,
    );
    let rooms = spread(3);
    let token = first.token(None, &["*"], &[]);
    let query = format!(
        "channel={}&channel={}&channel={}&envelope=true",
        rooms[0], rooms[1], rooms[2]
    );
    let mut sse = first.subscribe(&query, Some(&token)).await;
    let all = json!([rooms[0], rooms[1], rooms[2]]);
    for i in 0..6 {
        let channels = if i == 2 {
            all.clone()
        } else {
            json!([rooms[i % 3]])
        };
        first
            .publish(json!({"channels": channels, "data": i}))
            .await;
    }
    let mut got = Vec::new();
    let mut last = String::new();
    for _ in 0..4 {
        let e = sse.expect().await;
        got.push(json(&e)["data"].as_u64().unwrap());
        last = e.id;
    }
    drop(sse);
    // Published on the second hub while the client is away.
    for i in 6..9 {
        second
            .publish(json!({"channel": rooms[i % 3], "data": i}))
            .await;
    }
    let mut sse = second
        .subscribe_from(&query, Some(&token), Some(&last))
        .await;
    while got.len() < 9 {
        let e = sse.expect().await;
        assert_ne!(e.event, "reset", "every partition's history covers the gap");
        got.push(json(&e)["data"].as_u64().unwrap());
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..9).collect::<Vec<u64>>(),
        "each event once: {got:?}"
    );
    for room in &rooms {
        let index = rooms.iter().position(|r| r == room).unwrap() as u64;
        let order: Vec<u64> = got
            .iter()
            .copied()
            .filter(|i| *i == 2 || i % 3 == index)
            .collect();
        let mut want = order.clone();
        want.sort_unstable();
        assert_eq!(order, want, "{room} in order");
    }
    assert!(sse.quiet_for(Duration::from_millis(200)).await.is_none());
    place.clean().await;
}

/// The events of `partition` this hub received from the broker, from `/metrics`.
async fn received(hub: &TestHub, partition: u16) -> u64 {
    let metrics = hub.get("/metrics").await.text().await.unwrap();
    let line = format!("herald_broker_received_events_total{{partition=\"{partition}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_hub_receives_only_the_partitions_its_connections_need() {
    a_hub_receives_only_the_partitions_its_connections_need(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_a_hub_receives_only_the_partitions_its_connections_need() {
    a_hub_receives_only_the_partitions_its_connections_need(Kind::Nats).await;
}

async fn a_hub_receives_only_the_partitions_its_connections_need(kind: Kind) {
    let Some(place) = Place::new(kind).await else {
        return;
    };
    let quick = |c: &mut herald::Config| {
        c.redis.follow_linger = Duration::ZERO;
        c.redis.timeout = Duration::from_secs(1);
        c.nats.follow_linger = Duration::ZERO;
        c.nats.timeout = Duration::from_secs(1);
    };
    let (publisher, reader) = (on_place(&place, quick).await, on_place(&place, quick).await);
    let partitions = Partitions::new(PARTITIONS).unwrap();
    // The hub's own channels, which every hub follows (`$broadcast` while it has
    // connections, `$presence`), have a partition of their own.
    let own = partitions.hub().unwrap();
    assert_eq!(partitions.of_name(herald::core::BROADCAST), own);
    assert_eq!(partitions.of_name("$presence"), own);
    let mut rooms: Vec<String> = Vec::new();
    for i in 0..10_000 {
        let room = format!("room{i}");
        let p = partitions.of_name(&room);
        assert_ne!(p, own);
        if rooms.iter().all(|r| partitions.of_name(r) != p) {
            rooms.push(room);
            if rooms.len() == 3 {
                break;
            }
        }
    }
    let [needed, other, third] = [0, 1, 2].map(|i| partitions.of_name(&rooms[i]));
    let token = reader.token(None, &["*"], &[]);
    let query = format!("channel={}", rooms[0]);
    let mut sse = reader.subscribe(&query, Some(&token)).await;
    for i in 0..9 {
        publisher
            .publish(json!({"channel": rooms[i % 3], "data": i}))
            .await;
    }
    let mut last = String::new();
    for want in [0, 3, 6] {
        let e = sse.expect().await;
        assert_eq!(json(&e), want);
        last = e.id;
    }
    assert!(sse.quiet_for(Duration::from_millis(200)).await.is_none());
    assert_eq!(received(&reader, needed).await, 3);
    assert_eq!(
        (
            received(&reader, other).await,
            received(&reader, third).await
        ),
        (0, 0),
        "nothing of partitions no connection of the hub is on"
    );
    assert!(
        received(&publisher, needed).await == 0,
        "nor on the publishing hub"
    );
    let followed = || async {
        let stats = reader.stats().await;
        stats["partitions_followed"].as_u64().unwrap()
    };
    let with_connection = followed().await;
    assert_eq!(with_connection, 2, "the room's partition and the hub's own");
    // The connection leaves: the partition is no longer followed...
    drop(sse);
    eventually(
        "the hub to stop following the room's partition",
        async || followed().await < with_connection,
    )
    .await;
    publisher
        .publish(json!({"channel": rooms[0], "data": 9}))
        .await;
    // ...and a connection that resumes on it gets what it missed and what follows.
    let mut sse = reader
        .subscribe_from(&query, Some(&token), Some(&last))
        .await;
    assert_eq!(json(&sse.expect().await), 9);
    publisher
        .publish(json!({"channel": rooms[0], "data": 10}))
        .await;
    assert_eq!(json(&sse.expect().await), 10);
    assert_eq!(received(&reader, other).await, 0);
    place.clean().await;
}
