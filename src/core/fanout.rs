//! Local fan-out: which connections of this node listen to which channels, and
//! handing each accepted event to their queues.
//!
//! Every connection owns a bounded queue: a `VecDeque` behind an uncontended lock,
//! which allocates nothing until the first event and grows only as far as the
//! connection falls behind, so an idle connection's queue costs a few dozen bytes.
//! Delivery never waits: it tries to put the event in each queue, and a connection
//! whose queue is full is marked overflowed and told to close (its client resumes
//! from history when it reconnects). So a publisher is never slowed by a slow
//! subscriber, and one stalled reader does not hold up a channel.
//!
//! The registry lock is a std-style (`parking_lot`) lock held only for map lookups
//! and non-blocking sends, never across an `.await`.
//!
//! Publishers are not allowed to run ahead of the fan-out without bound, though:
//! the registry keeps a backlog gauge, the number of events queued and not yet taken
//! by their connections, counting at most [`COUNTED_PER_QUEUE`] per connection, and
//! [`Fanout::wait_for_room`] holds the answer to a publish (for at most a given time)
//! while the gauge is above [`ROOM_PER_QUEUE`] per connection. Under saturation this keeps
//! queues two or three events deep (enough for each write to carry a few events),
//! so latency stays at a round or two of writes instead of growing to a full queue;
//! a stalled connection adds at most four to the gauge, so stalled readers hold
//! publishers back only when they are more than half of the node's connections.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use indexmap::IndexMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use super::channel::ChannelName;
use super::event::Event;
use super::partition::{Cursor, Partition, Partitions, Position};

/// A connection's handle as the fan-out sees it.
#[derive(Debug)]
struct Subscriber {
    queue: Mutex<Queue>,
    capacity: usize,
    overflowed: AtomicBool,
    /// Wakes a transport waiting in [`Subscription::overflowed`].
    overflow: Notify,
}

impl Subscriber {
    async fn overflowed(&self) {
        loop {
            if self.overflowed.load(Ordering::Relaxed) {
                return;
            }
            let notified = self.overflow.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.overflowed.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    }
}

/// Completes when a subscription's queue overflowed (see
/// [`Subscription::overflowed`]), held apart from the subscription.
#[derive(Debug, Clone)]
pub struct OverflowSignal(Arc<Subscriber>);

impl OverflowSignal {
    /// Completes when the queue has overflowed.
    pub async fn overflowed(&self) {
        self.0.overflowed().await
    }
}

/// A connection's queued events and the task waiting for them.
#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<Arc<Event>>,
    waker: Option<Waker>,
}

/// A queue that grew past this while a connection fell behind is given back once
/// it has been emptied.
const SHRINK_QUEUE_ABOVE: usize = 64;

/// Events of one connection's queue counted in the backlog gauge: enough to see
/// that a fan-out is not finished, few enough that stalled readers do not stop
/// publishers.
pub const COUNTED_PER_QUEUE: usize = 4;

/// The backlog per connection above which new events wait.
pub const ROOM_PER_QUEUE: i64 = 2;

/// The backlog a node with few connections may always have.
const MIN_BACKLOG: i64 = 1024;

/// What one call to [`Fanout::deliver`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Queues the event was put in.
    pub queued: u64,
    /// Connections found overflowing by this delivery.
    pub overflowed: u64,
}

/// The registry of this node's subscribers by channel.
#[derive(Debug, Default)]
pub struct Fanout {
    channels: RwLock<HashMap<ChannelName, IndexMap<u64, Arc<Subscriber>>>>,
    /// Queued events not yet taken, at most [`COUNTED_PER_QUEUE`] per connection
    /// (briefly negative when a take is counted before its delivery).
    backlog: AtomicI64,
    /// Registered connections.
    subscribers: AtomicUsize,
    /// Publishers waiting in [`Fanout::wait_for_room`].
    waiters: AtomicUsize,
    drained: Notify,
    /// Which partitions the channels with a subscriber fall in, once asked for.
    demand: std::sync::OnceLock<Arc<Demand>>,
}

/// Which partitions this node's subscribers need: per partition, how many channels
/// with a local subscriber fall in it. A broker that follows partitions on demand
/// reads it to stop following those that no local connection needs.
#[derive(Debug)]
pub struct Demand {
    partitions: Partitions,
    channels: Box<[AtomicUsize]>,
}

impl Demand {
    fn new(partitions: Partitions) -> Self {
        Self {
            partitions,
            channels: (0..partitions.total())
                .map(|_| AtomicUsize::new(0))
                .collect(),
        }
    }

    /// How many channels of `partition` have a subscriber on this node.
    pub fn channels(&self, partition: Partition) -> usize {
        self.channels
            .get(usize::from(partition))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    fn counter(&self, channel: &ChannelName) -> &AtomicUsize {
        &self.channels[usize::from(self.partitions.of(channel))]
    }
}

impl Fanout {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Registers a connection on `channels` with a queue of `capacity` events. From
    /// the moment this returns, every event delivered to one of the channels reaches
    /// the returned [`Subscription`].
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        channels: Vec<ChannelName>,
        capacity: usize,
    ) -> Subscription {
        let subscriber = Arc::new(Subscriber {
            queue: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
            overflowed: AtomicBool::new(false),
            overflow: Notify::new(),
        });
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        {
            let mut map = self.channels.write();
            for channel in &channels {
                self.join(&mut map, channel, id, &subscriber);
            }
        }
        Subscription {
            id,
            channels,
            backlog: VecDeque::new(),
            subscriber,
            fanout: self.clone(),
            floors: HashMap::new(),
            merge: None,
            cursor: None,
        }
    }

