//! The single-node broker: positions from a counter, history in memory.
//!
//! One mutex guards the sequence, the channel logs and the delivery into the local
//! fan-out, so the order in which events get their positions is the order in which
//! every connection receives them, across channels. That is what makes a single
//! `Last-Event-ID` enough to resume a connection on several channels. The critical
//! section does no I/O and never waits: appending to a log and a non-blocking
//! `try_send` per subscriber.
//!
//! Ids are `{epoch}-{seq}`, where the epoch is chosen at random when the broker
//! starts: after a restart the history is gone, and an id from before it is unknown
//! rather than silently mistaken for a position in the new sequence.
//!
//! Events are stamped, and history aged, by the [`Clock`] the broker is given.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    Accepted, Broker, BrokerError, LocalDelivery, Replay, ResumeFrom, check_publisher_ids,
};
use crate::core::event::parse_hub_id;
use crate::core::{ChannelLogs, ChannelName, Clock, Event, NewEvent, Partition, Policies};

/// The in-memory broker of a single node.
#[derive(Debug)]
pub struct MemoryBroker {
    epoch: String,
    /// The partition this broker orders (0 when it orders every channel).
    partition: Partition,
    policies: Arc<Policies>,
    delivery: LocalDelivery,
    clock: Clock,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    seq: u64,
    /// The history, with the publisher ids it remembers.
    logs: ChannelLogs,
}

impl MemoryBroker {
    /// A broker delivering to `delivery`, keeping history by `policies` within
    /// `history_memory` bytes (`limits.history_memory`), aged by `clock`.
    pub fn new(
        policies: Arc<Policies>,
        delivery: LocalDelivery,
        history_memory: usize,
        clock: Clock,
    ) -> Self {
        Self::for_partition(0, policies, delivery, history_memory, clock)
    }

    /// A broker ordering partition `partition` of a partitioned deployment (see
    /// [`super::partitioned`]), otherwise as [`MemoryBroker::new`].
    pub fn for_partition(
        partition: Partition,
        policies: Arc<Policies>,
        delivery: LocalDelivery,
        history_memory: usize,
        clock: Clock,
    ) -> Self {
        let epoch = format!("{:x}", rand::random::<u32>());
        Self {
            epoch,
            partition,
            policies,
            delivery,
            clock,
            state: Mutex::new(State {
                seq: 0,
                logs: ChannelLogs::with_budget(history_memory),
            }),
        }
    }

