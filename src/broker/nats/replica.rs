//! This node's copy of the stream: every event applied in stream order, kept in
//! per-channel logs exactly as the memory broker keeps them (the same
//! [`ChannelLogs`], so resumes and gaps work alike), and delivered to the
//! local fan-out under the same lock, so a resume read from the logs and live
//! delivery agree on what a connection has seen. History is aged by the node's
//! [`Clock`], against the time the stream stamped each event with.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::broker::{LocalDelivery, Replay, wire};
use crate::core::event::parse_hub_id;
use crate::core::{ChannelLogs, ChannelName, Clock, Event, KnownId, Policies};

/// Events accepted this long before the node started are not delivered live when
/// the node reads them while catching up (clock skew between node and server).
const START_SLACK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    /// The stream's epoch; ids of hub-assigned events are `{epoch}-{seq}`.
    epoch: Option<String>,
    /// The newest stream position applied.
    seq: u64,
    /// Positions at or before this one were never seen by this node (it started
    /// after they left the stream, or they left before it read them).
    floor: u64,
    /// The history, with the publisher ids it remembers.
    logs: ChannelLogs,
    /// Events accepted before this (give or take [`START_SLACK`]) are not
    /// delivered live when read: when the node started, or when it began to read
    /// a partition it follows on demand.
    started: SystemTime,
}

impl State {
    fn new(history_memory: usize, started: SystemTime) -> Self {
        Self {
            epoch: None,
            seq: 0,
            floor: 0,
            logs: ChannelLogs::with_budget(history_memory),
            started,
        }
    }
}

/// How an id resolves against this node's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resolved {
    /// A position this node has applied.
    At(u64),
    /// A hub id of the current epoch beyond what this node has applied yet.
    Ahead(u64),
    /// Not known here (yet).
    Unknown,
}

/// The node's copy of the stream.
#[derive(Debug)]
pub(super) struct Replica {
    policies: Arc<Policies>,
    delivery: LocalDelivery,
    history_memory: usize,
    clock: Clock,
    /// The partition this copy is of (0 with one partition).
    partition: crate::core::Partition,
    state: Mutex<State>,
    applied: watch::Sender<u64>,
}

impl Replica {
    pub(super) fn new(
        policies: Arc<Policies>,
        delivery: LocalDelivery,
        history_memory: usize,
        clock: Clock,
        partition: crate::core::Partition,
    ) -> Self {
        Self {
            policies,
            delivery,
            history_memory,
            partition,
            state: Mutex::new(State::new(history_memory, clock.now())),
            clock,
            applied: watch::channel(0).0,
        }
    }

    pub(super) fn delivery(&self) -> &LocalDelivery {
        &self.delivery
    }

    /// The current epoch, if the stream is known.
    pub(super) fn epoch(&self) -> Option<String> {
        self.state.lock().epoch.clone()
    }

    /// The newest position applied.
    pub(super) fn applied(&self) -> u64 {
        self.state.lock().seq
    }

