//! The bounded history of channels, and what a resume reads from it.
//!
//! A [`ChannelLog`] keeps the newest events of a channel within a count and an age.
//! It also remembers the position of the newest event it no longer holds, so that a
//! client resuming from before that point is told about the gap instead of silently
//! missing events. [`ChannelLogs`] holds the logs of every channel of a node (the
//! memory broker's history, the NATS broker's copy of its stream): it keeps all of
//! them together within a memory budget, drops the logs of idle channels without
//! forgetting their gaps, and remembers the ids publishers chose.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::channel::ChannelName;
use super::event::{ChannelSet, Event};
use super::policy::Policies;

/// Buckets remembering the newest position of channels whose log was dropped.
const FORGOTTEN_BUCKETS: usize = 4096;

/// The default memory budget of all channel histories of a node together, in bytes.
pub const DEFAULT_HISTORY_MEMORY: usize = 256 * 1024 * 1024;

/// What an event costs in history besides its data, id, type and channel names: the
/// `Event` and its `Arc`, the allocations of its parts with the allocator's headers
/// and rounding, and its entries in the budget's own bookkeeping. With the two
/// constants below, measured against the resident memory of a process holding
/// 200,000 small events on as many channels (712 bytes each) and on two channels
/// each (812 bytes).
const EVENT_OVERHEAD: usize = 384;

/// What each channel of a kept event costs besides its name: the name's own
/// allocation, its place in the event's list and in the channel's log.
const CHANNEL_OVERHEAD: usize = 80;

/// What a channel's log costs while it exists besides its name: its entry in the map
/// of logs and the log's first block of places.
const LOG_OVERHEAD: usize = 200;

/// How many publisher ids are remembered after their event left history (for
/// de-duplication and resume), at most; ids of events still in history are kept
/// whatever their number (the memory budget bounds them).
const RETIRED_ID_CAPACITY: usize = 100_000;

/// How much history a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// The most events kept; 0 keeps none.
    pub size: usize,
    /// The oldest an event may be and still be kept.
    pub ttl: Duration,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        Self {
            size: 100,
            ttl: Duration::from_secs(3600),
        }
    }
}

/// A resume point lies before what the history still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap;

/// The kept events of one channel, oldest first.
#[derive(Debug, Default)]
pub struct ChannelLog {
    events: VecDeque<Arc<Event>>,
    /// The position of the newest event of this channel that is no longer kept.
    forgotten: u64,
    /// The position of the newest event ever appended.
    last_seq: u64,
}

impl ChannelLog {
    /// An empty log for a channel that may have had events up to position `seq`
    /// which are no longer kept (its earlier log was dropped): resuming from before
    /// `seq` is a gap.
    pub fn after_forgotten(seq: u64) -> Self {
        Self {
            forgotten: seq,
            ..Self::default()
        }
    }

    /// Appends an accepted event and drops what falls outside the policy.
    pub fn append(&mut self, event: Arc<Event>, policy: &HistoryPolicy, now: SystemTime) {
        self.append_into(event, policy, now, &mut Vec::new());
    }

    /// [`Self::append`], adding the positions of the events it drops to `dropped`.
    /// Returns whether the event is kept.
    fn append_into(
        &mut self,
        event: Arc<Event>,
        policy: &HistoryPolicy,
        now: SystemTime,
        dropped: &mut Vec<u64>,
    ) -> bool {
        debug_assert!(event.seq > self.last_seq, "events are appended in order");
        self.last_seq = event.seq;
        if policy.size == 0 {
            self.forgotten = event.seq;
            return false;
        }
        self.events.push_back(event);
        while self.events.len() > policy.size {
            self.forget_oldest(dropped);
        }
        self.expire_into(policy, now, dropped);
        true
    }

    /// Drops events older than the policy's age.
    pub fn expire(&mut self, policy: &HistoryPolicy, now: SystemTime) {
        self.expire_into(policy, now, &mut Vec::new());
    }

    fn expire_into(&mut self, policy: &HistoryPolicy, now: SystemTime, dropped: &mut Vec<u64>) {
        let Some(cutoff) = now.checked_sub(policy.ttl) else {
            return;
        };
        while self.events.front().is_some_and(|e| e.time < cutoff) {
            self.forget_oldest(dropped);
        }
    }

