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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use indexmap::IndexMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use super::channel::ChannelName;
use super::event::Event;

/// A connection's handle as the fan-out sees it.
#[derive(Debug)]
struct Subscriber {
    queue: Mutex<Queue>,
    capacity: usize,
    /// The newest position put in the queue, so an event published to several of
    /// this connection's channels is queued once.
    last_queued: AtomicU64,
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
            last_queued: AtomicU64::new(0),
            overflowed: AtomicBool::new(false),
            overflow: Notify::new(),
        });
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        {
            let mut map = self.channels.write();
            for channel in &channels {
                map.entry(channel.clone())
                    .or_default()
                    .insert(id, subscriber.clone());
            }
        }
        Subscription {
            id,
            channels,
            backlog: VecDeque::new(),
            subscriber,
            fanout: self.clone(),
            floors: HashMap::new(),
        }
    }

    fn unregister(&self, id: u64, channels: &[ChannelName]) {
        let mut map = self.channels.write();
        for channel in channels {
            if let Some(subs) = map.get_mut(channel) {
                subs.swap_remove(&id);
                if subs.is_empty() {
                    map.remove(channel);
                }
            }
        }
    }

    /// Puts `event` in the queue of every connection on one of its channels, once per
    /// connection. Never waits.
    ///
    /// Callers deliver events in the order of their positions; the per-connection
    /// de-duplication relies on it.
    pub fn deliver(&self, event: &Arc<Event>) -> Delivered {
        let map = self.channels.read();
        let mut done = Delivered::default();
        let mut counted = 0;
        for channel in &event.channels {
            let Some(subs) = map.get(channel) else {
                continue;
            };
            for sub in subs.values() {
                if event.channels.len() > 1
                    && sub.last_queued.fetch_max(event.seq, Ordering::Relaxed) >= event.seq
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
    /// events, for the whole subscription. Live events at or before the last
    /// replayed position are skipped, so an event both replayed and delivered live is
    /// seen once.
    pub fn prepend(&mut self, replay: Vec<Arc<Event>>, reset: Option<Reset>) {
        let last = replay.last().map_or(0, |e| e.seq);
        self.backlog.extend(replay.into_iter().map(Item::Event));
        if let Some(reset) = reset {
            self.backlog.push_back(Item::Reset(reset));
        }
        self.skip_through(last);
    }

    /// Skips live events at or before position `seq` on every channel (the client
    /// already has everything up to there).
    pub fn skip_through(&mut self, seq: u64) {
        for channel in &self.channels {
            let floor = self.floors.entry(channel.clone()).or_insert(0);
            *floor = (*floor).max(seq);
        }
    }

    /// Adds a channel to a running subscription; from the moment this returns its
    /// live events are captured. Returns false when it was already subscribed.
    pub fn add_channel(&mut self, channel: ChannelName) -> bool {
        if self.has(&channel) {
            return false;
        }
        self.fanout
            .channels
            .write()
            .entry(channel.clone())
            .or_default()
            .insert(self.id, self.subscriber.clone());
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

    /// Whether a live event is still wanted: on a subscribed channel, after that
    /// channel's floor.
    fn wanted(&self, event: &Event) -> bool {
        event.channels.iter().any(|c| {
            self.channels.contains(c) && event.seq > self.floors.get(c).copied().unwrap_or(0)
        })
    }

    fn next_backlog(&mut self) -> Option<Item> {
        while let Some(item) = self.backlog.pop_front() {
            match &item {
                Item::Event(e) if !e.channels.iter().any(|c| self.channels.contains(c)) => {}
                _ => return Some(item),
            }
        }
        None
    }

    /// The next item, waiting for one. `None` when the hub dropped the subscription
    /// (never, today: the subscription keeps its queue alive).
    pub async fn next(&mut self) -> Result<Option<Item>, Overflow> {
        if let Some(item) = self.next_backlog() {
            return Ok(Some(item));
        }
        loop {
            let event = std::future::poll_fn(|cx| {
                if self.subscriber.overflowed.load(Ordering::Relaxed) {
                    return Poll::Ready(Err(Overflow));
                }
                let mut queue = self.subscriber.queue.lock();
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
            })
            .await;
            event?;
            if let Some((event, before)) = self.subscriber.pop() {
                self.fanout.took(before);
                if self.wanted(&event) {
                    return Ok(Some(Item::Event(event)));
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
        if let Some(item) = self.next_backlog() {
            return Ok(Some(item));
        }
        if self.subscriber.overflowed.load(Ordering::Relaxed) {
            return Err(Overflow);
        }
        while let Some((event, before)) = self.subscriber.pop() {
            self.fanout.took(before);
            if self.wanted(&event) {
                return Ok(Some(Item::Event(event)));
            }
        }
        Ok(None)
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
