//! The bounded history of channels, and what a resume reads from it.
//!
//! A [`ChannelLog`] keeps the newest events of a channel within a count and an age.
//! It also remembers the position of the newest event it no longer holds, so that a
//! client resuming from before that point is told about the gap instead of silently
//! missing events. [`ChannelLogs`] holds the logs of every channel of a node (the
//! memory broker's history, the NATS broker's copy of its stream) and drops those of
//! idle channels without forgetting their gaps.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::channel::ChannelName;
use super::event::Event;
use super::policy::Policies;

/// Buckets remembering the newest position of channels whose log was dropped.
const FORGOTTEN_BUCKETS: usize = 4096;

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
        debug_assert!(event.seq > self.last_seq, "events are appended in order");
        self.last_seq = event.seq;
        if policy.size == 0 {
            self.forgotten = event.seq;
            return;
        }
        self.events.push_back(event);
        while self.events.len() > policy.size {
            self.forget_oldest();
        }
        self.expire(policy, now);
    }

    /// Drops events older than the policy's age.
    pub fn expire(&mut self, policy: &HistoryPolicy, now: SystemTime) {
        let Some(cutoff) = now.checked_sub(policy.ttl) else {
            return;
        };
        while self.events.front().is_some_and(|e| e.time < cutoff) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(e) = self.events.pop_front() {
            self.forgotten = e.seq;
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

/// The logs of every channel with history.
///
/// Logs of idle channels are dropped once their history expired ([`Self::maintain`]);
/// their newest position is folded into one of 4,096 hash buckets. A resume on a
/// channel without a log from before its bucket's position is a gap, and a log
/// created again for such a channel starts with that position as its gap: rarely a
/// needless reset (another channel of the same bucket), never a silent gap, and
/// memory stays flat however many channels pass through.
#[derive(Debug)]
pub struct ChannelLogs {
    logs: HashMap<ChannelName, ChannelLog>,
    forgotten: Box<[u64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for ChannelLogs {
    fn default() -> Self {
        Self {
            logs: HashMap::new(),
            forgotten: vec![0; FORGOTTEN_BUCKETS].into_boxed_slice(),
            hasher: Default::default(),
        }
    }
}

impl ChannelLogs {
    fn bucket(&self, channel: &ChannelName) -> usize {
        (self.hasher.hash_one(channel) % FORGOTTEN_BUCKETS as u64) as usize
    }

    /// Appends an accepted event to the log of each of its channels (none for a
    /// live-only event). Events are appended in position order.
    pub fn append(&mut self, event: &Arc<Event>, policies: &Policies, now: SystemTime) {
        if event.ephemeral {
            return;
        }
        for channel in &event.channels {
            let policy = &policies.of(channel).history;
            if !self.logs.contains_key(channel) {
                // Perhaps a channel whose log was dropped when its history expired:
                // whatever its bucket remembers may have been this channel's.
                let dropped = self.forgotten[self.bucket(channel)];
                self.logs
                    .insert(channel.clone(), ChannelLog::after_forgotten(dropped));
            }
            if let Some(log) = self.logs.get_mut(channel) {
                log.append(event.clone(), policy, now);
            }
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
            let dropped = self.forgotten[self.bucket(channel)];
            match self.logs.get_mut(channel) {
                Some(log) => {
                    log.expire(&policies.of(channel).history, now);
                    match (log.since(after.unwrap_or(0)), after) {
                        (Ok(events), _) => runs.push(events.cloned().collect()),
                        (Err(_), None) => runs.push(log.kept().cloned().collect()),
                        (Err(_), Some(_)) => gaps.push(channel.clone()),
                    }
                }
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
        let Some(log) = self.logs.get_mut(channel) else {
            return Vec::new();
        };
        log.expire(&policies.of(channel).history, now);
        let mut newest: Vec<Arc<Event>> = log.kept().rev().take(limit).cloned().collect();
        newest.reverse();
        newest
    }

    /// Expires history and drops the logs left empty, folding their newest position
    /// into their bucket.
    pub fn maintain(&mut self, policies: &Policies, now: SystemTime) {
        let mut dropped = Vec::new();
        for (channel, log) in self.logs.iter_mut() {
            log.expire(&policies.of(channel).history, now);
            if log.is_empty() {
                dropped.push(channel.clone());
            }
        }
        for channel in dropped {
            if let Some(log) = self.logs.remove(&channel) {
                let bucket = self.bucket(&channel);
                self.forgotten[bucket] = self.forgotten[bucket].max(log.last_seq());
            }
        }
    }

    /// How many channels have a log.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether no channel has a log.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
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