    fn forget_oldest(&mut self, dropped: &mut Vec<u64>) {
        if let Some(e) = self.events.pop_front() {
            self.forgotten = e.seq;
            dropped.push(e.seq);
        }
    }

    /// The events after position `after`, oldest first, or [`Gap`] when some of them
    /// are no longer kept.
    pub fn since(&self, after: u64) -> Result<impl Iterator<Item = &Arc<Event>>, Gap> {
        if after < self.forgotten {
            return Err(Gap);
        }
        let start = self.events.partition_point(|e| e.seq <= after);
        Ok(self.events.range(start..))
    }

    /// Every event still kept, oldest first.
    pub fn kept(&self) -> impl DoubleEndedIterator<Item = &Arc<Event>> {
        self.events.iter()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// How many events are kept.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// The position of the newest event ever appended (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

/// What a resume reads from [`ChannelLogs`].
#[derive(Debug, Default)]
pub struct Resumed {
    /// The events after the resume point on the channels that could be served, in
    /// order, each once.
    pub events: Vec<Arc<Event>>,
    /// The channels whose history no longer covers the resume point.
    pub gaps: Vec<ChannelName>,
}

/// What a publisher id is known as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownId {
    /// The position of the event that carries it.
    pub seq: u64,
    /// The channels that event was published to.
    pub channels: ChannelSet,
}

/// An event held by at least one log.
#[derive(Debug)]
struct Held {
    event: Arc<Event>,
    /// Its approximate size, counted against the budget.
    cost: usize,
    /// How many logs hold it.
    logs: usize,
}

/// The logs of every channel with history, within one memory budget.
///
/// Every kept event counts against the budget by its approximate size (data, id,
/// type, channel names and a fixed overhead), and so does every log. Past the budget
/// the oldest events are evicted first, whatever their channel: each leaves its
/// logs as if their count had dropped it, so a client resuming from before it gets
/// a reset. The events held are tracked in position order (a queue with lazy
/// deletion: an event dropped by its logs' count or age stays queued until it
/// reaches the front or the queue is compacted), so an append costs O(1) amortised.
///
/// Logs of idle channels are dropped once their history expired ([`Self::maintain`])
/// or the budget took their last event; their newest position is folded into one
/// of 4,096 hash buckets. A resume on a channel without a log from before its
/// bucket's position is a gap, and a log created again for such a channel starts
/// with that position as its gap: rarely a needless reset (another channel of the
/// same bucket), never a silent gap, and memory stays flat however many channels
/// pass through. A channel whose policy keeps no history gets no log at all: its
/// positions go straight to its bucket.
///
/// Publisher ids are remembered with their event's position and channels while the
/// event is in history, and afterwards for the longest history age (at most
/// 100,000 such ids), so that an id cannot be taken by another event while a
/// client may still resume from it.
#[derive(Debug)]
pub struct ChannelLogs {
    logs: HashMap<ChannelName, ChannelLog>,
    forgotten: Box<[u64]>,
    hasher: std::collections::hash_map::RandomState,
    held: HashMap<u64, Held, BuildHasherDefault<SeqHasher>>,
    /// Positions of held events, oldest first, with lazy deletion.
    order: VecDeque<u64>,
    budget: usize,
    /// The approximate size of every held event and log.
    bytes: usize,
    ids: PublisherIds,
    /// Positions dropped by the last log operation (kept to reuse its allocation).
    dropped: Vec<u64>,
}

impl Default for ChannelLogs {
    fn default() -> Self {
        Self::with_budget(DEFAULT_HISTORY_MEMORY)
    }
}

impl ChannelLogs {
    /// Logs holding at most about `budget` bytes together.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            logs: HashMap::new(),
            forgotten: vec![0; FORGOTTEN_BUCKETS].into_boxed_slice(),
            hasher: Default::default(),
            held: HashMap::default(),
            order: VecDeque::new(),
            budget,
            bytes: 0,
            ids: PublisherIds::default(),
            dropped: Vec::new(),
        }
    }

    fn bucket(&self, channel: &ChannelName) -> usize {
        (self.hasher.hash_one(channel) % FORGOTTEN_BUCKETS as u64) as usize
    }

    fn fold_into_bucket(&mut self, channel: &ChannelName, seq: u64) {
        let bucket = self.bucket(channel);
        self.forgotten[bucket] = self.forgotten[bucket].max(seq);
    }

    /// Appends an accepted event to the log of each of its channels (none for a
    /// live-only event), then evicts the oldest events while the logs hold more
    /// than the budget. Events are appended in position order. Returns how many
    /// events the budget evicted.
    pub fn append(&mut self, event: &Arc<Event>, policies: &Policies, now: SystemTime) -> u64 {
        let mut kept = 0;
        if !event.ephemeral {
            for channel in &event.channels {
                let policy = &policies.of(channel).history;
                if policy.size == 0 && !self.logs.contains_key(channel) {
                    self.fold_into_bucket(channel, event.seq);
                    continue;
                }
                if !self.logs.contains_key(channel) {
                    // Perhaps a channel whose log was dropped: whatever its bucket
                    // remembers may have been this channel's.
                    let dropped = self.forgotten[self.bucket(channel)];
                    self.logs
                        .insert(channel.clone(), ChannelLog::after_forgotten(dropped));
                    self.bytes += log_cost(channel);
                }
                let Some(log) = self.logs.get_mut(channel) else {
                    continue;
                };
                if log.last_seq() >= event.seq {
                    // The same channel named twice: kept once.
                    continue;
                }
                if log.append_into(event.clone(), policy, now, &mut self.dropped) {
                    kept += 1;
                }
                self.release_dropped();
            }
        }
        if event.has_publisher_id() {
            self.ids.remember(event);
        }
        if kept > 0 {
            let cost = cost(event);
            self.held.insert(
                event.seq,
                Held {
                    event: event.clone(),
                    cost,
                    logs: kept,
                },
            );
            self.order.push_back(event.seq);
            self.bytes += cost;
        } else if event.has_publisher_id() {
            self.ids.retire(event);
        }
        let evicted = self.evict_over_budget();
        self.ids.prune(policies.longest_ttl(), now);
        self.compact();
        evicted
    }

    /// Takes the events the last log operation dropped off the books.
    fn release_dropped(&mut self) {
        for seq in self.dropped.drain(..) {
            let Some(held) = self.held.get_mut(&seq) else {
                continue;
            };
            held.logs -= 1;
            if held.logs == 0
                && let Some(held) = self.held.remove(&seq)
            {
                self.bytes -= held.cost;
                if held.event.has_publisher_id() {
                    self.ids.retire(&held.event);
                }
            }
        }
    }

    /// Evicts the oldest events while over the budget; returns how many.
    fn evict_over_budget(&mut self) -> u64 {
        let mut evicted = 0;
        while self.bytes > self.budget {
            let Some(seq) = self.order.pop_front() else {
                break;
            };
            let Some(held) = self.held.remove(&seq) else {
                continue;
            };
            self.bytes -= held.cost;
            evicted += 1;
            for channel in &held.event.channels {
                let Some(log) = self.logs.get_mut(channel) else {
                    continue;
                };
                // The oldest event held anywhere is the oldest of each of its logs.
                if log.events.front().is_some_and(|e| e.seq == seq) {
                    log.forget_oldest(&mut self.dropped);
                    self.dropped.clear();
                }
                if log.is_empty() {
                    self.drop_log(channel);
                }
            }
            if held.event.has_publisher_id() {
                self.ids.retire(&held.event);
            }
        }
        evicted
    }

    /// Drops the log of `channel`, folding its newest position into its bucket.
    fn drop_log(&mut self, channel: &ChannelName) {
        if let Some(log) = self.logs.remove(channel) {
            self.bytes -= log_cost(channel);
            self.fold_into_bucket(channel, log.last_seq());
        }
    }

    /// Rebuilds the queue of held positions once most of it is stale, so that it
    /// stays within twice the events held.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.held.len() + 1024 {
            let held = &self.held;
            self.order.retain(|seq| held.contains_key(seq));
        }
    }

    /// Expires the log of `channel`, if any, keeping the books.
    fn expire_log(&mut self, channel: &ChannelName, policies: &Policies, now: SystemTime) {
        if let Some(log) = self.logs.get_mut(channel) {
            log.expire_into(&policies.of(channel).history, now, &mut self.dropped);
            self.release_dropped();
        }
    }

    /// The events on `channels` after position `after` (everything kept for
    /// `None`), and the channels whose history cannot cover that.
    pub fn replay(
        &mut self,
        channels: &[ChannelName],
        after: Option<u64>,
        policies: &Policies,
        now: SystemTime,
    ) -> Resumed {
        let mut runs = Vec::with_capacity(channels.len());
        let mut gaps = Vec::new();
        for channel in channels {
            self.expire_log(channel, policies, now);
            let dropped = self.forgotten[self.bucket(channel)];
            match self.logs.get(channel) {
                Some(log) => match (log.since(after.unwrap_or(0)), after) {
                    (Ok(events), _) => runs.push(events.cloned().collect()),
                    (Err(_), None) => runs.push(log.kept().cloned().collect()),
                    (Err(_), Some(_)) => gaps.push(channel.clone()),
                },
                None => {
                    if after.is_some_and(|a| a < dropped) {
                        gaps.push(channel.clone());
                    }
                }
            }
        }
        Resumed {
            events: merge(runs),
            gaps,
        }
    }

    /// Up to `limit` of the newest events kept for `channel`, oldest first.
    pub fn history(
        &mut self,
        channel: &ChannelName,
        limit: usize,
        policies: &Policies,
        now: SystemTime,
    ) -> Vec<Arc<Event>> {
        self.expire_log(channel, policies, now);
        let Some(log) = self.logs.get(channel) else {
            return Vec::new();
        };
        let mut newest: Vec<Arc<Event>> = log.kept().rev().take(limit).cloned().collect();
        newest.reverse();
        newest
    }

    /// Expires history and drops the logs left empty, folding their newest position
    /// into their bucket; forgets publisher ids past their time.
    pub fn maintain(&mut self, policies: &Policies, now: SystemTime) {
        let mut empty = Vec::new();
        for (channel, log) in self.logs.iter_mut() {
            log.expire_into(&policies.of(channel).history, now, &mut self.dropped);
            if log.is_empty() {
                empty.push(channel.clone());
            }
        }
        self.release_dropped();
        for channel in empty {
            self.drop_log(&channel);
        }
        self.ids.prune(policies.longest_ttl(), now);
        self.compact();
    }

    /// What the publisher id `id` names, while it is remembered.
    pub fn publisher_id(&self, id: &str) -> Option<KnownId> {
        self.ids.known.get(id).copied()
    }

    /// How many channels have a log.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether no channel has a log.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// How many events are kept, on all channels together (an event on several
    /// channels counts once).
    pub fn events(&self) -> usize {
        self.held.len()
    }

    /// The approximate memory the logs hold, in bytes: at most the budget once an
    /// append has returned.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The approximate memory a kept event holds.
