//! Brokers: how accepted events get their positions, are kept in history, and reach
//! the fan-out of every node.
//!
//! A broker owns the order of events. It assigns each event its position, stores it
//! in the history of its channels, and hands it to [`LocalDelivery`] on every node in
//! position order, which is what lets one `Last-Event-ID` describe a client's place
//! across all of its channels. [`memory`] is the single-node broker; [`redis`] and
//! [`nats`] share positions, history and delivery between several nodes.

pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
mod on_demand;
pub mod partitioned;
#[cfg(feature = "redis")]
pub mod redis;
mod settings;
#[cfg(any(feature = "redis", feature = "nats"))]
mod wire;

pub use settings::{BrokerKind, MemoryConfig, NatsConfig, NatsStorage, RedisConfig, redis_nodes};

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::core::{
    ChannelName, ChannelSet, Cursor, Demand, Event, Fanout, KnownId, NewEvent, Partitions, Reset,
    ResetReason, Resumed,
};
use crate::stats::Stats;

/// The id a resuming client sends, or a request for everything still kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeFrom {
    /// Every event the history still holds (the `earliest` id).
    Earliest,
    /// The events after this id.
    After(String),
}

impl ResumeFrom {
    /// Reads a `Last-Event-ID` value: `earliest` asks for everything still kept.
    pub fn parse(last_event_id: &str) -> Self {
        match last_event_id {
            "earliest" => Self::Earliest,
            id => Self::After(id.to_owned()),
        }
    }

    /// The id as the client sent it.
    pub fn as_id(&self) -> &str {
        match self {
            Self::Earliest => "earliest",
            Self::After(id) => id,
        }
    }
}

/// What a resume yields.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The missed events of the requested channels, in order, each once.
    pub events: Vec<Arc<Event>>,
    /// Set when the history could not cover the gap on some channels.
    pub reset: Option<Reset>,
    /// The position the client had reached; live events at or before it are skipped.
    /// With several partitions, see `partitioned`.
    pub after_seq: u64,
    /// The id of the newest position when the history was read.
    pub head: String,
    /// With several partitions: where the client is in each partition of its
    /// channels, before the replayed events (a partition whose channels are reset
    /// puts it at that partition's newest position).
    pub partitioned: Option<PartitionStart>,
}

/// Where a resume leaves a connection of a partitioned deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStart {
    /// How channels are placed in partitions.
    pub partitions: Partitions,
    /// The position in each partition of the requested channels.
    pub cursor: Cursor,
}

impl Replay {
    /// The replay of what a resume read for a client at `after` (`None`: it asked
    /// for everything kept), when the newest position is `head` with id `head_id`.
    /// Channels with a gap get a `reset`, which puts the client at the head.
    pub(crate) fn of(resumed: Resumed, after: Option<u64>, head: u64, head_id: String) -> Self {
        let reset = (!resumed.gaps.is_empty()).then_some(Reset {
            reason: ResetReason::Expired,
            channels: resumed.gaps,
            id: head_id.clone(),
        });
        let after_seq = match (&reset, after) {
            (Some(_), _) => head,
            (None, Some(a)) => a,
            (None, None) => 0,
        };
        Self {
            events: resumed.events,
            reset,
            after_seq,
            head: head_id,
            partitioned: None,
        }
    }

    /// The replay of a client whose id is unknown: a reset of every channel, and
    /// the client at the head.
    pub(crate) fn unknown(channels: &[ChannelName], head: u64, head_id: String) -> Self {
        Self {
            events: Vec::new(),
            reset: Some(Reset {
                reason: ResetReason::UnknownId,
                channels: channels.to_vec(),
                id: head_id.clone(),
            }),
            after_seq: head,
            head: head_id,
            partitioned: None,
        }
    }

    /// The position up to which the client has every event of `channel`: its live
    /// events at or before it are skipped.
    pub fn floor(&self, channel: &ChannelName) -> u64 {
        match &self.partitioned {
            None => self.after_seq,
            Some(start) => start
                .cursor
                .get(start.partitions.of(channel))
                .map_or(0, |at| at.seq),
        }
    }

    /// The id of where the client starts: with several partitions, the cursor of
    /// its partitions (`None` with one).
    pub fn start_id(&self) -> Option<String> {
        self.partitioned.as_ref().map(|s| s.cursor.to_string())
    }
}

/// An event the broker accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its id.
    pub id: String,
    /// Its position.
    pub seq: u64,
    /// The publisher-supplied id was already published and still known: the event
    /// was not published again.
    pub duplicate: bool,
}

/// A broker could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker's backing service cannot be reached; the caller should retry later.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    /// An event of the batch carries a publisher id that already names another
    /// event, on other channels (or the batch gives it to two such events). Nothing
    /// of the batch was published, except on NATS when another node published the
    /// other event at the same moment (then the events before it were).
    #[error("event {index}: the id {id:?} already names another event, on other channels")]
    IdConflict {
        /// The place of the event in the batch.
        index: usize,
        /// The id.
        id: String,
    },
}

