//! This node's copy of the stream: every event applied in stream order, kept in
//! per-channel logs exactly as the memory broker keeps them, and delivered to the
//! local fan-out under the same lock, so a resume read from the logs and live
//! delivery agree on what a connection has seen.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::broker::{LocalDelivery, Replay, wire};
use crate::core::history::merge;
use crate::core::{ChannelLog, ChannelName, Event, Policies, Reset, ResetReason};

/// How many publisher-supplied ids are remembered for resume and de-duplication.
const CUSTOM_ID_CAPACITY: usize = 100_000;

/// Buckets remembering the newest position of channels whose log was dropped.
const FORGOTTEN_BUCKETS: usize = 4096;

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
    logs: HashMap<ChannelName, ChannelLog>,
    custom_ids: HashMap<String, u64>,
    custom_order: VecDeque<(u64, String, SystemTime)>,
    forgotten: Box<[u64]>,
    /// For logs created after their channel's earlier log was dropped: what its
    /// bucket remembered then, which may have been this channel's.
    reborn: HashMap<ChannelName, u64>,
    hasher: std::collections::hash_map::RandomState,
}

impl State {
    fn new() -> Self {
        Self {
            epoch: None,
            seq: 0,
            floor: 0,
            logs: HashMap::new(),
            custom_ids: HashMap::new(),
            custom_order: VecDeque::new(),
            forgotten: vec![0; FORGOTTEN_BUCKETS].into_boxed_slice(),
            reborn: HashMap::new(),
            hasher: Default::default(),
        }
    }

    fn bucket(&self, channel: &ChannelName) -> usize {
        (self.hasher.hash_one(channel) % FORGOTTEN_BUCKETS as u64) as usize
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
    started: SystemTime,
    state: Mutex<State>,
    applied: watch::Sender<u64>,
}

impl Replica {
    pub(super) fn new(policies: Arc<Policies>, delivery: LocalDelivery) -> Self {
        Self {
            policies,
            delivery,
            started: SystemTime::now(),
            state: Mutex::new(State::new()),
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
        *state = State::new();
        state.epoch = Some(epoch.to_owned());
        drop(state);
        self.applied.send_replace(0);
        self.delivery.close_all();
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
            let custom = decoded.new.id.clone();
            let event = decoded.accept(&epoch, seq, time);
            let now = SystemTime::now();
            if let Some(custom) = custom {
                self.remember_custom_id(state, custom, seq, now);
            }
            if !event.ephemeral {
                for channel in &event.channels {
                    let policy = &self.policies.of(channel).history;
                    if !state.logs.contains_key(channel) {
                        let dropped = state.forgotten[state.bucket(channel)];
                        if dropped > 0 {
                            state.reborn.insert(channel.clone(), dropped);
                        }
                    }
                    state.logs.entry(channel.clone()).or_default().append(
                        event.clone(),
                        policy,
                        now,
                    );
                }
            }
            if event.time + START_SLACK >= self.started {
                self.delivery.deliver(&event);
            }
        }
        self.applied.send_replace(seq);
    }

    fn remember_custom_id(&self, state: &mut State, id: String, seq: u64, now: SystemTime) {
        state.custom_ids.insert(id.clone(), seq);
        state.custom_order.push_back((seq, id, now));
        let cutoff = now.checked_sub(self.policies.longest_ttl());
        while state.custom_order.len() > CUSTOM_ID_CAPACITY
            || state
                .custom_order
                .front()
                .is_some_and(|(_, _, t)| cutoff.is_some_and(|c| *t < c))
        {
            if let Some((_, old, _)) = state.custom_order.pop_front() {
                state.custom_ids.remove(&old);
            }
        }
    }

    /// The position of a publisher id this node has seen.
    pub(super) fn custom_id(&self, id: &str) -> Option<u64> {
        self.state.lock().custom_ids.get(id).copied()
    }

    /// What `id` names here.
    pub(super) fn resolve(&self, id: &str) -> Resolved {
        let state = self.state.lock();
        if let Some(&seq) = state.custom_ids.get(id) {
            return Resolved::At(seq);
        }
        let Some((epoch, seq)) = id.split_once('-') else {
            return Resolved::Unknown;
        };
        let Ok(seq) = seq.parse::<u64>() else {
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
        let now = SystemTime::now();
        let mut state = self.state.lock();
        let epoch = state.epoch.clone().unwrap_or_default();
        let head = format!("{epoch}-{}", state.seq);
        let mut runs = Vec::with_capacity(channels.len());
        let mut gaps = Vec::new();
        let floor = state.floor;
        for channel in channels {
            let policy = &self.policies.of(channel).history;
            let bucket = state.bucket(channel);
            let reborn = state.reborn.get(channel).copied().unwrap_or(0);
            if after.is_some_and(|a| a < floor || a < reborn) {
                gaps.push(channel.clone());
                continue;
            }
            match state.logs.get_mut(channel) {
                Some(log) => {
                    log.expire(policy, now);
                    match log.since(after.unwrap_or(0)) {
                        Ok(events) => runs.push(events.cloned().collect()),
                        Err(_) if after.is_none() => runs.push(log.kept().cloned().collect()),
                        Err(_) => gaps.push(channel.clone()),
                    }
                }
                None => {
                    if after.is_some_and(|a| a < state.forgotten[bucket]) {
                        gaps.push(channel.clone());
                    }
                }
            }
        }
        let reset = (!gaps.is_empty()).then_some(Reset {
            reason: ResetReason::Expired,
            channels: gaps,
            id: head,
        });
        let events = merge(runs);
        let after_seq = match (&reset, after) {
            (Some(_), _) => state.seq,
            (None, Some(a)) => a,
            (None, None) => 0,
        };
        Replay {
            events,
            reset,
            after_seq,
        }
    }

    /// A reset for an id this node does not know.
    pub(super) fn unknown(&self, channels: &[ChannelName]) -> Replay {
        let state = self.state.lock();
        let epoch = state.epoch.clone().unwrap_or_default();
        Replay {
            events: Vec::new(),
            reset: Some(Reset {
                reason: ResetReason::UnknownId,
                channels: channels.to_vec(),
                id: format!("{epoch}-{}", state.seq),
            }),
            after_seq: state.seq,
        }
    }

    /// Up to `limit` of the newest events kept for `channel`.
    pub(super) fn history(&self, channel: &ChannelName, limit: usize) -> Vec<Arc<Event>> {
        let mut state = self.state.lock();
        let Some(log) = state.logs.get_mut(channel) else {
            return Vec::new();
        };
        log.expire(&self.policies.of(channel).history, SystemTime::now());
        let mut newest: Vec<Arc<Event>> = log.kept().rev().take(limit).cloned().collect();
        newest.reverse();
        newest
    }

    /// Expires history and drops empty logs.
    pub(super) fn maintain(&self) {
        let now = SystemTime::now();
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut dropped = Vec::new();
        for (channel, log) in state.logs.iter_mut() {
            log.expire(&self.policies.of(channel).history, now);
            if log.is_empty() {
                dropped.push(channel.clone());
            }
        }
        for channel in dropped {
            if let Some(log) = state.logs.remove(&channel) {
                state.reborn.remove(&channel);
                let bucket = state.bucket(&channel);
                state.forgotten[bucket] = state.forgotten[bucket].max(log.last_seq());
            }
        }
    }

    /// How many channels have a log.
    pub(super) fn channels(&self) -> usize {
        self.state.lock().logs.len()
    }
}