    /// Tracks from now on which partitions (of `partitions`) the channels with a
    /// local subscriber fall in; the first call decides the partitions. Called
    /// before any connection registers.
    pub fn track(&self, partitions: Partitions) -> Arc<Demand> {
        self.demand
            .get_or_init(|| {
                let demand = Demand::new(partitions);
                for channel in self.channels.read().keys() {
                    demand.counter(channel).fetch_add(1, Ordering::Relaxed);
                }
                Arc::new(demand)
            })
            .clone()
    }

    /// Puts connection `id` on `channel`, in the map `map` of [`Fanout::channels`].
    fn join(
        &self,
        map: &mut HashMap<ChannelName, IndexMap<u64, Arc<Subscriber>>>,
        channel: &ChannelName,
        id: u64,
        subscriber: &Arc<Subscriber>,
    ) {
        match map.entry(channel.clone()) {
            std::collections::hash_map::Entry::Occupied(mut subs) => {
                subs.get_mut().insert(id, subscriber.clone());
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                if let Some(demand) = self.demand.get() {
                    demand.counter(channel).fetch_add(1, Ordering::Relaxed);
                }
                slot.insert(IndexMap::default())
                    .insert(id, subscriber.clone());
            }
        }
    }

    fn unregister(&self, id: u64, channels: &[ChannelName]) {
        let mut map = self.channels.write();
        for channel in channels {
            if let Some(subs) = map.get_mut(channel) {
                subs.swap_remove(&id);
                if subs.is_empty() {
                    map.remove(channel);
                    if let Some(demand) = self.demand.get() {
                        demand.counter(channel).fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Puts `event` in the queue of every connection on one of its channels, once per
    /// connection. Never waits.
    pub fn deliver(&self, event: &Arc<Event>) -> Delivered {
        let map = self.channels.read();
        let mut done = Delivered::default();
        let mut counted = 0;
        // A connection on several of the event's channels gets it once: the
        // deliveries it already had are noted for this event alone (no mark left
        // on the connection, so deliveries from several partitions at once cannot
        // confuse each other).
        let mut reached = (event.channels.len() > 1).then(HashSet::new);
        for channel in &event.channels {
            let Some(subs) = map.get(channel) else {
                continue;
            };
            for (id, sub) in subs {
                if let Some(reached) = &mut reached
                    && !reached.insert(*id)
                {
                    continue;
                }
                if sub.overflowed.load(Ordering::Relaxed) {
                    continue;
                }
                let mut queue = sub.queue.lock();
                let before = queue.events.len();
                if before >= sub.capacity {
                    drop(queue);
                    sub.overflowed.store(true, Ordering::Relaxed);
                    sub.overflow.notify_one();
                    sub.wake();
                    done.overflowed += 1;
                    continue;
                }
                queue.events.push_back(event.clone());
                let waker = queue.waker.take();
                drop(queue);
                done.queued += 1;
                if before < COUNTED_PER_QUEUE {
                    counted += 1;
                }
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
        if counted > 0 {
            self.backlog.fetch_add(counted, Ordering::AcqRel);
        }
        done
    }

    /// The backlog gauge: queued events not yet taken by their connections, at
    /// most [`COUNTED_PER_QUEUE`] per connection.
    pub fn backlog(&self) -> i64 {
        self.backlog.load(Ordering::Acquire)
    }

    /// The backlog above which new events wait.
    fn backlog_limit(&self) -> i64 {
        (ROOM_PER_QUEUE * self.subscribers.load(Ordering::Relaxed) as i64).max(MIN_BACKLOG)
    }

    /// Waits, for at most `max_wait`, until the fan-out has room for another event
    /// (the backlog gauge is at most [`ROOM_PER_QUEUE`] per connection). Returns false when it gave
    /// up waiting. Publishers call it after their events are accepted and before
    /// they answer, so they cannot outrun the fan-out while accepted events go out at
    /// once.
    pub async fn wait_for_room(&self, max_wait: Duration) -> bool {
        if self.backlog() <= self.backlog_limit() {
            return true;
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let room = loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.backlog() <= self.backlog_limit() {
                break true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                break false;
            }
        };
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        room
    }

    /// A connection took an event from its queue, which held `before` events.
    fn took(&self, before: usize) {
        if before > COUNTED_PER_QUEUE {
            return;
        }
        let was = self.backlog.fetch_sub(1, Ordering::AcqRel);
        if self.waiters.load(Ordering::Acquire) > 0 && was - 1 <= self.backlog_limit() {
            self.drained.notify_waiters();
        }
    }

    /// How many channels have at least one subscriber on this node.
    pub fn channel_count(&self) -> usize {
        self.channels.read().len()
    }

    /// How many subscribers `channel` has on this node.
    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.channels.read().get(channel).map_or(0, IndexMap::len)
    }

    /// Closes every connection of this node the way an overflow does, so their
    /// clients reconnect and resume from history. A broker calls it when this node
    /// may have missed events it cannot deliver any more. Returns how many closed.
    pub fn close_all(&self) -> u64 {
        let map = self.channels.read();
        let mut closed = 0;
        for sub in map.values().flat_map(IndexMap::values) {
            if !sub.overflowed.swap(true, Ordering::Relaxed) {
                sub.overflow.notify_one();
                sub.wake();
                closed += 1;
            }
        }
        closed
    }
}

impl Subscriber {
    /// Wakes the task waiting for this queue (to see that it overflowed).
    fn wake(&self) {
        let waker = self.queue.lock().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes the oldest queued event; also returns how many were queued before.
    fn pop(&self) -> Option<(Arc<Event>, usize)> {
        let mut queue = self.queue.lock();
        let before = queue.events.len();
        let event = queue.events.pop_front()?;
        if queue.events.is_empty() && queue.events.capacity() > SHRINK_QUEUE_ABOVE {
            queue.events = VecDeque::new();
        }
        Some((event, before))
    }
}

/// What a subscription yields, in order.
#[derive(Debug, Clone)]
pub enum Item {
    /// An event, replayed or live.
    Event(Arc<Event>),
    /// The history could not cover the gap since the client's last event on these
    /// channels; the client should refetch its state. `id` is the position to resume
    /// from afterwards.
    Reset(Reset),
}

/// A gap the history could not cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// Why: the id was unknown, or the history no longer holds what followed it.
    pub reason: ResetReason,
    /// The channels affected.
    pub channels: Vec<ChannelName>,
    /// The id of the position the client is at after the reset.
    pub id: String,
}

/// Why a resume could not be served from history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The last event id is not one the hub knows (made up, from another hub, or from
    /// before a restart of a hub without shared history).
    UnknownId,
    /// Events that followed the last event id have left the history (count or age).
    Expired,
}

impl ResetReason {
    /// The reason as sent to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownId => "unknown_id",
            Self::Expired => "expired",
        }
    }
}

/// A connection's subscription: replayed events first, then live ones, each once and
/// in order. Channels can be added and removed while it runs. Dropping it
/// unregisters the connection.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    channels: Vec<ChannelName>,
    backlog: VecDeque<Item>,
    subscriber: Arc<Subscriber>,
    fanout: Arc<Fanout>,
    /// Per channel, the position up to which the client already has every event:
    /// live events at or before it were replayed (or seen) and are skipped.
    floors: HashMap<ChannelName, u64>,
    /// The merging of events split over partitions; only while one is under way.
    merge: Option<Box<Merge>>,
    /// With several partitions, where the connection is in each partition of its
    /// channels: moved past every item yielded (and the parts it stands for).
    cursor: Option<Cursor>,
}

/// How long a connection holds an event split over partitions for a part that has
/// not come (its partition's publish failed, or two nodes published split events
/// in different orders): then it yields what came and goes on.
pub const MERGE_WAIT: Duration = Duration::from_secs(5);

/// A connection's merging of the parts of events split over partitions.
///
/// An event published to channels of several partitions arrives as one part from
/// each. A connection on channels of several of them yields the event once, when
/// the parts of all those partitions have come, and holds the later events of those
/// partitions behind it meanwhile, so that each channel keeps its order.
#[derive(Debug, Default)]
struct Merge {
    /// What is ready to yield, in order, each with the positions of the other
    /// parts it stands for.
    ready: VecDeque<(Item, Vec<Position>)>,
    /// Split events whose parts have not all come.
    waiting: Vec<Waiting>,
    /// The partitions held back by a waiting event, each with the events that came
    /// behind it, in order.
    held: HashMap<Partition, VecDeque<Arc<Event>>>,
    /// The positions of the other parts of the event yielded last.
    merged: Vec<Position>,
    /// Split events yielded before all their parts had come (their time was up),
    /// each with the partitions whose parts had not and when it stops being
    /// remembered: such a part that comes late (its partition failed over and the
    /// publisher's retry published it) is not yielded a second time.
    short: VecDeque<Short>,
    /// The positions of late parts taken in and not yielded, which the cursor
    /// passes with the next item yielded.
    skipped: Vec<Position>,
}

/// What a connection's cursor says it has had: with several partitions, a late
/// part whose siblings it is past is one it has had.
#[derive(Debug, Clone, Copy)]
struct Seen<'a>(Option<&'a Cursor>);

impl Seen<'_> {
    /// Whether the cursor is at or past `at`.
    fn has(self, at: &Position) -> bool {
        self.0
            .and_then(|cursor| cursor.get(at.partition))
            .is_some_and(|held| held.epoch == at.epoch && held.seq >= at.seq)
    }
}

