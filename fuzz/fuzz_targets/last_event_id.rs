//! `Last-Event-ID` values: any text reads back as itself; publisher ids and the
//! hub's own ids never overlap; and the memory broker resolves any id to a replay
//! (events after it, or a reset) without panicking.
#![no_main]

use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use herald::broker::memory::MemoryBroker;
use herald::broker::{Broker, LocalDelivery, ResumeFrom};
use herald::core::event::{is_hub_id, parse_hub_id, validate_publisher_id};
use herald::core::{ChannelName, Fanout, NewEvent, Policies};
use herald::stats::Stats;
use libfuzzer_sys::fuzz_target;

fn channels() -> [ChannelName; 2] {
    ["orders", "team:1"].map(|c| ChannelName::new(c).expect("a valid name"))
}

/// A broker with a few events, some with publisher ids, and the id of its head.
fn broker() -> &'static (MemoryBroker, String) {
    static BROKER: OnceLock<(MemoryBroker, String)> = OnceLock::new();
    BROKER.get_or_init(|| {
        let delivery = LocalDelivery::new(Fanout::new(), Arc::new(Stats::default()));
        let broker = MemoryBroker::new(Arc::new(Policies::default()), delivery, 1 << 20);
        let [orders, team] = channels();
        let events = vec![
            NewEvent::text(orders.clone(), "a"),
            NewEvent::text(team.clone(), "b").with_id("order-17"),
            NewEvent::text(orders, "c")
                .also_to(team)
                .with_id("urn:uuid:1"),
        ];
        let accepted = broker.publish(events).now_or_never().expect("ready");
        assert!(accepted.is_ok());
        let head = broker
            .head()
            .now_or_never()
            .expect("ready")
            .expect("a head");
        (broker, head)
    })
}

fuzz_target!(|input: &[u8]| {
    let Ok(id) = std::str::from_utf8(input) else {
        return;
    };
    let from = ResumeFrom::parse(id);
    assert_eq!(from.as_id(), id, "an id reads back as sent");
    assert_eq!(from == ResumeFrom::Earliest, id == "earliest");

    let publisher = validate_publisher_id(id).is_ok();
    if publisher {
        assert!(!is_hub_id(id), "a publisher id is never of the hub's form");
        assert!(!id.eq_ignore_ascii_case("earliest"));
        assert!(!id.is_empty() && id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic()));
    }
    if let Some((epoch, seq)) = parse_hub_id(id) {
        assert!(is_hub_id(id));
        let (e, s) = id.split_once('-').expect("a dash");
        assert_eq!(epoch, e);
        assert_eq!(s.parse::<u64>().ok(), Some(seq));
    }

    let (broker, head) = broker();
    let replay = broker
        .replay(&channels(), from)
        .now_or_never()
        .expect("the memory broker never waits")
        .expect("the memory broker is always available");
    match &replay.reset {
        Some(reset) => assert!(replay.events.is_empty() || !reset.channels.is_empty()),
        None => {
            for event in &replay.events {
                assert!(event.seq > replay.after_seq, "only what came after");
            }
        }
    }
    if id == head {
        assert!(replay.events.is_empty() && replay.reset.is_none());
    }
});