fn cost(event: &Event) -> usize {
    EVENT_OVERHEAD
        + event.data.len()
        + event.id.len()
        + event.kind.len()
        + event
            .channels
            .iter()
            .map(|c| c.as_str().len() + CHANNEL_OVERHEAD)
            .sum::<usize>()
}

/// The approximate memory a channel's log holds when empty.
fn log_cost(channel: &ChannelName) -> usize {
    LOG_OVERHEAD + channel.as_str().len()
}

/// Publisher ids and the events they name.
#[derive(Debug, Default)]
struct PublisherIds {
    known: HashMap<Arc<str>, KnownId>,
    /// Ids whose event left history (or never entered it), oldest first, with the
    /// event's position and time.
    retired: VecDeque<(Arc<str>, u64, SystemTime)>,
}

impl PublisherIds {
    /// Remembers the id of `event`. An id already known keeps naming its first
    /// event (brokers refuse a second one; this holds should one get through).
    fn remember(&mut self, event: &Event) {
        if self.known.contains_key(event.id.as_str()) {
            return;
        }
        self.known.insert(
            Arc::from(event.id.as_str()),
            KnownId {
                seq: event.seq,
                channels: ChannelSet::of(&event.channels),
            },
        );
    }

    /// `event` left history: its id is now forgotten by age or count.
    fn retire(&mut self, event: &Event) {
        if let Some((id, _)) = self.known.get_key_value(event.id.as_str()) {
            self.retired.push_back((id.clone(), event.seq, event.time));
        }
    }