/// A split event yielded without some of its parts.
#[derive(Debug)]
struct Short {
    key: u64,
    missing: Vec<Partition>,
    until: tokio::time::Instant,
}

/// How long a connection remembers an event it yielded without some of its parts,
/// to take a part that comes later as the same event.
const LATE_PART_WAIT: Duration = Duration::from_secs(120);

/// The most such events a connection remembers at once.
const SHORT_EVENTS: usize = 1024;

#[derive(Debug)]
struct Waiting {
    key: u64,
    parts: Vec<Arc<Event>>,
    missing: Vec<Partition>,
    until: tokio::time::Instant,
}

impl Merge {
    fn is_idle(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.ready.is_empty()
            && self.waiting.is_empty()
            && self.held.is_empty()
            && self.skipped.is_empty()
            && self.short.iter().all(|s| s.until <= now)
    }

    /// Whether `event` is a part of a split event already yielded without it; if
    /// so, its position is kept for the cursor and it is not yielded.
    fn late(&mut self, event: &Event, key: u64) -> bool {
        let Some(index) = self.short.iter().position(|s| s.key == key) else {
            return false;
        };
        let short = &mut self.short[index];
        if !short.missing.contains(&event.partition) {
            return false;
        }
        short.missing.retain(|p| *p != event.partition);
        if short.missing.is_empty() {
            self.short.remove(index);
        }
        self.skipped.push(event.position());
        true
    }

