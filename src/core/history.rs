//! The bounded history of one channel, and merging histories for a resume.
//!
//! A [`ChannelLog`] keeps the newest events of a channel within a count and an age.
//! It also remembers the position of the newest event it no longer holds, so that a
//! client resuming from before that point is told about the gap instead of silently
//! missing events.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::event::Event;

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