    /// Forgets retired ids older than `ttl` or beyond the capacity.
    fn prune(&mut self, ttl: Duration, now: SystemTime) {
        let cutoff = now.checked_sub(ttl);
        while let Some((id, seq, time)) = self.retired.front() {
            let expired = cutoff.is_some_and(|c| *time < c);
            if !expired && self.retired.len() <= RETIRED_ID_CAPACITY {
                break;
            }
            if self.known.get(id).is_some_and(|k| k.seq == *seq) {
                self.known.remove(id);
            }
            self.retired.pop_front();
        }
    }
}

/// Hashes positions, the keys of the held events: the hub assigns them, so they
/// need no defence against chosen keys, and one multiplication spreads them.
#[derive(Debug, Default, Clone, Copy)]
struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Merges per-channel runs of events (each in order) into one run in order, with an
/// event that sits in several runs (published to several channels) kept once.
pub fn merge(runs: Vec<Vec<Arc<Event>>>) -> Vec<Arc<Event>> {
    let mut all: Vec<Arc<Event>> = runs.into_iter().flatten().collect();
    all.sort_by_key(|e| e.seq);
    all.dedup_by_key(|e| e.seq);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{ChannelName, NewEvent};

    fn event(seq: u64, time: SystemTime) -> Arc<Event> {
        let new = NewEvent::text(ChannelName::new("a").unwrap(), "x");
        Arc::new(Event::accept(new, seq, seq.to_string(), time))
    }

    fn seqs<'a>(it: impl Iterator<Item = &'a Arc<Event>>) -> Vec<u64> {
        it.map(|e| e.seq).collect()
    }

    #[test]
    fn keeps_the_newest_within_the_count_and_reports_gaps() {
        let policy = HistoryPolicy {
            size: 3,
            ttl: Duration::from_secs(60),
        };
        let now = SystemTime::now();
        let mut log = ChannelLog::default();
        for seq in [2, 4, 6, 8, 10] {
            log.append(event(seq, now), &policy, now);
        }
        assert_eq!(seqs(log.kept()), vec![6, 8, 10]);
        assert_eq!(seqs(log.since(4).unwrap()), vec![6, 8, 10]);
        assert_eq!(seqs(log.since(5).unwrap()), vec![6, 8, 10]);
        assert_eq!(seqs(log.since(8).unwrap()), vec![10]);
        assert_eq!(seqs(log.since(10).unwrap()), Vec::<u64>::new());
        assert!(log.since(3).is_err(), "event 4 was dropped");
    }

    #[test]
    fn expires_by_age() {
        let policy = HistoryPolicy {
            size: 10,
            ttl: Duration::from_secs(10),
        };
        let now = SystemTime::now();
        let mut log = ChannelLog::default();
        log.append(event(1, now - Duration::from_secs(20)), &policy, now);
        log.append(event(2, now), &policy, now);
        assert_eq!(seqs(log.kept()), vec![2]);
        assert!(log.since(0).is_err());
        assert!(log.since(1).is_ok());
        log.expire(&policy, now + Duration::from_secs(11));
        assert!(log.is_empty());
        assert!(log.since(1).is_err());
        assert_eq!(log.last_seq(), 2);
    }

    #[test]
    fn a_channel_without_history_still_reports_gaps() {
        let policy = HistoryPolicy {
            size: 0,
            ttl: Duration::from_secs(10),
        };
        let now = SystemTime::now();
        let mut log = ChannelLog::default();
        assert!(log.since(0).is_ok());
        log.append(event(5, now), &policy, now);
        assert!(log.since(4).is_err());
        assert_eq!(seqs(log.since(5).unwrap()), Vec::<u64>::new());
    }

    fn on(channels: &[&str], seq: u64, time: SystemTime) -> Arc<Event> {
        let mut new = NewEvent::text(ChannelName::new(channels[0]).unwrap(), "x");
        new.channels = channels
            .iter()
            .map(|c| ChannelName::new(c).unwrap())
            .collect();
        Arc::new(Event::accept(new, seq, seq.to_string(), time))
    }

    fn names(channels: &[&str]) -> Vec<ChannelName> {
        channels
            .iter()
            .map(|c| ChannelName::new(c).unwrap())
            .collect()
    }

    fn policies(size: usize, ttl: Duration) -> Policies {
        Policies {
            default: crate::core::NamespacePolicy {
                history: HistoryPolicy { size, ttl },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn logs_replay_across_channels_once_in_order() {
        let p = policies(10, Duration::from_secs(60));
        let now = SystemTime::now();
        let mut logs = ChannelLogs::default();
        logs.append(&on(&["a"], 1, now), &p, now);
        logs.append(&on(&["b"], 2, now), &p, now);
        logs.append(&on(&["a", "b"], 3, now), &p, now);
        logs.append(&on(&["c"], 4, now), &p, now);
        let r = logs.replay(&names(&["a", "b"]), Some(1), &p, now);
        assert_eq!(seqs(r.events.iter()), vec![2, 3]);
        assert!(r.gaps.is_empty());
        let r = logs.replay(&names(&["a", "b", "z"]), None, &p, now);
        assert_eq!(seqs(r.events.iter()), vec![1, 2, 3]);
        assert!(r.gaps.is_empty(), "a channel never published to is no gap");
        assert_eq!(logs.len(), 3);
    }

    #[test]
    fn logs_report_gaps_by_channel_and_earliest_takes_what_is_kept() {
        let p = policies(2, Duration::from_secs(60));
        let now = SystemTime::now();
        let mut logs = ChannelLogs::default();
        for seq in 1..=4 {
            logs.append(&on(&["a"], seq, now), &p, now);
        }
        logs.append(&on(&["b"], 5, now), &p, now);
        let r = logs.replay(&names(&["a", "b"]), Some(1), &p, now);
        assert_eq!(r.gaps, names(&["a"]));
        assert_eq!(seqs(r.events.iter()), vec![5]);
        let r = logs.replay(&names(&["a"]), None, &p, now);
        assert_eq!(seqs(r.events.iter()), vec![3, 4]);
        assert!(r.gaps.is_empty());
        let newest = logs.history(&names(&["a"])[0], 1, &p, now);
        assert_eq!(seqs(newest.iter()), vec![4]);
    }

    #[test]
    fn live_only_events_are_not_kept() {
        let p = policies(10, Duration::from_secs(60));
        let now = SystemTime::now();
        let mut logs = ChannelLogs::default();
        let mut new = NewEvent::text(ChannelName::new("a").unwrap(), "typing");
        new.ephemeral = true;
        logs.append(&Arc::new(Event::accept(new, 1, "1".into(), now)), &p, now);
        assert!(logs.is_empty());
        let r = logs.replay(&names(&["a"]), Some(0), &p, now);
        assert!(r.gaps.is_empty() && r.events.is_empty());
    }

    #[test]
    fn dropped_logs_keep_their_gaps_also_when_published_to_again() {
        let ttl = Duration::from_secs(10);
        let p = policies(10, ttl);
        let start = SystemTime::now();
        let mut logs = ChannelLogs::default();
        logs.append(&on(&["other"], 1, start), &p, start);
        logs.append(&on(&["a"], 2, start), &p, start);
        let later = start + ttl + Duration::from_secs(1);
        logs.maintain(&p, later);
        assert!(logs.is_empty(), "expired logs are dropped");
        let r = logs.replay(&names(&["a"]), Some(1), &p, later);
        assert_eq!(r.gaps, names(&["a"]), "event 2 is gone");
        assert!(
            logs.replay(&names(&["a"]), Some(2), &p, later)
                .gaps
                .is_empty()
        );
        // Published to again: a new log, which still knows of event 2.
        logs.append(&on(&["a"], 3, later), &p, later);
        let r = logs.replay(&names(&["a"]), Some(1), &p, later);
        assert_eq!(r.gaps, names(&["a"]), "a reset, never a silent gap");
        let r = logs.replay(&names(&["a"]), Some(2), &p, later);
        assert_eq!(seqs(r.events.iter()), vec![3]);
        assert!(r.gaps.is_empty());
    }

    fn sized(channel: &str, seq: u64, bytes: usize, time: SystemTime) -> Arc<Event> {
        let new = NewEvent::text(ChannelName::new(channel).unwrap(), "x".repeat(bytes));
        Arc::new(Event::accept(new, seq, seq.to_string(), time))
    }

    #[test]
    fn the_budget_evicts_the_oldest_events_across_channels_and_reports_the_gap() {
        let p = policies(100, Duration::from_secs(60));
        let now = SystemTime::now();
        let one = cost(&sized("a", 1, 1000, now)) + log_cost(&ChannelName::new("a").unwrap());
        // Room for two channels with one event each, not three.
        let mut logs = ChannelLogs::with_budget(2 * one + one / 2);
        assert_eq!(logs.append(&sized("a", 1, 1000, now), &p, now), 0);
        assert_eq!(logs.append(&sized("b", 2, 1000, now), &p, now), 0);
        assert_eq!(logs.append(&sized("c", 3, 1000, now), &p, now), 1);
        assert!(logs.bytes() <= 2 * one + one / 2);
        assert_eq!(logs.len(), 2, "the log left empty is dropped");
        assert_eq!(logs.events(), 2);
        let r = logs.replay(&names(&["a", "b", "c"]), Some(0), &p, now);
        assert_eq!(
            r.gaps,
            names(&["a"]),
            "event 1 was evicted: a reset, not a silent gap"
        );
        assert_eq!(seqs(r.events.iter()), vec![2, 3]);
        let r = logs.replay(&names(&["a", "b"]), Some(1), &p, now);
        assert!(r.gaps.is_empty(), "nothing of `a` after event 1 was lost");
        // Within one channel, the oldest go first too.
        logs.append(&sized("c", 4, 10, now), &p, now);
        assert_eq!(logs.append(&sized("c", 5, 1000, now), &p, now), 1);
        assert_eq!(
            logs.replay(&names(&["b"]), Some(1), &p, now).gaps,
            names(&["b"])
        );
        assert_eq!(logs.append(&sized("c", 6, 1000, now), &p, now), 1);
        assert_eq!(
            logs.replay(&names(&["c"]), Some(2), &p, now).gaps,
            names(&["c"])
        );
        let r = logs.replay(&names(&["c"]), Some(3), &p, now);
        assert_eq!(seqs(r.events.iter()), vec![4, 5, 6]);
        assert!(logs.bytes() <= 2 * one + one / 2);
    }

    #[test]
    fn many_distinct_channels_stay_within_the_budget() {
        let p = policies(100, Duration::from_secs(3600));
        let now = SystemTime::now();
        let budget = 64 * 1024;
        let mut logs = ChannelLogs::with_budget(budget);
        let mut evicted = 0;
        for seq in 1..=20_000u64 {
            evicted += logs.append(&on(&[&format!("ch-{seq}")], seq, now), &p, now);
            assert!(logs.bytes() <= budget);
        }
        let per_channel =
            cost(&on(&["ch-20000"], 1, now)) + log_cost(&ChannelName::new("ch-20000").unwrap());
        assert!(
            logs.len() <= budget / (per_channel - 10),
            "{} logs",
            logs.len()
        );
        assert_eq!(evicted as usize + logs.events(), 20_000);
        assert!(logs.order.len() <= 2 * logs.held.len() + 1024);
        let r = logs.replay(&names(&["ch-1"]), Some(0), &p, now);
        assert_eq!(
            r.gaps,
            names(&["ch-1"]),
            "evicted long ago, its gap is still known"
        );
        let r = logs.replay(&names(&["ch-20000"]), Some(19_999), &p, now);
        assert!(r.gaps.is_empty());
        assert_eq!(seqs(r.events.iter()), vec![20_000]);
    }

    #[test]
    fn events_dropped_by_count_or_age_free_their_bytes() {
        let ttl = Duration::from_secs(10);
        let p = policies(2, ttl);
        let start = SystemTime::now();
        let mut logs = ChannelLogs::with_budget(usize::MAX);
        for seq in 1..=5_000 {
            logs.append(&on(&["a", "b"], seq, start), &p, start);
        }
        assert_eq!(logs.events(), 2, "an event on two channels counts once");
        let two = cost(&on(&["a", "b"], 4_999, start))
            + cost(&on(&["a", "b"], 5_000, start))
            + log_cost(&ChannelName::new("a").unwrap())
            + log_cost(&ChannelName::new("b").unwrap());
        assert_eq!(logs.bytes(), two);
        assert!(
            logs.order.len() <= 2 * logs.held.len() + 1024,
            "stale places are compacted"
        );
        logs.maintain(&p, start + ttl + Duration::from_secs(1));
        assert_eq!((logs.bytes(), logs.events(), logs.len()), (0, 0, 0));
    }

    #[test]
    fn channels_without_history_get_no_log_but_keep_their_gaps() {
        let p = policies(0, Duration::from_secs(10));
        let now = SystemTime::now();
        let mut logs = ChannelLogs::default();
        logs.append(&on(&["a"], 1, now), &p, now);
        logs.append(&on(&["a"], 2, now), &p, now);
        assert_eq!((logs.len(), logs.bytes()), (0, 0));
        assert_eq!(
            logs.replay(&names(&["a"]), Some(1), &p, now).gaps,
            names(&["a"])
        );
        assert!(
            logs.replay(&names(&["a"]), Some(2), &p, now)
                .gaps
                .is_empty()
        );
    }

    fn with_id(channels: &[&str], seq: u64, id: &str, time: SystemTime) -> Arc<Event> {
        let mut new = NewEvent::text(ChannelName::new(channels[0]).unwrap(), "x").with_id(id);
        new.channels = channels
            .iter()
            .map(|c| ChannelName::new(c).unwrap())
            .collect();
        Arc::new(Event::accept(new, seq, id.to_owned(), time))
    }

    #[test]
    fn publisher_ids_are_remembered_while_in_history_then_for_the_longest_age() {
        let ttl = Duration::from_secs(10);
        let p = policies(1, ttl);
        let start = SystemTime::now();
        let mut logs = ChannelLogs::default();
        logs.append(&with_id(&["a", "b"], 1, "order-1", start), &p, start);
        let known = logs.publisher_id("order-1").unwrap();
        assert_eq!(known.seq, 1);
        assert_eq!(known.channels, ChannelSet::of(&names(&["b", "a"])));
        // Pushed out of history by a newer event: still known for the longest age.
        let later = start + Duration::from_secs(5);
        logs.append(&on(&["a", "b"], 2, later), &p, later);
        assert_eq!(logs.events(), 1);
        assert!(logs.publisher_id("order-1").is_some());
        let past = start + ttl + Duration::from_secs(1);
        logs.maintain(&p, past);
        assert!(logs.publisher_id("order-1").is_none());
    }

    #[test]
    fn publisher_ids_of_events_in_history_outlive_the_retired_capacity() {
        let p = policies(10, Duration::from_secs(3600));
        let now = SystemTime::now();
        let mut logs = ChannelLogs::default();
        logs.append(&with_id(&["kept"], 1, "mine", now), &p, now);
        // More ids than the capacity, on a channel without history.
        let none = Policies {
            namespaces: [(
                "gone".to_owned(),
                crate::core::NamespacePolicy {
                    history: HistoryPolicy {
                        size: 0,
                        ttl: Duration::from_secs(3600),
                    },
                    ..Default::default()
                },
            )]
            .into(),
            ..p.clone()
        };
        for seq in 2..(RETIRED_ID_CAPACITY as u64 + 10) {
            logs.append(
                &with_id(&["gone:x"], seq, &format!("id-{seq}"), now),
                &none,
                now,
            );
        }
        assert!(
            logs.publisher_id("id-2").is_none(),
            "the oldest retired id is forgotten"
        );
        assert_eq!(logs.publisher_id("mine").map(|k| k.seq), Some(1));
    }

    #[test]
    fn a_second_event_with_a_known_id_does_not_take_it_over() {
        let p = policies(10, Duration::from_secs(60));
        let now = SystemTime::now();
        let mut logs = ChannelLogs::default();
        logs.append(&with_id(&["a"], 1, "x", now), &p, now);
        logs.append(&with_id(&["b"], 2, "x", now), &p, now);
        assert_eq!(logs.publisher_id("x").map(|k| k.seq), Some(1));
    }

    #[test]
    fn merge_orders_and_deduplicates() {
        let now = SystemTime::now();
        let shared = event(3, now);
        let merged = merge(vec![
            vec![event(1, now), shared.clone(), event(5, now)],
            vec![event(2, now), shared, event(4, now)],
        ]);
        assert_eq!(seqs(merged.iter()), vec![1, 2, 3, 4, 5]);
    }
}