    /// When the oldest waiting event stops waiting.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.waiting.iter().map(|w| w.until).min()
    }

    /// Takes `event` in: held behind a waiting event of its partition, waiting for
    /// its other parts, or ready.
    fn admit(
        &mut self,
        event: Arc<Event>,
        mine: impl Fn(&ChannelName) -> bool + Copy,
        seen: Seen<'_>,
    ) {
        if let Some(queue) = self.held.get_mut(&event.partition) {
            queue.push_back(event);
            return;
        }
        let Some(split) = event.split.clone() else {
            self.ready.push_back((Item::Event(event), Vec::new()));
            return;
        };
        let partitions = split.partitions_of(mine);
        if partitions.len() <= 1 {
            self.ready.push_back((Item::Event(event), Vec::new()));
            return;
        }
        if self.late(&event, split.key) {
            return;
        }
        if split
            .late
            .iter()
            .any(|at| partitions.contains(&at.partition) && seen.has(at))
        {
            // Published late, after parts this connection is already past: it has
            // had the event.
            self.skipped.push(event.position());
            return;
        }
        let index = match self.waiting.iter().position(|w| w.key == split.key) {
            Some(index) => index,
            None => {
                self.waiting.push(Waiting {
                    key: split.key,
                    parts: Vec::new(),
                    missing: partitions,
                    until: tokio::time::Instant::now() + MERGE_WAIT,
                });
                self.waiting.len() - 1
            }
        };
        let waiting = &mut self.waiting[index];
        waiting.missing.retain(|p| *p != event.partition);
        self.held.entry(event.partition).or_default();
        waiting.parts.push(event);
        if waiting.missing.is_empty() {
            self.complete(index, mine, seen);
        }
    }

    /// Yields the waiting event at `index` (the parts that came) and lets the
    /// events held behind it through.
    fn complete(
        &mut self,
        index: usize,
        mine: impl Fn(&ChannelName) -> bool + Copy,
        seen: Seen<'_>,
    ) {
        let waiting = self.waiting.swap_remove(index);
        if !waiting.missing.is_empty() {
            let now = tokio::time::Instant::now();
            self.short.retain(|s| s.until > now);
            if self.short.len() == SHORT_EVENTS {
                self.short.pop_front();
            }
            self.short.push_back(Short {
                key: waiting.key,
                missing: waiting.missing,
                until: now + LATE_PART_WAIT,
            });
        }
        let mut parts = waiting.parts;
        let Some(last) = parts.pop() else {
            return;
        };
        let mut partitions: Vec<Partition> = parts.iter().map(|e| e.partition).collect();
        partitions.push(last.partition);
        let others = parts.iter().map(|e| e.position()).collect();
        self.ready.push_back((Item::Event(last), others));
        for partition in partitions {
            if let Some(queue) = self.held.remove(&partition) {
                for event in queue {
                    self.admit(event, mine, seen);
                }
            }
        }
    }

    /// Stops waiting for the parts whose time is up.
    fn expire(
        &mut self,
        now: tokio::time::Instant,
        mine: impl Fn(&ChannelName) -> bool + Copy,
        seen: Seen<'_>,
    ) {
        while let Some(index) = self.waiting.iter().position(|w| w.until <= now) {
            self.complete(index, mine, seen);
        }
    }
}

/// The queue of a subscription overflowed: the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection fell behind and its queue overflowed")]
pub struct Overflow;

impl Subscription {
    /// The connection id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The channels subscribed to.
    pub fn channels(&self) -> &[ChannelName] {
        &self.channels
    }

    /// Whether `channel` is subscribed to.
    pub fn has(&self, channel: &ChannelName) -> bool {
        self.channels.contains(channel)
    }

    /// Queues replayed events (in order) and then an optional reset ahead of live
    /// events, for the whole subscription. Live events of a channel at or before the
    /// last position replayed on it are skipped, so an event both replayed and
    /// delivered live is seen once.
    pub fn prepend(&mut self, replay: Vec<Arc<Event>>, reset: Option<Reset>) {
        for event in &replay {
            // Each channel's own order: with several partitions, positions of
            // different channels are not comparable.
            for channel in &event.channels {
                if self.channels.contains(channel) {
                    let floor = self.floors.entry(channel.clone()).or_insert(0);
                    *floor = (*floor).max(event.seq);
                }
            }
        }
        self.backlog.extend(replay.into_iter().map(Item::Event));
        if let Some(reset) = reset {
            self.backlog.push_back(Item::Reset(reset));
        }
    }

    /// Adds a channel to a running subscription; from the moment this returns its
    /// live events are captured. Returns false when it was already subscribed.
    pub fn add_channel(&mut self, channel: ChannelName) -> bool {
        if self.has(&channel) {
            return false;
        }
        {
            let mut map = self.fanout.channels.write();
            self.fanout
                .join(&mut map, &channel, self.id, &self.subscriber);
        }
        self.channels.push(channel);
        true
    }

    /// Removes a channel; queued events that were only for it are no longer yielded.
    /// Returns false when it was not subscribed.
    pub fn remove_channel(&mut self, channel: &ChannelName) -> bool {
        let Some(index) = self.channels.iter().position(|c| c == channel) else {
            return false;
        };
        self.channels.swap_remove(index);
        self.floors.remove(channel);
        self.fanout
            .unregister(self.id, std::slice::from_ref(channel));
        true
    }

    /// Removes every channel: nothing more is queued for this subscription.
    pub fn remove_all(&mut self) {
        let channels = std::mem::take(&mut self.channels);
        self.fanout.unregister(self.id, &channels);
        self.floors.clear();
        self.backlog.clear();
        self.merge = None;
    }

