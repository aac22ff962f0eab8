//! Following a partition only while this node's connections need it: what the
//! Redis and NATS brokers share when each partition is a broker of its own
//! (see [`super::partitioned`]).
//!
//! A subscription asks for the partitions of its channels ([`OnDemand::ask`])
//! before it reads where it starts, and waits until the partition's follower
//! receives its events live. The follower stops when no local connection has been
//! on the partition for the hold time, and starts afresh the next time one asks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::core::{Demand, Partition};
use crate::stats::Stats;

/// One partition followed on demand.
#[derive(Debug)]
pub(crate) struct OnDemand {
    /// Which partitions the node's connections are on.
    demand: Arc<Demand>,
    partition: Partition,
    /// How long the partition stays followed after a connection asked for it or
    /// the last one left.
    hold: Duration,
    /// When a subscription last asked for the partition.
    asked: Mutex<Instant>,
    /// Wakes the follower when a subscription asks.
    wake: Notify,
    /// Whether the follower receives the partition's events now.
    live: watch::Sender<bool>,
}

impl OnDemand {
    /// Follows `partition` while `demand` says a local connection is on it, and
    /// `hold` after the last one left or asked. `hold` must be at least the time
    /// from asking to registering (the longest [`OnDemand::ask`] waits).
    pub(crate) fn new(demand: Arc<Demand>, partition: Partition, hold: Duration) -> Self {
        Self {
            demand,
            partition,
            hold,
            // Not asked for yet: followed once a connection needs it.
            asked: Mutex::new(
                Instant::now()
                    .checked_sub(hold)
                    .unwrap_or_else(Instant::now),
            ),
            wake: Notify::new(),
            live: watch::Sender::new(false),
        }
    }

    /// Whether the node needs the partition now.
    pub(crate) fn wanted(&self) -> bool {
        self.demand.channels(self.partition) > 0 || self.asked.lock().elapsed() < self.hold
    }

    /// Waits until the node needs the partition; false when stopped meanwhile.
    pub(crate) async fn until_wanted(&self, stop: &CancellationToken) -> bool {
        while !self.wanted() {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = self.wake.notified() => {}
            }
        }
        true
    }

    /// Says whether the follower receives the partition's events now.
    pub(crate) fn set_live(&self, live: bool, stats: &Stats) {
        if *self.live.borrow() != live {
            self.live.send_replace(live);
            stats.partition_followed(live);
        }
    }

    /// Asks for the partition and waits until its events arrive live, at most
    /// `wait`; at once when `reachable` is false (the follower catches up once
    /// the broker is back, as after losing its connection).
    pub(crate) async fn ask(&self, reachable: bool, wait: Duration) {
        *self.asked.lock() = Instant::now();
        let mut live = self.live.subscribe();
        if *live.borrow_and_update() {
            return;
        }
        self.wake.notify_one();
        if !reachable {
            return;
        }
        let _ = tokio::time::timeout(wait, live.wait_for(|on| *on)).await;
    }
}
