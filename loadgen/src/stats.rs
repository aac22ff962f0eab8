//! Measurement state shared by all tasks: a clock, counters, latency
//! histograms, error samples, and the per-connection duplicate/gap window.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Highest latency the histograms track exactly (one hour, in µs); larger
/// values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A monotonic clock that also yields Unix-epoch microseconds: the epoch
/// offset is read once, then time advances with [`Instant`], so timestamps
/// written by publishers and read by subscribers (same process) never go
/// backwards when the wall clock is adjusted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    start_unix_us: u64,
}

impl Clock {
    /// Starts the clock now.
    pub(crate) fn new() -> Self {
        let start_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Self {
            start: Instant::now(),
            start_unix_us,
        }
    }

    /// Microseconds since the clock started.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Current Unix time in microseconds (monotonic, see above).
    pub(crate) fn unix_us(&self) -> u64 {
        self.start_unix_us.saturating_add(self.now_us())
    }

    /// Converts a clock reading back to an [`Instant`].
    pub(crate) fn instant(&self, us: u64) -> Instant {
        self.start + std::time::Duration::from_micros(us)
    }
}

/// What one sequence number turned out to be on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// First time seen, in order (higher than anything before).
    New,
    /// First time seen, but after a higher number (arrived out of order).
    Reordered,
    /// Seen before on this connection.
    Duplicate,
    /// Too far below the highest seen to tell (see [`SeqWindow`]).
    OutOfWindow,
}

/// Which sequence numbers of its channel a connection has received.
///
/// Every connection subscribes to exactly one channel, and the publisher
/// numbers the events of each channel 0, 1, 2, ... (a per-channel sequence,
/// carried as `"s"`). Each channel is owned by exactly one publisher task,
/// which sends that channel's events in order over one HTTP/1.1 connection
/// whose requests the hub handles one after another, so a hub that keeps
/// per-channel order delivers them to the subscriber in increasing order.
/// Hence the highest number seen so far plus a count of distinct arrivals is
/// enough in the normal case: a number above the highest is new (a jump
/// means the numbers in between are, so far, missing); a number at or below
/// it is a repeat. To stay correct if a hub reorders a little, a 64-bit
/// bitmap remembers which of the 64 numbers below the highest have arrived
/// (the anti-replay window of IPsec): a late number inside the window is
/// either a duplicate (bit set) or a reordered first delivery (bit clear).
/// Only arrivals more than 64 below the highest are ambiguous; they are
/// counted separately and not as deliveries. Lost deliveries are not
/// tracked per connection at all: the run totals `expected - distinct`.
/// That is 17 bytes per connection instead of a set of all numbers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SeqWindow {
    highest: u64,
    /// Bit `d` set = `highest - d` has arrived.
    bits: u64,
    any: bool,
}

impl SeqWindow {
    /// Records arrival of sequence number `s` and classifies it.
    pub(crate) fn observe(&mut self, s: u64) -> Seen {
        if !self.any {
            *self = Self {
                highest: s,
                bits: 1,
                any: true,
            };
            return Seen::New;
        }
        if s > self.highest {
            let shift = s - self.highest;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.highest = s;
            return Seen::New;
        }
        let d = self.highest - s;
        if d >= 64 {
            return Seen::OutOfWindow;
        }
        let bit = 1u64 << d;
        if self.bits & bit != 0 {
            Seen::Duplicate
        } else {
            self.bits |= bit;
            Seen::Reordered
        }
    }
}

/// Counts of non-message events seen by subscribers.
#[derive(Debug, Default)]
pub(crate) struct OtherEvents {
    /// `event: reset`.
    pub(crate) reset: AtomicU64,
    /// `event: shutdown`.
    pub(crate) shutdown: AtomicU64,
    /// `event: token_expired`.
    pub(crate) token_expired: AtomicU64,
    /// `event: connected` after the first one on a connection.
    pub(crate) extra_connected: AtomicU64,
    /// Any other event name.
    pub(crate) other: AtomicU64,
}

/// Counters a subscriber accumulates while handling one read, then adds to
/// [`Shared`] in one go.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Distinct deliveries.
    pub(crate) delivered: u64,
    /// Duplicate deliveries.
    pub(crate) duplicates: u64,
    /// Distinct deliveries that arrived out of order.
    pub(crate) reordered: u64,
    /// Ambiguous arrivals far below the highest sequence number.
    pub(crate) out_of_window: u64,
    /// Messages whose data had no `"t"`/`"s"`.
    pub(crate) unparsed: u64,
    /// Comment lines (heartbeats).
    pub(crate) comments: u64,
    /// `reset` events.
    pub(crate) reset: u64,
    /// `shutdown` events.
    pub(crate) shutdown: u64,
    /// `token_expired` events.
    pub(crate) token_expired: u64,
    /// Repeated `connected` events.
    pub(crate) extra_connected: u64,
    /// Other named events.
    pub(crate) other: u64,
}