    /// Queues the replay of one channel (added with [`Subscription::add_channel`])
    /// and an optional reset for it; live events of that channel at or before
    /// `after_seq` or the last replayed position are skipped.
    pub fn prepend_channel(
        &mut self,
        channel: &ChannelName,
        replay: Vec<Arc<Event>>,
        reset: Option<Reset>,
        after_seq: u64,
    ) {
        let last = replay.last().map_or(0, |e| e.seq).max(after_seq);
        self.backlog.extend(replay.into_iter().map(Item::Event));
        if let Some(reset) = reset {
            self.backlog.push_back(Item::Reset(reset));
        }
        let floor = self.floors.entry(channel.clone()).or_insert(0);
        *floor = (*floor).max(last);
    }

    /// Skips live events of each channel at or before the position `floor` gives
    /// it (with several partitions, each channel's partition has its own).
    pub fn skip_through_each(&mut self, mut floor: impl FnMut(&ChannelName) -> u64) {
        for channel in &self.channels {
            let seq = floor(channel);
            let held = self.floors.entry(channel.clone()).or_insert(0);
            *held = (*held).max(seq);
        }
    }

    /// Whether a live event is still wanted: on a subscribed channel, after that
    /// channel's floor.
    fn wanted(&self, event: &Event) -> bool {
        event.channels.iter().any(|c| {
            self.channels.contains(c) && event.seq > self.floors.get(c).copied().unwrap_or(0)
        })
    }

    /// The positions of the other parts of the event yielded last, when it was
    /// split over partitions (a connection's cursor moves past all of them).
    pub fn merged(&self) -> &[Position] {
        self.merge.as_ref().map_or(&[], |m| &m.merged)
    }

    /// Takes a replayed or live item in; returns it when it can be yielded at once
    /// (everything but the parts of events split over partitions, while none is
    /// being merged).
    fn take_in(&mut self, item: Item) -> Option<Item> {
        let event = match (item, &mut self.merge) {
            (Item::Event(event), _) => event,
            (item @ Item::Reset(_), None) => return Some(item),
            (item @ Item::Reset(_), Some(merge)) => {
                // Behind what the merge holds.
                merge.ready.push_back((item, Vec::new()));
                return None;
            }
        };
        let channels = &self.channels;
        let mine = |c: &ChannelName| channels.contains(c);
        if self.merge.is_none() {
            let simple = event
                .split
                .as_ref()
                .is_none_or(|split| split.partitions_of(mine).len() <= 1);
            if simple {
                return Some(Item::Event(event));
            }
        }
        let seen = Seen(self.cursor.as_ref());
        self.merge.get_or_insert_default().admit(event, mine, seen);
        None
    }

    /// The next item the merge has ready, if one is being merged.
    fn take_ready(&mut self) -> Option<Item> {
        let merge = self.merge.as_mut()?;
        let (item, others) = merge.ready.pop_front()?;
        merge.merged = others;
        merge.merged.append(&mut merge.skipped);
        Some(item)
    }

    /// Forgets a merge that has nothing left to do (and what it last merged).
    fn settle(&mut self) {
        if self.merge.as_ref().is_some_and(|m| m.is_idle()) {
            self.merge = None;
        } else if let Some(merge) = &mut self.merge {
            merge.merged.clear();
        }
    }

    /// Stops waiting for parts whose time is up.
    fn expire(&mut self) {
        let channels = &self.channels;
        let seen = Seen(self.cursor.as_ref());
        if let Some(merge) = &mut self.merge {
            merge.expire(tokio::time::Instant::now(), |c| channels.contains(c), seen);
        }
    }

    /// The next replayed item to take in.
    fn next_backlog(&mut self) -> Option<Item> {
        while let Some(item) = self.backlog.pop_front() {
            match &item {
                Item::Event(e) if !e.channels.iter().any(|c| self.channels.contains(c)) => {}
                _ => return Some(item),
            }
        }
        None
    }

