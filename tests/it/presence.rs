//! Presence across nodes: hubs over the real Redis and NATS, one of them a process
//! killed with SIGKILL.

use herald::Config;
use herald::config::NamespaceConfig;
use serde_json::json;

use crate::fixture::{Client, HubProcess, Kind, Place, TestHub, eventually};
use crate::websocket::Ws;

const HEARTBEAT: &str = "200ms";
const NODE_TIMEOUT: &str = "1s";

/// Presence on `doc:*`, and quick heartbeats so a dead node is noticed soon.
fn configure(c: &mut Config) {
    let ns = NamespaceConfig {
        presence: Some(true),
        ..Default::default()
    };
    c.namespaces.insert("doc".into(), ns);
    c.presence.heartbeat = humantime::parse_duration(HEARTBEAT).unwrap();
    c.presence.node_timeout = humantime::parse_duration(NODE_TIMEOUT).unwrap();
}

/// Reads presence events into `log` (kind, user) until `kind` of `user` arrives.
async fn until_presence(ws: &mut Ws, log: &mut Vec<(String, String)>, kind: &str, user: &str) {
    loop {
        let event = ws.expect("event").await;
        let Some(name) = event["event"].as_str() else {
            continue;
        };
        if !name.starts_with("presence.") {
            continue;
        }
        let who = event["data"]["user"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        log.push((name.to_owned(), who.clone()));
        if name == kind && who == user {
            return;
        }
    }
}

/// `GET /channels/doc:1/presence` on `hub`: (user, connections) in order.
async fn listed(hub: &Client, token: &str) -> Vec<(String, u64)> {
    let body = hub.get_json("/channels/doc:1/presence", token).await;
    body["users"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["connections"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until the presence list on `hub` is `want` (in any order).
async fn wait_listed(hub: &Client, token: &str, want: &[(&str, u64)]) {
    let mut want: Vec<(String, u64)> = want.iter().map(|(u, n)| ((*u).to_owned(), *n)).collect();
    want.sort();
    let url = &hub.url;
    eventually(format!("{url} to list {want:?}"), || async {
        let mut got = listed(hub, token).await;
        got.sort();
        if got == want {
            Ok(())
        } else {
            Err(format!("{url} lists {got:?}, expected {want:?}"))
        }
    })
    .await;
}

async fn presence_spans_nodes(kind: Kind) {
    let Some(place) = Place::new(kind).await else {
        return;
    };
    let a = TestHub::builder()
        .on(&place)
        .config(configure)
        .start()
        .await;
    let b = TestHub::builder()
        .on(&place)
        .config(configure)
        .start()
        .await;
    let mut c = HubProcess::builder()
        .on(&place)
        .env("HERALD_NAMESPACES__DOC__PRESENCE", "true")
        .env("HERALD_PRESENCE__HEARTBEAT", HEARTBEAT)
        .env("HERALD_PRESENCE__NODE_TIMEOUT", NODE_TIMEOUT)
        .start()
        .await;
    let c_addr = c.url.trim_start_matches("http://").to_owned();
    let token = |user: &str| a.token(Some(user), &["doc:*"], &[]);
    let watcher_token = token("watcher");

    // The watcher on node A sees every join, wherever it happens.
    let mut watcher = Ws::open_at(&a.addr.to_string(), "channel=doc:1", Some(&watcher_token)).await;
    let mut log = Vec::new();
    until_presence(&mut watcher, &mut log, "presence.join", "watcher").await;
    let ana = token("ana");
    let tab1 = Ws::open_at(&b.addr.to_string(), "channel=doc:1", Some(&ana)).await;
    until_presence(&mut watcher, &mut log, "presence.join", "ana").await;

    // A second tab of ana's on node C: every node counts her once, with two tabs.
    let mut tab2 = Ws::open_at(&c_addr, "channel=doc:1", Some(&ana)).await;
    for hub in [&*a, &*b, &*c] {
        wait_listed(hub, &watcher_token, &[("watcher", 1), ("ana", 2)]).await;
    }
    let answer = tab2
        .request(json!({"op": "presence", "channel": "doc:1"}))
        .await;
    assert_eq!(answer["users"].as_array().unwrap().len(), 2, "{answer}");

    // Joins on one node reach subscribers on the others.
    let carl = token("carl");
    let mut carl_ws = Ws::open_at(&b.addr.to_string(), "channel=doc:1", Some(&carl)).await;
    until_presence(&mut watcher, &mut log, "presence.join", "carl").await;
    let mut seen_on_c = Vec::new();
    until_presence(&mut tab2, &mut seen_on_c, "presence.join", "carl").await;
    let bob = token("bob");
    let _bob_ws = Ws::open_at(&c_addr, "channel=doc:1", Some(&bob)).await;
    until_presence(&mut watcher, &mut log, "presence.join", "bob").await;

    // Ana closes her tab on B: she is still on C, so she does not leave.
    drop(tab1);
    wait_listed(
        &a,
        &watcher_token,
        &[("watcher", 1), ("ana", 1), ("carl", 1), ("bob", 1)],
    )
    .await;

    // Node C dies without a word: after the node timeout its users leave everywhere.
    c.kill().await;
    until_presence(&mut watcher, &mut log, "presence.leave", "ana").await;
    if !log.contains(&("presence.leave".to_owned(), "bob".to_owned())) {
        until_presence(&mut watcher, &mut log, "presence.leave", "bob").await;
    }
    let mut seen_on_b = Vec::new();
    until_presence(&mut carl_ws, &mut seen_on_b, "presence.leave", "ana").await;
    for hub in [&*a, &*b] {
        wait_listed(hub, &watcher_token, &[("watcher", 1), ("carl", 1)]).await;
    }
    // Ana joined once and left once, across her tabs on two nodes.
    let of_ana: Vec<&str> = log
        .iter()
        .filter(|(_, user)| user == "ana")
        .map(|(kind, _)| kind.as_str())
        .collect();
    assert_eq!(of_ana, ["presence.join", "presence.leave"], "{log:?}");

    drop((watcher, tab2, carl_ws));
    drop((a, b));
    place.clean().await;
}

#[tokio::test]
async fn presence_spans_nodes_over_redis() {
    presence_spans_nodes(Kind::Redis).await;
}

#[tokio::test]
async fn presence_spans_nodes_over_nats() {
    presence_spans_nodes(Kind::Nats).await;
}