    /// Waits until position `seq` is applied, at most `wait`.
    pub(super) async fn wait_applied(&self, seq: u64, wait: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(wait, applied.wait_for(|a| *a >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Adopts the stream's epoch. A different one than before means the stream was
    /// deleted and created again: everything known is dropped and every local
    /// connection closed, so clients resume (and get a reset for unknown ids).
    pub(super) fn set_epoch(&self, epoch: &str, last_seq: u64) {
        let mut state = self.state.lock();
        match state.epoch.as_deref() {
            Some(known) if known == epoch && last_seq >= state.seq => return,
            None => {
                state.epoch = Some(epoch.to_owned());
                return;
            }
            Some(known) => {
                tracing::warn!(
                    "nats: the stream changed under this node (epoch {known} is now {epoch}, \
                     position {} is now {last_seq}); starting over",
                    state.seq
                );
            }
        }
        *state = State::new(self.history_memory, state.started);
        state.epoch = Some(epoch.to_owned());
        drop(state);
        self.applied.send_replace(0);
        self.delivery.close_all();
    }

    /// Takes `epoch` as the stream's when none is known yet (a node publishing to
    /// a partition it does not read); never starts over, unlike
    /// [`Replica::set_epoch`]: the follower may have begun to read meanwhile.
    pub(super) fn adopt_epoch(&self, epoch: &str) {
        let mut state = self.state.lock();
        if state.epoch.is_none() {
            state.epoch = Some(epoch.to_owned());
        }
    }

    /// Drops everything this copy holds, when the node stops following its
    /// partition; it is read again from the stream, delivering live only what
    /// was accepted from `live_from` on, when the node follows it again.
    pub(super) fn forget(&self, live_from: SystemTime) {
        *self.state.lock() = State::new(self.history_memory, live_from);
        self.applied.send_replace(0);
    }

    /// Applies the event at stream position `seq`.
    pub(super) fn apply(&self, seq: u64, time: SystemTime, payload: &[u8]) {
        let mut state = self.state.lock();
        let state = &mut *state;
        if seq <= state.seq {
            return;
        }
        if seq != state.seq + 1 {
            // Positions are consecutive; a jump means events left the stream before
            // this node read them (or it starts after they left).
            if state.seq > 0 {
                let closed = self.delivery.close_all();
                tracing::warn!(
                    "nats: events {}..{seq} left the stream before this node read them; \
                     closed {closed} local connections so their clients resume",
                    state.seq + 1
                );
            }
            state.floor = seq - 1;
        }
        state.seq = seq;
        let epoch = state.epoch.clone().unwrap_or_default();
        if let Some(decoded) = wire::decode(payload) {
            let event = decoded.accept(&epoch, seq, time, self.partition);
            let now = self.clock.now();
            let evicted = state.logs.append(&event, &self.policies, now);
            self.delivery.stats().history_evicted(evicted);
            if event.time + START_SLACK >= state.started {
                self.delivery.deliver(&event);
            }
        }
        self.applied.send_replace(seq);
    }

    /// What a publisher id this node has seen names.
    pub(super) fn publisher_id(&self, id: &str) -> Option<KnownId> {
        self.state.lock().logs.publisher_id(id)
    }

    /// What `id` names here.
    pub(super) fn resolve(&self, id: &str) -> Resolved {
        let state = self.state.lock();
        if let Some(known) = state.logs.publisher_id(id) {
            return Resolved::At(known.seq);
        }
        let Some((epoch, seq)) = parse_hub_id(id) else {
            return Resolved::Unknown;
        };
        match &state.epoch {
            Some(current) if current == epoch && seq <= state.seq => Resolved::At(seq),
            Some(current) if current == epoch => Resolved::Ahead(seq),
            _ => Resolved::Unknown,
        }
    }

    /// The events on `channels` after `after` (everything kept for `None`), with a
    /// reset for the channels this node cannot cover.
    pub(super) fn replay(&self, channels: &[ChannelName], after: Option<u64>) -> Replay {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let epoch = state.epoch.clone().unwrap_or_default();
        let head = format!("{epoch}-{}", state.seq);
        if after.is_some_and(|a| a < state.floor) {
            // From before what this node ever saw: a gap on every channel.
            let resumed = crate::core::Resumed {
                events: Vec::new(),
                gaps: channels.to_vec(),
            };
            return Replay::of(resumed, after, state.seq, head);
        }
        let resumed = state.logs.replay(channels, after, &self.policies, now);
        Replay::of(resumed, after, state.seq, head)
    }

    /// Decodes a message of the stream at `seq` into the event it carries.
    pub(super) fn event_at(
        &self,
        seq: u64,
        time: SystemTime,
        payload: &[u8],
    ) -> Option<Arc<Event>> {
        let epoch = self.epoch()?;
        Some(wire::decode(payload)?.accept(&epoch, seq, time, self.partition))
    }

    /// [`Replica::replay`] from `events`, every event of the stream after `after`
    /// up to `head` as read from JetStream, rather than from this copy: each
    /// channel's history rebuilt under its policy (size and age), so a channel
    /// whose events the node's memory budget dropped is covered as the stream
    /// covers it, and one whose policy dropped them still gets its reset.
    pub(super) fn replay_read(
        &self,
        channels: &[ChannelName],
        after: u64,
        head: u64,
        events: &[Arc<Event>],
    ) -> Replay {
        let now = self.clock.now();
        let mut logs = ChannelLogs::with_budget(usize::MAX);
        for event in events {
            if event.channels.iter().any(|c| channels.contains(c)) {
                logs.append(event, &self.policies, now);
            }
        }
        let resumed = logs.replay(channels, Some(after), &self.policies, now);
        let epoch = self.epoch().unwrap_or_default();
        Replay::of(resumed, Some(after), head, format!("{epoch}-{head}"))
    }

    /// A reset for an id this node does not know.
    pub(super) fn unknown(&self, channels: &[ChannelName]) -> Replay {
        let state = self.state.lock();
        Replay::unknown(channels, state.seq, Self::id_at(&state))
    }

    /// The id of the newest position this node applied.
    pub(super) fn head_id(&self) -> String {
        Self::id_at(&self.state.lock())
    }

    fn id_at(state: &State) -> String {
        let epoch = state.epoch.as_deref().unwrap_or_default();
        format!("{epoch}-{}", state.seq)
    }

    /// Up to `limit` of the newest events kept for `channel`.
    pub(super) fn history(&self, channel: &ChannelName, limit: usize) -> Vec<Arc<Event>> {
        let mut state = self.state.lock();
        state
            .logs
            .history(channel, limit, &self.policies, self.clock.now())
    }

    /// Expires history and drops empty logs.
    pub(super) fn maintain(&self) {
        let mut state = self.state.lock();
        state.logs.maintain(&self.policies, self.clock.now());
    }

    /// How many channels have a log.
    pub(super) fn channels(&self) -> usize {
        self.state.lock().logs.len()
    }

    /// The approximate memory of the logs, in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.state.lock().logs.bytes()
    }
}