    /// The next item that needs no live event: one the merge has ready, else the
    /// next replayed one that can be yielded.
    fn ready_or_replayed(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.take_ready() {
                return Some(item);
            }
            let item = self.next_backlog()?;
            if let Some(item) = self.take_in(item) {
                return Some(item);
            }
        }
    }

    /// Keeps the connection's cursor (with several partitions, where it starts in
    /// each partition of its channels), moving it past every item yielded.
    pub fn keep_cursor(&mut self, cursor: Option<Cursor>) {
        self.cursor = cursor;
    }

    /// Where the connection is, with several partitions.
    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    /// [`Subscription::cursor`], to change.
    pub fn cursor_mut(&mut self) -> Option<&mut Cursor> {
        self.cursor.as_mut()
    }

    /// Moves the cursor past `item` and the other parts it stands for.
    fn advance(&mut self, item: &Item) {
        if let (Some(cursor), Item::Event(event)) = (&mut self.cursor, item) {
            cursor.advance(event.position());
            if let Some(merge) = &self.merge {
                for at in &merge.merged {
                    cursor.advance(*at);
                }
            }
        }
    }

    /// The next item, waiting for one. `None` when the hub dropped the subscription
    /// (never, today: the subscription keeps its queue alive). Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Item>, Overflow> {
        let item = self.next_item().await?;
        if let Some(item) = &item {
            self.advance(item);
        }
        Ok(item)
    }

    async fn next_item(&mut self) -> Result<Option<Item>, Overflow> {
        self.settle();
        loop {
            if let Some(item) = self.ready_or_replayed() {
                return Ok(Some(item));
            }
            let deadline = self.merge.as_ref().and_then(|m| m.deadline());
            let subscriber = &self.subscriber;
            let live = std::future::poll_fn(|cx| {
                if subscriber.overflowed.load(Ordering::Relaxed) {
                    return Poll::Ready(Err(Overflow));
                }
                let mut queue = subscriber.queue.lock();
                if queue.events.is_empty() {
                    if !queue
                        .waker
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        queue.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                drop(queue);
                Poll::Ready(Ok(()))
            });
            let woke = match deadline {
                None => live.await.map(|()| true)?,
                // Boxed: the timer is only needed while parts are awaited, and an
                // idle connection's state should not carry its room.
                Some(deadline) => Box::pin(live_or_deadline(live, deadline)).await?,
            };
            if !woke {
                self.expire();
                continue;
            }
            if let Some((event, before)) = self.subscriber.pop() {
                self.fanout.took(before);
                if self.wanted(&event)
                    && let Some(item) = self.take_in(Item::Event(event))
                {
                    return Ok(Some(item));
                }
            }
        }
    }

    /// Completes when this connection's queue has overflowed (it must close),
    /// without taking anything from it; [`Subscription::next`] then reports
    /// [`Overflow`]. A transport blocked writing to a reader that stopped reading
    /// waits on it beside the write, so the overflow is noticed while the write is
    /// stuck.
    pub async fn overflowed(&self) {
        self.subscriber.overflowed().await
    }

    /// A handle that waits for this subscription's overflow from elsewhere (a task
    /// that closes the connection while its writer is stuck).
    pub fn overflow_signal(&self) -> OverflowSignal {
        OverflowSignal(self.subscriber.clone())
    }

    /// The next item if one is ready now.
    pub fn try_next(&mut self) -> Result<Option<Item>, Overflow> {
        let item = self.try_next_item()?;
        if let Some(item) = &item {
            self.advance(item);
        }
        Ok(item)
    }

    fn try_next_item(&mut self) -> Result<Option<Item>, Overflow> {
        self.settle();
        loop {
            if let Some(item) = self.ready_or_replayed() {
                return Ok(Some(item));
            }
            if self.subscriber.overflowed.load(Ordering::Relaxed) {
                return Err(Overflow);
            }
            match self.subscriber.pop() {
                Some((event, before)) => {
                    self.fanout.took(before);
                    if self.wanted(&event)
                        && let Some(item) = self.take_in(Item::Event(event))
                    {
                        return Ok(Some(item));
                    }
                }
                None => {
                    let due = self
                        .merge
                        .as_ref()
                        .and_then(|m| m.deadline())
                        .is_some_and(|d| d <= tokio::time::Instant::now());
                    if !due {
                        return Ok(None);
                    }
                    self.expire();
                }
            }
        }
    }
}