/// Everything the tasks report into.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The run's clock.
    pub(crate) clock: Clock,
    /// Subscribers that became ready.
    pub(crate) connected: AtomicU64,
    /// Subscribers that failed to become ready.
    pub(crate) connect_errors: AtomicU64,
    /// Clock reading when the last subscriber became ready.
    pub(crate) last_connected_us: AtomicU64,
    /// Ready subscribers whose stream ended or failed later.
    pub(crate) disconnects: AtomicU64,
    /// Distinct deliveries.
    pub(crate) deliveries: AtomicU64,
    /// Duplicate deliveries.
    pub(crate) duplicates: AtomicU64,
    /// Out-of-order (but distinct) deliveries.
    pub(crate) reordered: AtomicU64,
    /// Ambiguous late arrivals.
    pub(crate) out_of_window: AtomicU64,
    /// Messages without a parsable timestamp/sequence.
    pub(crate) unparsed: AtomicU64,
    /// Comment lines (heartbeats).
    pub(crate) comments: AtomicU64,
    /// Clock reading of the last distinct delivery.
    pub(crate) last_delivery_us: AtomicU64,
    /// Named events.
    pub(crate) other_events: OtherEvents,
    /// Events acknowledged by the hub.
    pub(crate) published: AtomicU64,
    /// Events written to the hub.
    pub(crate) publish_attempted: AtomicU64,
    /// Events the hub refused or that got no answer.
    pub(crate) publish_errors: AtomicU64,
    /// Sum over acknowledged events of the subscribers of their channel.
    pub(crate) expected: AtomicU64,
    /// Clock reading when the first publish request was built.
    pub(crate) first_publish_us: AtomicU64,
    /// Clock reading of the last publish acknowledgement.
    pub(crate) last_ack_us: AtomicU64,
    histograms: Vec<Mutex<Histogram<u64>>>,
    errors: Mutex<Vec<(String, u64)>>,
}

/// Distinct error messages kept for the report.
const MAX_ERROR_SAMPLES: usize = 12;

