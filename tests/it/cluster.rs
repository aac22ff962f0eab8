//! Hubs over a Redis Cluster (`redis.cluster`) started by the test: three
//! primaries with a replica each, channels spread over 16 partitions. A client
//! resumes on any hub with one id, through a cut and through a primary failing
//! over to its replica, losing and repeating nothing, each channel in order; and
//! the history checker, which follows many clients through kills and pauses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::core::Partitions;
use parking_lot::RwLock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::fixture::process::ProcessBuilder;
use crate::fixture::{
    Client, HubProcess, PATIENCE, Place, PrivateNats, PrivateRedisCluster, Sse, TestHub, json,
};

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

    // Cut off; more is published meanwhile (on hub C); resumed on hub B.
    let cut_off = async |reader: &mut Reader, published: &TestHub, to: &TestHub, range| {
        for n in range {
            publish(published, n, channels_of(n)).await;
        }
        to.subscribe_from(&query, Some(&token), reader.last.as_deref())
            .await
    };
    let mut sse = cut_off(&mut reader, &hubs[2], &hubs[1], 30..45).await;
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
    let mut sse = cut_off(&mut reader, &hubs[0], &hubs[2], 75..90).await;
    reader.read_to(&mut sse, 90).await;
    reader.check(&rooms, 90, on_all);
    assert!(sse.quiet_for(Duration::from_millis(300)).await.is_none());
    assert_ne!(
        cluster.primaries().await,
        primaries,
        "a replica was promoted"
    );
}

/// What one follower saw: every event with the channels it came on, and every
/// reset.
#[derive(Default, Debug)]
struct History {
    /// Event numbers in arrival order.
    events: Vec<u64>,
    /// For each event, the stream it came on and its id (to tell what went wrong).
    came: Vec<(usize, String)>,
    resets: Vec<String>,
    /// How many streams it opened (1 + reconnections).
    streams: usize,
    /// Where and when each stream was opened.
    opened: Vec<String>,
}

/// Follows `rooms` from hub to hub: starts on a random live hub, and whenever its
/// stream ends (the hub was killed) or `cut` fires, goes on from another with its
/// last id. Stops when `stop` fires.
async fn follow_across(
    hubs: Arc<RwLock<Vec<Client>>>,
    query: String,
    token: String,
    mut cut: watch::Receiver<u32>,
    mut stop: watch::Receiver<bool>,
    live: tokio::sync::mpsc::UnboundedSender<()>,
) -> History {
    let mut history = History::default();
    let mut last: Option<String> = None;
    let mut announced = false;
    loop {
        if *stop.borrow() {
            return history;
        }
        let hub = {
            let hubs = hubs.read();
            hubs[rand::random::<u32>() as usize % hubs.len()].clone()
        };
        let Some(mut sse) = hub
            .try_subscribe_from(&query, Some(&token), last.as_deref())
            .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        history.streams += 1;
        history.opened.push(format!("{} after {last:?}", hub.url));
        if !sse.connected_id.is_empty() {
            last = Some(sse.connected_id.clone());
        }
        if !announced {
            announced = true;
            let _ = live.send(());
        }
        cut.borrow_and_update();
        loop {
            tokio::select! {
                event = sse.next() => {
                    let Some(event) = event else { break };
                    match event.event.as_str() {
                        "reset" => history.resets.push(event.data),
                        "heartbeat" => continue,
                        _ => {
                            history.events.push(json(&event)["data"].as_u64().unwrap());
                            history.came.push((history.streams, event.id.clone()));
                        }
                    }
                    if !event.id.is_empty() {
                        last = Some(event.id);
                    }
                }
                _ = cut.changed() => break,
                _ = stop.changed() => return history,
            }
        }
    }
}

