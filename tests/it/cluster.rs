//! Hubs over a Redis Cluster (`redis.cluster`) started by the test: three
//! primaries with a replica each, channels spread over 16 partitions. A client
//! resumes on any hub with one id, through a cut and through a primary failing
//! over to its replica, losing and repeating nothing, each channel in order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herald::core::Partitions;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixture::{Place, PrivateRedisCluster, Sse, TestHub, json};

const PARTITIONS: u16 = 16;

/// Channels in partitions spread over the whole range of slots, so over every
/// primary: the partitions are laid out in order over the slots.
fn rooms() -> Vec<(String, u16)> {
    let partitions = Partitions::new(PARTITIONS).unwrap();
    let wanted = [0u16, 2, 6, 8, 12, 14];
    wanted
        .iter()
        .map(|&p| {
            let name = (0..)
                .map(|i| format!("room{i}"))
                .find(|name| partitions.of_name(name) == p)
                .unwrap();
            (name, p)
        })
        .collect()
}

async fn hub_on(place: &Place) -> TestHub {
    TestHub::builder()
        .on(place)
        .config(|c| {
            c.redis.partitions = PARTITIONS;
            // What a 2xx answers is on a replica too, so a failover loses none of it.
            c.redis.wait_replicas = 1;
            c.redis.reconnect_max = Duration::from_millis(500);
            c.channels.history_size = 1000;
        })
        .start()
        .await
}

/// Publishes event `n` on `hub` under the publisher id `ev-n`, retrying while the
/// cluster is failing over (503): the id makes a retry of an event that did land
/// a duplicate rather than a second copy.
async fn publish(hub: &TestHub, n: u64, channels: Value) {
    let token = hub.publisher();
    let body = json!({"channels": channels, "data": n, "id": format!("ev-{n}")});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = hub.publish_with(Some(&token), &body).await;
        if status == StatusCode::OK {
            return;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert!(
            Instant::now() < deadline,
            "event {n} still refused: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a client read: each event's number in arrival order, and its last id.
#[derive(Default)]
struct Reader {
    got: Vec<u64>,
    last: Option<String>,
}

impl Reader {
    /// Reads from `sse` until `count` events in all.
    async fn read_to(&mut self, sse: &mut Sse, count: usize) {
        while self.got.len() < count {
            let e = sse.expect().await;
            assert_ne!(e.event, "reset", "history covers every gap");
            if e.event == "connected" || e.event == "heartbeat" {
                continue;
            }
            self.got.push(json(&e)["data"].as_u64().unwrap());
            self.last = Some(e.id);
        }
    }

    /// Each event once, and each channel's events in the order published.
    fn check(&self, rooms: &[(String, u16)], total: u64, on_all: impl Fn(u64) -> bool) {
        let mut sorted = self.got.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..total).collect::<Vec<_>>(),
            "each event once: {:?}",
            self.got
        );
        let mut per_room: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for &n in &self.got {
            for room in 0..rooms.len() {
                if on_all(n) || n as usize % rooms.len() == room {
                    per_room.entry(room).or_default().push(n);
                }
            }
        }
        for (room, order) in per_room {
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "{} in order: {order:?}",
                rooms[room].0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_any_hub_over_a_redis_cluster_through_a_cut_and_a_failover() {
    let Some(mut cluster) = PrivateRedisCluster::start(3, 1).await else {
        return;
    };
    let place = Place::on_redis_cluster(&cluster);
    let hubs = [
        hub_on(&place).await,
        hub_on(&place).await,
        hub_on(&place).await,
    ];
    let rooms = rooms();
    let names: Vec<&str> = rooms.iter().map(|(name, _)| name.as_str()).collect();
    let everywhere = json!(names);
    // Every seventh event goes to every room, across partitions and primaries.
    let on_all = |n: u64| n % 7 == 3;
    let channels_of = |n: u64| {
        if on_all(n) {
            everywhere.clone()
        } else {
            json!([names[n as usize % names.len()]])
        }
    };
    let query = names
        .iter()
        .map(|n| format!("channel={n}"))
        .chain(["envelope=true".to_owned()])
        .collect::<Vec<_>>()
        .join("&");
    let token = hubs[0].token(None, &["*"], &[]);

    // Read on hub A while all three hubs publish.
    let mut reader = Reader::default();
    let mut sse = hubs[0].subscribe(&query, Some(&token)).await;
    for n in 0..30 {
        publish(&hubs[n as usize % 3], n, channels_of(n)).await;
    }
    reader.read_to(&mut sse, 20).await;
    drop(sse);

    // Cut off; more is published meanwhile; resumed on hub B.
    for n in 30..45 {
        publish(&hubs[2], n, channels_of(n)).await;
    }
    let mut sse = hubs[1]
        .subscribe_from(&query, Some(&token), reader.last.as_deref())
        .await;
    reader.read_to(&mut sse, 45).await;
    reader.check(&rooms, 45, on_all);

    // A primary holding some of the client's partitions is killed; its replica
    // takes over while events keep being published.
    let primaries = cluster.primaries().await;
    assert_eq!(primaries.len(), 3, "three primaries");
    let victim = primaries[0];
    cluster.kill_and_fail_over(victim).await;
    for n in 45..75 {
        publish(&hubs[n as usize % 3], n, channels_of(n)).await;
    }
    reader.read_to(&mut sse, 60).await;
    drop(sse);
    // And cut off again, resumed on hub C.
    for n in 75..90 {
        publish(&hubs[0], n, channels_of(n)).await;
    }
    let mut sse = hubs[2]
        .subscribe_from(&query, Some(&token), reader.last.as_deref())
        .await;
    reader.read_to(&mut sse, 90).await;
    reader.check(&rooms, 90, on_all);
    assert!(sse.quiet_for(Duration::from_millis(300)).await.is_none());
    assert_ne!(
        cluster.primaries().await,
        primaries,
        "a replica was promoted"
    );
}