/// Whether `live` is ready (true) before `deadline` passes (false).
async fn live_or_deadline(
    live: impl Future<Output = Result<(), Overflow>>,
    deadline: tokio::time::Instant,
) -> Result<bool, Overflow> {
    tokio::select! {
        ready = live => ready.map(|()| true),
        () = tokio::time::sleep_until(deadline) => Ok(false),
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.fanout.unregister(self.id, &self.channels);
        self.fanout.subscribers.fetch_sub(1, Ordering::Relaxed);
        // No delivery reaches this connection any more: take back what its queue
        // adds to the backlog gauge, and wake publishers that wait on it.
        let left = std::mem::take(&mut self.subscriber.queue.lock().events).len();
        let counted = left.min(COUNTED_PER_QUEUE) as i64;
        if counted != 0 {
            self.fanout.backlog.fetch_sub(counted, Ordering::AcqRel);
            if self.fanout.waiters.load(Ordering::Acquire) > 0 {
                self.fanout.drained.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::NewEvent;
    use std::time::SystemTime;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn event(seq: u64, channels: &[&str]) -> Arc<Event> {
        let mut new = NewEvent::text(ch(channels[0]), format!("e{seq}"));
        new.channels = channels.iter().map(|c| ch(c)).collect();
        Arc::new(Event::accept(new, seq, seq.to_string(), SystemTime::now()))
    }

    /// Event `seq` of partition `partition` on `channels`, named by `data`; a part
    /// of a split event when `split` is given.
    fn part(
        partition: Partition,
        seq: u64,
        channels: &[&str],
        data: &str,
        split: Option<&Arc<crate::core::Split>>,
    ) -> Arc<Event> {
        let mut new = NewEvent::text(ch(channels[0]), data);
        new.channels = channels.iter().map(|c| ch(c)).collect();
        new.split = split.cloned();
        let event = Event::accept(new, seq, format!("{partition}-{seq}"), SystemTime::now());
        Arc::new(event.in_partition(partition, "e"))
    }

    fn data(sub: &mut Subscription) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Item::Event(e)) = sub.try_next().unwrap() {
            out.push(e.data.as_str().to_owned());
        }
        out
    }

    fn split_on(channels: &[(Partition, &str)]) -> Arc<crate::core::Split> {
        Arc::new(crate::core::Split {
            key: 7,
            channels: channels.iter().map(|(p, c)| (*p, ch(c))).collect(),
            late: Vec::new(),
        })
    }

    #[tokio::test]
    async fn a_split_event_is_yielded_once_when_its_parts_have_come_keeping_each_channel_in_order()
    {
        let fanout = Fanout::new();
        let mut both = fanout.register(1, vec![ch("a"), ch("c")], 16);
        let mut only_c = fanout.register(2, vec![ch("c")], 16);
        let split = split_on(&[(0, "a"), (1, "c")]);
        // Partition 0 runs ahead of partition 1.
        fanout.deliver(&part(0, 1, &["a"], "a1", None));
        fanout.deliver(&part(0, 2, &["a"], "E", Some(&split)));
        fanout.deliver(&part(0, 3, &["a"], "a2", None));
        fanout.deliver(&part(1, 1, &["c"], "c1", None));
        assert_eq!(data(&mut both), ["a1", "c1"], "E and what follows it wait");
        fanout.deliver(&part(1, 2, &["c"], "E", Some(&split)));
        fanout.deliver(&part(1, 3, &["c"], "c2", None));
        assert_eq!(data(&mut both), ["E", "a2", "c2"]);
        assert_eq!(
            data(&mut only_c),
            ["c1", "E", "c2"],
            "one partition: nothing held"
        );
    }

    #[test]
    fn a_part_that_never_comes_is_waited_for_only_so_long() {
        let mut merge = Merge::default();
        let mine = |c: &ChannelName| c.as_str() == "a" || c.as_str() == "c";
        let split = split_on(&[(0, "a"), (1, "c")]);
        let seen = Seen(None);
        merge.admit(part(0, 2, &["a"], "E", Some(&split)), mine, seen);
        merge.admit(part(0, 3, &["a"], "a2", None), mine, seen);
        assert!(merge.ready.is_empty());
        let due = merge.deadline().unwrap();
        merge.expire(due - Duration::from_millis(1), mine, seen);
        assert!(merge.ready.is_empty(), "not yet");
        merge.expire(due, mine, seen);
        let out: Vec<&str> = merge
            .ready
            .iter()
            .map(|(item, _)| match item {
                Item::Event(e) => e.data.as_str(),
                Item::Reset(_) => "reset",
            })
            .collect();
        assert_eq!(out, ["E", "a2"]);
        assert!(merge.held.is_empty() && merge.waiting.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_comes_after_its_event_was_yielded_is_not_yielded_again() {
        let fanout = Fanout::new();
        let mut both = fanout.register(1, vec![ch("a"), ch("c")], 16);
        let split = split_on(&[(0, "a"), (1, "c")]);
        fanout.deliver(&part(0, 2, &["a"], "E", Some(&split)));
        fanout.deliver(&part(0, 3, &["a"], "a2", None));
        assert!(data(&mut both).is_empty(), "E waits for its other part");
        // Partition 1 fails over; its part is published by a retry much later.
        tokio::time::advance(MERGE_WAIT).await;
        assert_eq!(data(&mut both), ["E", "a2"]);
        fanout.deliver(&part(1, 7, &["c"], "E", Some(&split)));
        fanout.deliver(&part(1, 8, &["c"], "c8", None));
        let item = both.next().await.unwrap().unwrap();
        assert!(
            matches!(&item, Item::Event(e) if e.data.as_str() == "c8"),
            "{item:?}"
        );
        assert!(
            both.merged().iter().any(|p| p.partition == 1 && p.seq == 7),
            "the cursor passes the late part: {:?}",
            both.merged()
        );
        assert!(
            both.try_next().unwrap().is_none(),
            "and nothing waits on it"
        );
    }

    #[test]
    fn a_late_part_is_taken_as_seen_by_a_connection_past_its_siblings() {
        let fanout = Fanout::new();
        let epoch = crate::core::partition::epoch_tag("e");
        let at = |partition, seq| Position {
            partition,
            epoch,
            seq,
        };
        // The first attempt published the event in partition 1 at 4; the retry that
        // publishes its part in partition 0 says so.
        let mut late = crate::core::Split::clone(&split_on(&[(0, "a"), (1, "c")]));
        late.late = vec![at(1, 4)];
        let late = Arc::new(late);
        let mut past = fanout.register(1, vec![ch("a"), ch("c")], 16);
        let mut cursor = Cursor::new();
        cursor.advance(at(0, 1));
        cursor.advance(at(1, 6));
        past.keep_cursor(Some(cursor));
        let mut before = fanout.register(2, vec![ch("a"), ch("c")], 16);
        let mut cursor = Cursor::new();
        cursor.advance(at(0, 1));
        cursor.advance(at(1, 3));
        before.keep_cursor(Some(cursor));
        fanout.deliver(&part(0, 2, &["a"], "E", Some(&late)));
        fanout.deliver(&part(0, 3, &["a"], "a3", None));
        assert_eq!(
            data(&mut past),
            ["a3"],
            "it had E: not again, not waited on"
        );
        assert_eq!(past.cursor().unwrap().get(0).unwrap().seq, 3);
        // A connection before the first part gets the event once both came.
        assert!(data(&mut before).is_empty());
        fanout.deliver(&part(
            1,
            4,
            &["c"],
            "E",
            Some(&split_on(&[(0, "a"), (1, "c")])),
        ));
        assert_eq!(data(&mut before), ["E", "a3"]);
    }

    async fn next_seq(sub: &mut Subscription) -> u64 {
        match sub.next().await {
            Ok(Some(Item::Event(e))) => e.seq,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_event_on_several_channels_arrives_once() {
        let fanout = Fanout::new();
        let mut both = fanout.register(1, vec![ch("a"), ch("b")], 8);
        let mut only_b = fanout.register(2, vec![ch("b")], 8);
        assert_eq!(fanout.deliver(&event(1, &["a", "b"])).queued, 2);
        fanout.deliver(&event(2, &["b"]));
        assert_eq!(next_seq(&mut both).await, 1);
        assert_eq!(next_seq(&mut both).await, 2);
        assert!(both.try_next().unwrap().is_none());
        assert_eq!(next_seq(&mut only_b).await, 1);
        assert_eq!(next_seq(&mut only_b).await, 2);
    }

    #[tokio::test]
    async fn replay_comes_first_and_live_duplicates_are_skipped() {
        let fanout = Fanout::new();
        let mut sub = fanout.register(1, vec![ch("a")], 8);
        fanout.deliver(&event(3, &["a"]));
        fanout.deliver(&event(4, &["a"]));
        sub.prepend(vec![event(2, &["a"]), event(3, &["a"])], None);
        let seqs = [
            next_seq(&mut sub).await,
            next_seq(&mut sub).await,
            next_seq(&mut sub).await,
        ];
        assert_eq!(seqs, [2, 3, 4]);
    }

    #[tokio::test]
    async fn a_full_queue_overflows_that_connection_only() {
        let fanout = Fanout::new();
        let mut slow = fanout.register(1, vec![ch("a")], 2);
        let mut fast = fanout.register(2, vec![ch("a")], 16);
        let mut overflowed = 0;
        for seq in 1..=5 {
            overflowed += fanout.deliver(&event(seq, &["a"])).overflowed;
            assert_eq!(next_seq(&mut fast).await, seq);
        }
        assert_eq!(overflowed, 1, "counted once");
        assert_eq!(slow.next().await.unwrap_err(), Overflow);
    }

    #[tokio::test]
    async fn channels_can_be_added_with_their_own_replay_and_removed() {
        let fanout = Fanout::new();
        let mut sub = fanout.register(1, vec![ch("a")], 16);
        fanout.deliver(&event(5, &["a"]));
        assert!(sub.add_channel(ch("b")));
        assert!(!sub.add_channel(ch("b")));
        fanout.deliver(&event(6, &["b"]));
        fanout.deliver(&event(7, &["b"]));
        // b's history holds 4 and 6: 6 is replayed, and its live copy skipped.
        sub.prepend_channel(&ch("b"), vec![event(4, &["b"]), event(6, &["b"])], None, 3);
        let seqs = [
            next_seq(&mut sub).await,
            next_seq(&mut sub).await,
            next_seq(&mut sub).await,
            next_seq(&mut sub).await,
        ];
        assert_eq!(seqs, [4, 6, 5, 7]);
        assert!(sub.remove_channel(&ch("a")));
        fanout.deliver(&event(8, &["a"]));
        fanout.deliver(&event(9, &["a", "b"]));
        assert_eq!(next_seq(&mut sub).await, 9);
        assert_eq!(fanout.subscriber_count(&ch("a")), 0);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unregisters_it() {
        let fanout = Fanout::new();
        let sub = fanout.register(1, vec![ch("a"), ch("b")], 2);
        assert_eq!(fanout.channel_count(), 2);
        drop(sub);
        assert_eq!(fanout.channel_count(), 0);
        assert_eq!(fanout.deliver(&event(1, &["a"])).queued, 0);
    }

    #[tokio::test]
    async fn the_backlog_counts_at_most_four_per_queue_and_empties_as_events_are_taken() {
        let fanout = Fanout::new();
        let mut a = fanout.register(1, vec![ch("a")], 16);
        let b = fanout.register(2, vec![ch("a")], 16);
        for seq in 1..=9 {
            fanout.deliver(&event(seq, &["a"]));
        }
        assert_eq!(fanout.backlog(), 8, "four per connection");
        for seq in 1..=8 {
            assert_eq!(next_seq(&mut a).await, seq);
        }
        assert_eq!(fanout.backlog(), 5, "a has one left, b still four");
        drop(b);
        assert_eq!(
            fanout.backlog(),
            1,
            "a closed connection gives its share back"
        );
        assert_eq!(next_seq(&mut a).await, 9);
        assert_eq!(fanout.backlog(), 0);
    }

    #[tokio::test]
    async fn publishers_wait_for_room_until_the_connections_catch_up() {
        let fanout = Fanout::new();
        let n = MIN_BACKLOG as u64 + 8;
        let mut subs: Vec<_> = (0..n)
            .map(|id| fanout.register(id, vec![ch("a")], 8))
            .collect();
        fanout.deliver(&event(1, &["a"]));
        fanout.deliver(&event(2, &["a"]));
        assert!(
            fanout.wait_for_room(Duration::from_secs(60)).await,
            "two events per connection leave room"
        );
        fanout.deliver(&event(3, &["a"]));
        let waiting = {
            let fanout = fanout.clone();
            tokio::spawn(async move { fanout.wait_for_room(Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "three events per connection is a full fan-out"
        );
        for sub in &mut subs {
            assert_eq!(next_seq(sub).await, 1);
        }
        assert!(
            waiting.await.unwrap(),
            "woken when the connections took an event"
        );
    }

    #[tokio::test]
    async fn a_publisher_gives_up_waiting_when_readers_have_stopped() {
        let fanout = Fanout::new();
        let n = MIN_BACKLOG as u64 + 8;
        let _stalled: Vec<_> = (0..n)
            .map(|id| fanout.register(id, vec![ch("a")], 8))
            .collect();
        for seq in 1..=3 {
            fanout.deliver(&event(seq, &["a"]));
        }
        assert!(!fanout.wait_for_room(Duration::from_millis(20)).await);
    }
}