/// Publishes event `n` to `channels` on a random live hub with the publisher id
/// `chk-n`, retrying on any hub while hubs or primaries are down; returns once it
/// is answered 200.
async fn publish_surely(hubs: &RwLock<Vec<Client>>, token: &str, n: u64, channels: Value) {
    let body = json!({"channels": channels, "data": n, "id": format!("chk-{n}")});
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = {
            let hubs = hubs.read();
            hubs[rand::random::<u32>() as usize % hubs.len()]
                .url
                .clone()
        };
        let sent = http
            .post(format!("{url}/publish"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == StatusCode::OK => return,
            Ok(response) => {
                let status = response.status();
                assert_eq!(
                    status,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "event {n}: {:?}",
                    response.text().await
                );
            }
            // The hub was killed under the request.
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "event {n} never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three hub processes of one deployment that a fault script can kill and start
/// again, with the addresses the checker's clients pick from.
struct Deployment {
    node: ProcessBuilder,
    processes: Vec<HubProcess>,
    hubs: Arc<RwLock<Vec<Client>>>,
    cut: watch::Sender<u32>,
}

impl Deployment {
    async fn start(node: ProcessBuilder) -> Self {
        let mut processes = Vec::new();
        for _ in 0..3 {
            processes.push(node.clone().start().await);
        }
        for hub in &processes {
            hub.wait_ready(200).await;
        }
        let hubs = Arc::new(RwLock::new(
            processes
                .iter()
                .map(|p| Client::clone(p))
                .collect::<Vec<_>>(),
        ));
        Self {
            node,
            processes,
            hubs,
            cut: watch::channel(0).0,
        }
    }

    /// Kills hub `k` (SIGKILL) and starts it again, on another port.
    async fn kill_hub(&mut self, k: usize) {
        self.processes[k].kill().await;
        self.processes[k] = self.node.clone().start().await;
        self.processes[k].wait_ready(200).await;
        *self.hubs.write() = self.processes.iter().map(|p| Client::clone(p)).collect();
    }

    /// Cuts every follower's connection.
    fn cut(&self) {
        self.cut.send_modify(|c| *c += 1);
    }
}

/// The pause between two faults.
async fn a_moment() {
    tokio::time::sleep(Duration::from_millis(800)).await;
}

/// The history checker: followers moving between the hubs of `deployment`, and
/// publishing going on while `faults` happen. Some events go to channels in every
/// partition of the rooms, so a fault in one partition splits their publish and the
/// retry completes it late. Per follower it counts events lost without a reset,
/// events seen twice and events out of order on a channel: all must be 0. History
/// covers every gap here (nothing acknowledged is lost, and every channel keeps all
/// of it), so no reset is justified either.
async fn check_histories(mut deployment: Deployment, faults: impl AsyncFnOnce(&mut Deployment)) {
    let rooms = rooms();
    let names: Vec<String> = rooms.iter().map(|(name, _)| name.clone()).collect();
    let count = names.len();
    // Every eleventh event goes to every room.
    let channels_of = move |n: u64| -> Vec<usize> {
        if n % 11 == 5 {
            (0..count).collect()
        } else {
            vec![n as usize % count]
        }
    };
    // Follower k reads three rooms in different partitions.
    let subscriptions: Vec<Vec<usize>> =
        (0..6).map(|k| vec![k, (k + 2) % 6, (k + 5) % 6]).collect();
    let token = deployment.processes[0].token(None, &["*"], &[]);
    let publisher = deployment.processes[0].publisher();
    let cuts = deployment.cut.subscribe();
    let (stop, stops) = watch::channel(false);
    let (live, mut lives) = tokio::sync::mpsc::unbounded_channel();
    let followers: Vec<_> = subscriptions
        .iter()
        .map(|rooms_of| {
            let query = rooms_of
                .iter()
                .map(|&r| format!("channel={}", names[r]))
                .chain(["envelope=true".to_owned()])
                .collect::<Vec<_>>()
                .join("&");
            tokio::spawn(follow_across(
                deployment.hubs.clone(),
                query,
                token.clone(),
                cuts.clone(),
                stops.clone(),
                live.clone(),
            ))
        })
        .collect();
    for _ in 0..followers.len() {
        tokio::time::timeout(PATIENCE, lives.recv()).await.unwrap();
    }

    // Publishing goes on in order while the faults happen.
    const TOTAL: u64 = 400;
    let publishing = {
        let hubs = deployment.hubs.clone();
        let names = names.clone();
        tokio::spawn(async move {
            for n in 0..TOTAL {
                let channels: Vec<&str> =
                    channels_of(n).iter().map(|&r| names[r].as_str()).collect();
                publish_surely(&hubs, &publisher, n, json!(channels)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    faults(&mut deployment).await;
    publishing.await.unwrap();

    // Once every follower has had the time to read everything, it stops.
    let wanted: Vec<Vec<u64>> = subscriptions
        .iter()
        .map(|rooms_of| {
            (0..TOTAL)
                .filter(|&n| channels_of(n).iter().any(|r| rooms_of.contains(r)))
                .collect()
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.send_replace(true);
    for (k, follower) in followers.into_iter().enumerate() {
        let history = follower.await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let doubled = history.events.iter().filter(|n| !seen.insert(**n)).count();
        let lost: Vec<u64> = wanted[k]
            .iter()
            .copied()
            .filter(|n| !seen.contains(n))
            .collect();
        let mut out_of_order = 0;
        for &room in &subscriptions[k] {
            let on_room: Vec<u64> = history
                .events
                .iter()
                .copied()
                .filter(|&n| channels_of(n).contains(&room))
                .collect();
            out_of_order += on_room.windows(2).filter(|w| w[0] >= w[1]).count();
        }
        eprintln!(
            "history checker, follower {k}: {} events over {} streams; lost {}, doubled {doubled}, \
             out of order {out_of_order}, resets {} (justified 0)",
            history.events.len(),
            history.streams,
            lost.len(),
            history.resets.len()
        );
        if !lost.is_empty() || doubled > 0 || out_of_order > 0 {
            eprintln!("  follower {k} opened {:?}", history.opened);
            for (n, (stream, id)) in history.events.iter().zip(&history.came) {
                eprintln!("  follower {k}: stream {stream} event {n} id {id}");
            }
        }
        assert!(lost.is_empty(), "follower {k} lost {lost:?}");
        assert_eq!(doubled, 0, "follower {k} saw events twice");
        assert_eq!(out_of_order, 0, "follower {k} saw a channel out of order");
        assert!(
            history.resets.is_empty(),
            "follower {k} got resets no gap justified: {:?}",
            history.resets
        );
        assert!(history.streams >= 3, "follower {k} moved between hubs");
    }
}

/// The history checker over a Redis Cluster of three primaries with a replica each:
/// a hub killed, every connection cut, a primary stopped (SIGSTOP) for less than
/// the cluster's node timeout, another killed and failed over to its replica (which
/// its old primary then rejoins), another hub killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_checker_finds_nothing_lost_doubled_or_reordered_through_kills_and_pauses() {
    let Some(mut cluster) = PrivateRedisCluster::start(3, 1).await else {
        return;
    };
    let place = Place::on_redis_cluster(&cluster);
    let node = HubProcess::builder()
        .on(&place)
        .env("HERALD_REDIS__PARTITIONS", PARTITIONS.to_string())
        .env("HERALD_REDIS__WAIT_REPLICAS", "1")
        .env("HERALD_REDIS__RECONNECT_MAX", "500ms")
        .env("HERALD_CHANNELS__HISTORY_SIZE", "10000");
    let deployment = Deployment::start(node).await;
    check_histories(deployment, async |d: &mut Deployment| {
        a_moment().await;
        d.kill_hub(1).await;
        a_moment().await;
        d.cut();
        a_moment().await;
        let primaries = cluster.primaries().await;
        cluster
            .pause(primaries[1], Duration::from_millis(600))
            .await;
        a_moment().await;
        cluster.kill_and_fail_over(primaries[0]).await;
        d.cut();
        a_moment().await;
        d.kill_hub(2).await;
    })
    .await;
}

/// The history checker over NATS with 16 partitions (a stream each, on disk): a hub
/// killed, every connection cut, the NATS server stopped (SIGSTOP) for a moment,
/// then killed and started again, another hub killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_checker_over_nats_finds_nothing_lost_doubled_or_reordered() {
    let Some(mut nats) = PrivateNats::new().await else {
        return;
    };
    nats.start().await;
    let place = Place::on_nats(&nats);
    let node = HubProcess::builder()
        .on(&place)
        .env("HERALD_NATS__STORAGE", "file")
        .env("HERALD_NATS__PARTITIONS", PARTITIONS.to_string())
        .env("HERALD_NATS__RECONNECT_MAX", "500ms")
        .env("HERALD_CHANNELS__HISTORY_SIZE", "10000");
    let deployment = Deployment::start(node).await;
    check_histories(deployment, async |d: &mut Deployment| {
        a_moment().await;
        d.kill_hub(1).await;
        a_moment().await;
        d.cut();
        a_moment().await;
        nats.pause(Duration::from_millis(600)).await;
        a_moment().await;
        nats.kill().await;
        a_moment().await;
        nats.start().await;
        d.cut();
        a_moment().await;
        d.kill_hub(2).await;
    })
    .await;
}