/// Checks that no event of a batch claims a publisher id that names another event:
/// one on other channels, as `known` tells, or an earlier event of the batch on
/// other channels. The same id with the same channels is a retry, and is answered as
/// a duplicate by the broker.
pub(crate) fn check_publisher_ids(
    events: &[NewEvent],
    known: impl Fn(&str) -> Option<KnownId>,
) -> Result<(), BrokerError> {
    let mut batch: HashMap<&str, ChannelSet> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        let Some(id) = event.id.as_deref() else {
            continue;
        };
        let channels = ChannelSet::of(&event.channels);
        let claimed = batch
            .get(id)
            .copied()
            .or_else(|| known(id).map(|k| k.channels));
        if claimed.is_some_and(|c| c != channels) {
            return Err(BrokerError::IdConflict {
                index,
                id: id.to_owned(),
            });
        }
        batch.insert(id, channels);
    }
    Ok(())
}

/// Moves events between publishers, history and the fan-out of every node.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// A short name for logs and `/stats` (`memory`, `redis`, `nats`).
    fn kind(&self) -> &'static str;

    /// Accepts a batch of valid events, in order: assigns positions, stores them in
    /// history, and delivers them to every node. Returns once they are accepted.
    ///
    /// A publisher id names one event: an event whose id is still known for the
    /// same channels is answered as a duplicate and not published again; one whose
    /// id is known for other channels is refused with [`BrokerError::IdConflict`].
    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Accepted>, BrokerError>;

    /// The events on `channels` after `from`, and a reset for the channels whose
    /// history cannot cover the gap.
    async fn replay(
        &self,
        channels: &[ChannelName],
        from: ResumeFrom,
    ) -> Result<Replay, BrokerError>;

    /// The id of the newest position: resuming after it yields every event
    /// accepted from now on.
    async fn head(&self) -> Result<String, BrokerError>;

    /// The id of the newest position of what orders `channels`: resuming them after
    /// it yields every event accepted on them from now on. With partitions, only
    /// theirs are read.
    async fn head_for(&self, _channels: &[ChannelName]) -> Result<String, BrokerError> {
        self.head().await
    }

    /// Up to `limit` of the newest events kept for `channel`, oldest first.
    async fn history(
        &self,
        channel: &ChannelName,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, BrokerError>;

    /// Where this broker holds the event published under publisher id `id`, if it
    /// holds one. A publish of an event split over partitions asks each partition
    /// before publishing, so that a retry completing an event whose publish failed
    /// in some partitions publishes the missing parts as late ones (see
    /// [`crate::core::Split::late`]).
    async fn find_id(&self, _id: &str) -> Result<Option<crate::core::Position>, BrokerError> {
        Ok(None)
    }

    /// Whether this node receives only the events of the partitions its local
    /// connections need, so that [`Broker::follow`] must be awaited before a
    /// subscription reads where to start.
    fn follows_on_demand(&self) -> bool {
        false
    }

    /// Makes sure this node receives the live events of `channels` from now on, and
    /// returns once it does (or once the broker's timeout has passed: it then
    /// catches up as after losing its connection). It goes on receiving them while a
    /// local connection is on a channel of theirs, and for a while after.
    async fn follow(&self, _channels: &[ChannelName]) {}

    /// Whether the broker can accept events now.
    async fn check(&self) -> Result<(), BrokerError>;

    /// Periodic upkeep: expiring history, forgetting idle channels.
    async fn maintain(&self) {}

    /// How many channels have history on this broker.
    fn history_channels(&self) -> usize;

    /// The approximate memory the history held in this process takes, in bytes
    /// (0 for a broker that keeps history elsewhere).
    fn history_bytes(&self) -> u64 {
        0
    }
}

impl std::fmt::Debug for dyn Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker({})", self.kind())
    }
}

/// This node's end of delivery: the fan-out plus the counters it feeds.
#[derive(Debug, Clone)]
pub struct LocalDelivery {
    fanout: Arc<Fanout>,
    stats: Arc<Stats>,
}

impl LocalDelivery {
    /// Delivery into `fanout`, counted in `stats`.
    pub fn new(fanout: Arc<Fanout>, stats: Arc<Stats>) -> Self {
        Self { fanout, stats }
    }

    /// Hands an event to every local subscriber of its channels.
    pub fn deliver(&self, event: &Arc<Event>) {
        self.stats.received(event.partition);
        let done = self.fanout.deliver(event);
        self.stats.delivered(done.queued, done.overflowed);
    }

    /// Closes every local connection, for a broker that finds this node missed
    /// events it can no longer deliver: their clients reconnect and resume from
    /// history. Returns how many were closed.
    pub fn close_all(&self) -> u64 {
        let closed = self.fanout.close_all();
        self.stats.broker_closed(closed);
        closed
    }

    /// Which of `partitions` this node's connections need, kept up to date by the
    /// fan-out.
    pub fn track(&self, partitions: Partitions) -> Arc<Demand> {
        self.fanout.track(partitions)
    }

    /// The hub's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// The resolved settings of a broker: which one, and its section.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Which broker (the `broker` key, resolved with `redis.shards`).
    pub kind: BrokerKind,
    /// `[memory]`.
    pub memory: MemoryConfig,
    /// `[redis]`.
    pub redis: RedisConfig,
    /// `[nats]`.
    pub nats: NatsConfig,
    /// The memory all in-process histories may hold together, in bytes.
    pub history_memory: usize,
}