    fn id_of(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    /// The position an id names, if it is one of this broker's.
    fn resolve(&self, state: &State, id: &str) -> Option<u64> {
        if let Some(known) = state.logs.publisher_id(id) {
            return Some(known.seq);
        }
        let (epoch, seq) = parse_hub_id(id)?;
        (epoch == self.epoch && seq <= state.seq).then_some(seq)
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn find_id(&self, id: &str) -> Result<Option<crate::core::Position>, BrokerError> {
        let state = self.state.lock();
        Ok(state
            .logs
            .publisher_id(id)
            .map(|known| crate::core::Position {
                partition: self.partition,
                epoch: crate::core::partition::epoch_tag(&self.epoch),
                seq: known.seq,
            }))
    }

    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Accepted>, BrokerError> {
        let mut accepted = Vec::with_capacity(events.len());
        let mut state = self.state.lock();
        check_publisher_ids(&events, |id| state.logs.publisher_id(id))?;
        let mut evicted = 0;
        for new in events {
            if let Some((id, known)) = new
                .id
                .as_ref()
                .and_then(|id| state.logs.publisher_id(id).map(|known| (id, known)))
            {
                accepted.push(Accepted {
                    id: id.clone(),
                    seq: known.seq,
                    duplicate: true,
                });
                continue;
            }
            let now = self.clock.now();
            state.seq += 1;
            let seq = state.seq;
            let id = new.id.clone().unwrap_or_else(|| self.id_of(seq));
            let event = Arc::new(
                Event::accept(new, seq, id.clone(), now).in_partition(self.partition, &self.epoch),
            );
            evicted += state.logs.append(&event, &self.policies, now);
            self.delivery.deliver(&event);
            accepted.push(Accepted {
                id,
                seq,
                duplicate: false,
            });
        }
        drop(state);
        self.delivery.stats().history_evicted(evicted);
        Ok(accepted)
    }

    async fn replay(
        &self,
        channels: &[ChannelName],
        from: ResumeFrom,
    ) -> Result<Replay, BrokerError> {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let head = self.id_of(state.seq);
        let after = match &from {
            ResumeFrom::Earliest => None,
            ResumeFrom::After(id) => match self.resolve(&state, id) {
                Some(seq) => Some(seq),
                None => return Ok(Replay::unknown(channels, state.seq, head)),
            },
        };
        let resumed = state.logs.replay(channels, after, &self.policies, now);
        Ok(Replay::of(resumed, after, state.seq, head))
    }

    async fn head(&self) -> Result<String, BrokerError> {
        Ok(self.id_of(self.state.lock().seq))
    }

    async fn history(
        &self,
        channel: &ChannelName,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        let policies = &self.policies;
        let mut state = self.state.lock();
        Ok(state
            .logs
            .history(channel, limit, policies, self.clock.now()))
    }

    async fn check(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn maintain(&self) {
        let mut state = self.state.lock();
        state.logs.maintain(&self.policies, self.clock.now());
    }

    fn history_channels(&self) -> usize {
        self.state.lock().logs.len()
    }

    fn history_bytes(&self) -> u64 {
        self.state.lock().logs.bytes() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Fanout, HistoryPolicy, ManualClock, NamespacePolicy, ResetReason};
    use crate::stats::Stats;
    use std::time::Duration;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn broker(size: usize) -> MemoryBroker {
        broker_for(size, Duration::from_secs(60), Clock::system())
    }

    fn broker_for(size: usize, ttl: Duration, clock: Clock) -> MemoryBroker {
        let policies = Policies {
            default: NamespacePolicy {
                history: HistoryPolicy { size, ttl },
                ..Default::default()
            },
            ..Default::default()
        };
        let delivery = LocalDelivery::new(Fanout::new(), Arc::new(Stats::default()));
        MemoryBroker::new(
            Arc::new(policies),
            delivery,
            crate::core::history::DEFAULT_HISTORY_MEMORY,
            clock,
        )
    }

    async fn publish(b: &MemoryBroker, channels: &[&str]) -> Accepted {
        let mut new = NewEvent::text(ch(channels[0]), "x");
        new.channels = channels.iter().map(|c| ch(c)).collect();
        b.publish(vec![new]).await.unwrap().remove(0)
    }

    fn seqs(r: &Replay) -> Vec<u64> {
        r.events.iter().map(|e| e.seq).collect()
    }

    #[tokio::test]
    async fn resumes_across_channels_in_order_without_duplicates() {
        let b = broker(10);
        let first = publish(&b, &["a"]).await;
        publish(&b, &["b"]).await;
        publish(&b, &["a", "b"]).await;
        publish(&b, &["c"]).await;
        publish(&b, &["b"]).await;
        let r = b
            .replay(&[ch("a"), ch("b")], ResumeFrom::After(first.id))
            .await
            .unwrap();
        assert_eq!(seqs(&r), vec![2, 3, 5]);
        assert!(r.reset.is_none());
        assert_eq!(r.after_seq, 1);
    }

    #[tokio::test]
    async fn unknown_and_foreign_ids_get_a_reset() {
        let b = broker(10);
        publish(&b, &["a"]).await;
        for id in ["nope", "ffffffff-1", "1"] {
            let r = b
                .replay(&[ch("a")], ResumeFrom::After(id.into()))
                .await
                .unwrap();
            let reset = r.reset.expect("reset");
            assert_eq!(reset.reason, ResetReason::UnknownId);
            assert_eq!(reset.id, b.id_of(1));
            assert!(r.events.is_empty());
        }
        let future = b.id_of(99);
        let r = b
            .replay(&[ch("a")], ResumeFrom::After(future))
            .await
            .unwrap();
        assert!(r.reset.is_some());
    }

    #[tokio::test]
    async fn expired_history_resets_only_the_channels_with_a_gap() {
        let b = broker(2);
        let first = publish(&b, &["a"]).await;
        for _ in 0..3 {
            publish(&b, &["a"]).await;
        }
        publish(&b, &["b"]).await;
        let r = b
            .replay(&[ch("a"), ch("b")], ResumeFrom::After(first.id))
            .await
            .unwrap();
        assert_eq!(seqs(&r), vec![5]);
        let reset = r.reset.unwrap();
        assert_eq!(reset.channels, vec![ch("a")]);
        assert_eq!(reset.reason, ResetReason::Expired);
        assert_eq!(r.after_seq, 5);
    }

    #[tokio::test]
    async fn earliest_replays_everything_kept() {
        let b = broker(2);
        for _ in 0..3 {
            publish(&b, &["a"]).await;
        }
        let r = b.replay(&[ch("a")], ResumeFrom::Earliest).await.unwrap();
        assert_eq!(seqs(&r), vec![2, 3]);
        assert!(r.reset.is_none());
    }

    #[tokio::test]
    async fn publisher_ids_are_kept_resumable_and_deduplicated() {
        let b = broker(10);
        let new = NewEvent::text(ch("a"), "x").with_id("order-1");
        let first = b.publish(vec![new.clone()]).await.unwrap().remove(0);
        assert_eq!(first.id, "order-1");
        assert!(!first.duplicate);
        let again = b.publish(vec![new]).await.unwrap().remove(0);
        assert!(again.duplicate);
        assert_eq!(again.seq, first.seq);
        publish(&b, &["a"]).await;
        let r = b
            .replay(&[ch("a")], ResumeFrom::After("order-1".into()))
            .await
            .unwrap();
        assert_eq!(seqs(&r), vec![2]);
    }

    #[tokio::test]
    async fn ephemeral_events_are_delivered_but_not_kept() {
        let b = broker(10);
        let first = publish(&b, &["a"]).await;
        let typing = NewEvent::text(ch("a"), "typing").ephemeral();
        b.publish(vec![typing]).await.unwrap();
        let r = b
            .replay(&[ch("a")], ResumeFrom::After(first.id))
            .await
            .unwrap();
        assert!(r.events.is_empty());
        assert!(r.reset.is_none(), "a live-only event is no gap");
        assert_eq!(b.history(&ch("a"), 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn dropped_logs_still_report_gaps() {
        let b = broker(0);
        let first = publish(&b, &["a"]).await;
        publish(&b, &["a"]).await;
        b.maintain().await;
        assert_eq!(b.history_channels(), 0);
        let r = b
            .replay(&[ch("a")], ResumeFrom::After(first.id.clone()))
            .await
            .unwrap();
        assert!(r.reset.is_some(), "event 2 was missed and is not kept");
        let latest = b.id_of(2);
        let r = b
            .replay(&[ch("a")], ResumeFrom::After(latest))
            .await
            .unwrap();
        assert!(r.reset.is_none());
    }

    #[tokio::test]
    async fn a_channel_dropped_and_published_again_keeps_its_gap() {
        let clock = ManualClock::starting_now();
        let b = broker_for(10, Duration::from_millis(50), clock.clock());
        let before = publish(&b, &["other"]).await;
        publish(&b, &["a"]).await;
        // Event 2 expires, so upkeep drops the log of `a`...
        clock.advance(Duration::from_millis(100));
        b.maintain().await;
        assert_eq!(b.history_channels(), 0);
        // ...and a new log starts when it is published to again.
        let again = publish(&b, &["a"]).await;
        let r = b
            .replay(&[ch("a")], ResumeFrom::After(before.id))
            .await
            .unwrap();
        let reset = r
            .reset
            .expect("event 2 was missed: a reset, not a silent gap");
        assert_eq!(reset.reason, ResetReason::Expired);
        assert_eq!(reset.channels, vec![ch("a")]);
        let r = b
            .replay(&[ch("a")], ResumeFrom::After(again.id))
            .await
            .unwrap();
        assert!(
            r.reset.is_none(),
            "nothing was missed after the newest event"
        );
    }

    mod properties {
        use futures_util::FutureExt;
        use proptest::prelude::*;

        use super::*;

        /// Resolves `id` as the broker should: a publisher id it still knows, or an
        /// id of its own epoch up to its head.
        fn reference(id: &str, epoch: &str, head: u64, publisher: &[(String, u64)]) -> Option<u64> {
            if let Some((_, seq)) = publisher.iter().find(|(p, _)| p == id) {
                return Some(*seq);
            }
            let (e, seq) = id.split_once('-')?;
            let own = e == epoch && !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
            let seq: u64 = seq.parse().ok()?;
            (own && seq <= head).then_some(seq)
        }

        proptest! {
            #![proptest_config(crate::fuzzing::cases(128))]

            /// Any `Last-Event-ID` resumes after the position it names, as a plain
            /// reference resolves it, or gets an `unknown_id` reset; never an error.
            #[test]
            fn any_id_resumes_after_what_it_names_or_resets(
                n in 0u64..12,
                pick in prop_oneof![
                    (0u64..16).prop_map(Choice::Own),
                    (0u64..12).prop_map(Choice::Publisher),
                    ".{0,12}".prop_map(Choice::Text),
                    "[0-9a-f]{1,8}-[0-9]{1,3}".prop_map(Choice::Text),
                ],
            ) {
                let b = broker(100);
                let mut publisher = Vec::new();
                for i in 0..n {
                    let mut new = NewEvent::text(ch("a"), "x");
                    if i % 3 == 0 {
                        new = new.with_id(format!("order-{i}"));
                    }
                    let accepted = b.publish(vec![new]).now_or_never().expect("ready").expect("published");
                    if i % 3 == 0 {
                        publisher.push((format!("order-{i}"), accepted[0].seq));
                    }
                }
                let id = match pick {
                    Choice::Own(seq) => format!("{}-{seq}", b.epoch),
                    Choice::Publisher(i) => format!("order-{i}"),
                    Choice::Text(text) => text,
                };
                let replay = b
                    .replay(&[ch("a")], ResumeFrom::parse(&id))
                    .now_or_never()
                    .expect("ready")
                    .expect("the memory broker is always available");
                if id == "earliest" {
                    prop_assert_eq!(seqs(&replay), (1..=n).collect::<Vec<_>>());
                    return Ok(());
                }
                match reference(&id, &b.epoch, n, &publisher) {
                    Some(after) => {
                        prop_assert!(replay.reset.is_none());
                        prop_assert_eq!(seqs(&replay), (after + 1..=n).collect::<Vec<_>>());
                        prop_assert_eq!(replay.after_seq, after);
                    }
                    None => {
                        let reset = replay.reset.expect("a reset");
                        prop_assert_eq!(reset.reason, ResetReason::UnknownId);
                        prop_assert!(replay.events.is_empty());
                        prop_assert_eq!(replay.after_seq, n);
                    }
                }
            }
        }

        #[derive(Debug, Clone)]
        enum Choice {
            Own(u64),
            Publisher(u64),
            Text(String),
        }
    }
}