impl Shared {
    /// Creates the shared state with `shards` latency histograms (recording
    /// takes a lock; sharding keeps contention low).
    pub(crate) fn new(shards: usize) -> anyhow::Result<Self> {
        let histograms = (0..shards.max(1))
            .map(|_| Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            clock: Clock::new(),
            connected: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            last_connected_us: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            out_of_window: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            comments: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            other_events: OtherEvents::default(),
            published: AtomicU64::new(0),
            publish_attempted: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            first_publish_us: AtomicU64::new(u64::MAX),
            last_ack_us: AtomicU64::new(0),
            histograms,
            errors: Mutex::new(Vec::new()),
        })
    }

    /// The histogram shard for connection `idx`, locked.
    pub(crate) fn histogram(&self, idx: usize) -> MutexGuard<'_, Histogram<u64>> {
        let shard = &self.histograms[idx % self.histograms.len()];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// All shards merged.
    pub(crate) fn merged_histogram(&self) -> anyhow::Result<Histogram<u64>> {
        let mut all = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?;
        for shard in &self.histograms {
            let h = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.add(&*h)?;
        }
        Ok(all)
    }

    /// Adds a subscriber's per-read counters; `now_us` is when the read
    /// happened.
    pub(crate) fn apply(&self, t: &Tally, now_us: u64) {
        fn add(c: &AtomicU64, v: u64) {
            if v > 0 {
                c.fetch_add(v, Relaxed);
            }
        }
        if t.delivered > 0 {
            self.deliveries.fetch_add(t.delivered, Relaxed);
            self.last_delivery_us.fetch_max(now_us, Relaxed);
        }
        add(&self.duplicates, t.duplicates);
        add(&self.reordered, t.reordered);
        add(&self.out_of_window, t.out_of_window);
        add(&self.unparsed, t.unparsed);
        add(&self.comments, t.comments);
        let o = &self.other_events;
        add(&o.reset, t.reset);
        add(&o.shutdown, t.shutdown);
        add(&o.token_expired, t.token_expired);
        add(&o.extra_connected, t.extra_connected);
        add(&o.other, t.other);
    }

    /// Keeps a sample of an error message (first few distinct ones, counted).
    pub(crate) fn record_error(&self, msg: impl Into<String>) {
        let mut msg: String = msg.into();
        if msg.len() > 300 {
            let cut = crate::http::truncate(&msg, 300).len();
            msg.truncate(cut);
        }
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = errors.iter_mut().find(|(m, _)| *m == msg) {
            entry.1 += 1;
        } else if errors.len() < MAX_ERROR_SAMPLES {
            errors.push((msg, 1));
        }
    }

    /// The error samples with their counts.
    pub(crate) fn errors(&self) -> Vec<(String, u64)> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_in_order_and_duplicates() {
        let mut w = SeqWindow::default();
        assert_eq!(w.observe(0), Seen::New);
        assert_eq!(w.observe(1), Seen::New);
        assert_eq!(w.observe(1), Seen::Duplicate);
        assert_eq!(w.observe(0), Seen::Duplicate);
        // A gap: 2..=4 missing so far.
        assert_eq!(w.observe(5), Seen::New);
        assert_eq!(w.observe(3), Seen::Reordered);
        assert_eq!(w.observe(3), Seen::Duplicate);
        assert_eq!(w.observe(5), Seen::Duplicate);
    }

    #[test]
    fn window_edges() {
        let mut w = SeqWindow::default();
        assert_eq!(w.observe(100), Seen::New);
        assert_eq!(w.observe(37), Seen::Reordered); // d = 63, inside
        assert_eq!(w.observe(36), Seen::OutOfWindow); // d = 64
        assert_eq!(w.observe(37), Seen::Duplicate);
        // A jump of exactly 64 clears everything.
        assert_eq!(w.observe(164), Seen::New);
        assert_eq!(w.observe(101), Seen::Reordered);
        assert_eq!(w.observe(101), Seen::Duplicate);
        assert_eq!(w.observe(100), Seen::OutOfWindow);
        // A jump of more than 64 as well.
        assert_eq!(w.observe(1_000), Seen::New);
        assert_eq!(w.observe(999), Seen::Reordered);
        assert_eq!(w.observe(1_000), Seen::Duplicate);
        // Numbers far apart still work at the top of the range.
        assert_eq!(w.observe(u64::MAX), Seen::New);
        assert_eq!(w.observe(u64::MAX), Seen::Duplicate);
    }

    #[test]
    fn window_matches_a_set_on_random_arrivals() {
        // Deterministic pseudo-random arrivals with small reorders and
        // repeats; compare with an exact set.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut w = SeqWindow::default();
        let mut set = std::collections::HashSet::new();
        let mut highest = 0u64;
        for i in 0..20_000u64 {
            let jitter = next() % 40;
            let s = (i / 2).saturating_sub(jitter);
            let got = w.observe(s);
            let first = set.insert(s);
            match got {
                Seen::New => assert!(first && s >= highest),
                Seen::Reordered => assert!(first && s < highest),
                Seen::Duplicate => assert!(!first),
                Seen::OutOfWindow => panic!("jitter < 64 must stay inside the window"),
            }
            highest = highest.max(s);
        }
    }

    #[test]
    fn tally_and_errors() -> anyhow::Result<()> {
        let s = Shared::new(2)?;
        let t = Tally {
            delivered: 3,
            duplicates: 1,
            reset: 2,
            ..Tally::default()
        };
        s.apply(&t, 42);
        s.apply(&Tally::default(), 99);
        assert_eq!(s.deliveries.load(Relaxed), 3);
        assert_eq!(s.duplicates.load(Relaxed), 1);
        assert_eq!(s.other_events.reset.load(Relaxed), 2);
        assert_eq!(s.last_delivery_us.load(Relaxed), 42);
        s.histogram(0).saturating_record(10);
        s.histogram(1).saturating_record(20);
        s.histogram(3).saturating_record(u64::MAX);
        let h = s.merged_histogram()?;
        assert_eq!(h.len(), 3);
        assert_eq!(h.min(), 10);
        for _ in 0..3 {
            s.record_error("boom");
        }
        for i in 0..100 {
            s.record_error(format!("e{i}"));
        }
        let errors = s.errors();
        assert_eq!(errors[0], ("boom".to_string(), 3));
        assert_eq!(errors.len(), MAX_ERROR_SAMPLES);
        Ok(())
    }
}