/// Starts the broker `settings` name. Must be called inside a Tokio runtime;
/// brokers for several nodes connect in the background. The brokers that keep
/// history in this process (memory, NATS) age it by `clock`; Redis keeps it on
/// the server, aged by the server's clock.
pub fn start(
    settings: &BrokerSettings,
    policies: Arc<crate::core::Policies>,
    delivery: LocalDelivery,
    clock: crate::core::Clock,
) -> Result<Arc<dyn Broker>, crate::settings::ConfigError> {
    // The partitions of the broker's channels (validated with the configuration);
    // what the node receives is counted per partition.
    let partitions = match &settings.kind {
        BrokerKind::Memory => settings.memory.partitions(),
        BrokerKind::Redis(_) => Partitions::new(settings.redis.partitions)
            .ok_or_else(|| crate::settings::ConfigError::new("redis.partitions", "is not valid"))?,
        BrokerKind::Nats(_) => settings.nats.partitions(),
    };
    delivery.stats().count_partitions(partitions.total());
    Ok(match &settings.kind {
        BrokerKind::Memory => {
            if partitions.is_partitioned() {
                // The memory budget is shared out between the partitions.
                let budget = settings.history_memory / usize::from(partitions.total());
                let parts = (0..partitions.total())
                    .map(|p| {
                        Arc::new(memory::MemoryBroker::for_partition(
                            p,
                            policies.clone(),
                            delivery.clone(),
                            budget,
                            clock.clone(),
                        )) as Arc<dyn Broker>
                    })
                    .collect();
                Arc::new(
                    partitioned::Partitioned::new(partitions, parts).ok_or_else(|| {
                        crate::settings::ConfigError::new("memory.partitions", "is not valid")
                    })?,
                )
            } else {
                Arc::new(memory::MemoryBroker::new(
                    policies,
                    delivery,
                    settings.history_memory,
                    clock,
                ))
            }
        }
        #[cfg(feature = "redis")]
        BrokerKind::Redis(url) if partitions.is_partitioned() => {
            // Each node follows only the partitions its connections need, and sends
            // the commands of all of them over one connection.
            let demand = delivery.track(partitions);
            let command = redis::CommandLink::open(url, &settings.redis, delivery.stats().clone())?;
            let parts = (0..partitions.total())
                .map(|p| {
                    Ok(Arc::new(redis::RedisBroker::start_partition(
                        url,
                        &settings.redis,
                        policies.clone(),
                        delivery.clone(),
                        p,
                        Some(demand.clone()),
                        Some(command.clone()),
                    )?) as Arc<dyn Broker>)
                })
                .collect::<Result<Vec<_>, crate::settings::ConfigError>>()?;
            Arc::new(
                partitioned::Partitioned::new(partitions, parts).ok_or_else(|| {
                    crate::settings::ConfigError::new("redis.partitions", "is not valid")
                })?,
            )
        }
        #[cfg(feature = "redis")]
        BrokerKind::Redis(url) => Arc::new(redis::RedisBroker::start(
            url,
            &settings.redis,
            policies,
            delivery,
        )?),
        #[cfg(feature = "nats")]
        BrokerKind::Nats(url) if partitions.is_partitioned() => {
            // Each node reads only the streams of the partitions its connections
            // need, and keeps their history within its share of the budget.
            let demand = delivery.track(partitions);
            let budget = settings.history_memory / usize::from(partitions.total());
            let parts = (0..partitions.total())
                .map(|p| {
                    Ok(Arc::new(nats::NatsBroker::start_partition(
                        url,
                        &settings.nats,
                        policies.clone(),
                        delivery.clone(),
                        budget,
                        clock.clone(),
                        p,
                        Some(demand.clone()),
                    )?) as Arc<dyn Broker>)
                })
                .collect::<Result<Vec<_>, crate::settings::ConfigError>>()?;
            Arc::new(
                partitioned::Partitioned::new(partitions, parts).ok_or_else(|| {
                    crate::settings::ConfigError::new("nats.partitions", "is not valid")
                })?,
            )
        }
        #[cfg(feature = "nats")]
        BrokerKind::Nats(url) => Arc::new(nats::NatsBroker::start(
            url,
            &settings.nats,
            policies,
            delivery,
            settings.history_memory,
            clock,
        )?),
        #[allow(unreachable_patterns)]
        other => {
            return Err(crate::settings::ConfigError::new(
                "broker",
                format!("{other:?} is not available in this build"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(crate::fuzzing::cases(256))]

        /// Any `Last-Event-ID` reads back as the client sent it; only `earliest`
        /// asks for everything kept.
        #[test]
        fn a_last_event_id_reads_back_as_sent(id in prop_oneof![".{0,40}", Just("earliest".to_owned())]) {
            let from = ResumeFrom::parse(&id);
            prop_assert_eq!(from.as_id(), id.as_str());
            prop_assert_eq!(from == ResumeFrom::Earliest, id == "earliest");
        }
    }
}
