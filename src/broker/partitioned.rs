//! Several partitions, each ordered by a broker of its own, behind one [`Broker`].
//!
//! Each partition is a complete broker of one sequence (positions, epoch, history,
//! publisher ids) that knows nothing of the others; this layer places channels in
//! partitions ([`Partitions`]), splits events over them, and translates between the
//! partitions' own ids (`{epoch}-{seq}`) and the [`Cursor`] a connection holds:
//!
//! - **Publishing** an event whose channels fall in several partitions publishes one
//!   part of it in each, with the channels of that partition; every part carries
//!   what they share ([`Split`]: a key and every channel of the event with its
//!   partition). A connection on channels of several of those partitions merges
//!   the parts (`core::fanout`): it yields the event once, when the parts of all its
//!   partitions have come, and holds later events of those partitions behind it,
//!   so every channel keeps its order. Publishes that split take this node's locks
//!   of their partitions in ascending order, so two of them that share partitions
//!   are in the same order in each. The parts are published partition by partition,
//!   each atomically; the batch as a whole is not atomic across partitions (a
//!   failure answers an error after some partitions accepted their parts, and a
//!   retry with publisher ids publishes only what is missing). The event's id is
//!   the cursor of its positions, or its publisher id.
//! - **Resuming** reads the cursor's position in each partition of the requested
//!   channels and asks that partition's broker for what followed, each in its own
//!   order; a partition whose epoch changed (it lost its history) or that the cursor
//!   does not name resets its channels only. A publisher id is looked up in each
//!   partition of the requested channels.
//! - **The head** is the cursor of every partition's newest position.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::join_all;

use super::{Accepted, Broker, BrokerError, PartitionStart, Replay, ResumeFrom};
use crate::core::event::parse_hub_id;
use crate::core::partition::epoch_tag;
use crate::core::{
    ChannelName, Cursor, Event, NewEvent, Partition, Partitions, Position, Reset, ResetReason,
    Split,
};

/// One broker per partition, as one broker.
#[derive(Debug)]
pub struct Partitioned {
    partitions: Partitions,
    parts: Vec<Arc<dyn Broker>>,
    /// Taken, in ascending order, by the publishes that split an event over
    /// several partitions.
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// The position a partition's own id names, in that partition.
fn position(partition: Partition, id: &str) -> Option<Position> {
    let (epoch, seq) = parse_hub_id(id)?;
    Some(Position {
        partition,
        epoch: epoch_tag(epoch),
        seq,
    })
}

impl Partitioned {
    /// The `partitions`, partition `i` ordered by `parts[i]` (the hub's own
    /// partition by the last). `None` unless there is one part per sequence
    /// ([`Partitions::total`]).
    pub fn new(partitions: Partitions, parts: Vec<Arc<dyn Broker>>) -> Option<Self> {
        if parts.len() != usize::from(partitions.total()) {
            return None;
        }
        let locks = parts.iter().map(|_| tokio::sync::Mutex::new(())).collect();
        Some(Self {
            partitions,
            parts,
            locks,
        })
    }

    /// How the channels are placed.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    fn part(&self, partition: Partition) -> &Arc<dyn Broker> {
        &self.parts[usize::from(partition)]
    }

    /// `channels`, each with its partition, in their order.
    fn place(&self, channels: &[ChannelName]) -> Vec<(Partition, ChannelName)> {
        channels
            .iter()
            .map(|c| (self.partitions.of(c), c.clone()))
            .collect()
    }

    /// Marks as late the parts of a split event with publisher id `id` that a
    /// retry publishes after others were published under the same id (the first
    /// attempt failed in some partitions): each late part carries where the others
    /// are, so a connection that already had the event takes it as seen. A
    /// partition that cannot be asked is taken as not holding the id (its publish
    /// fails the same way).
    async fn mark_late(&self, id: &str, parts: &mut [(Partition, NewEvent)]) {
        let found = join_all(
            parts
                .iter()
                .map(|(partition, _)| self.part(*partition).find_id(id)),
        )
        .await;
        let known: Vec<Position> = found
            .iter()
            .filter_map(|f| f.as_ref().ok().copied().flatten())
            .collect();
        if known.is_empty() || known.len() == parts.len() {
            return;
        }
        for ((_, part), found) in parts.iter_mut().zip(&found) {
            if matches!(found, Ok(Some(_))) {
                continue;
            }
            if let Some(split) = &part.split {
                let mut late = Split::clone(split);
                late.late.clone_from(&known);
                part.split = Some(Arc::new(late));
            }
        }
    }

    /// The parts of `event`, one per partition its channels fall in, ascending.
    fn split(&self, event: NewEvent) -> Vec<(Partition, NewEvent)> {
        let placed = self.place(&event.channels);
        let groups = by_partition(&placed);
        if groups.len() == 1 {
            let partition = groups.into_keys().next().unwrap_or(0);
            return vec![(partition, event)];
        }
        let split = Arc::new(Split {
            // The same for a retry under the same publisher id, so a part that a
            // retry publishes late is known for one of the same event.
            key: match &event.id {
                Some(id) => crate::core::partition::fnv1a(id.as_bytes()),
                None => rand::random(),
            },
            channels: placed,
            late: Vec::new(),
        });
        groups
            .into_iter()
            .map(|(partition, channels)| {
                let part = NewEvent {
                    channels,
                    split: Some(split.clone()),
                    ..event.clone()
                };
                (partition, part)
            })
            .collect()
    }

    /// The epoch and newest position of `partition`.
    async fn head_of(&self, partition: Partition) -> Result<(String, u64), BrokerError> {
        let head = self.part(partition).head().await?;
        let (epoch, seq) = parse_hub_id(&head).ok_or_else(|| {
            BrokerError::Unavailable(format!("partition {partition} has no position"))
        })?;
        Ok((epoch.to_owned(), seq))
    }

    /// The cursor of the newest position of each of `partitions`.
    async fn heads(
        &self,
        partitions: impl IntoIterator<Item = Partition>,
    ) -> Result<String, BrokerError> {
        let heads = join_all(partitions.into_iter().map(|p| async move {
            let (epoch, seq) = self.head_of(p).await?;
            Ok::<_, BrokerError>(Position {
                partition: p,
                epoch: epoch_tag(&epoch),
                seq,
            })
        }))
        .await;
        let mut cursor = Cursor::new();
        for at in heads {
            cursor.advance(at?);
        }
        Ok(cursor.to_string())
    }

    /// What partition `partition`'s broker is asked to resume from, for a client
    /// that sent `from` (read as a cursor when it is one).
    async fn resume_in(
        &self,
        partition: Partition,
        from: &ResumeFrom,
        cursor: Option<&Cursor>,
    ) -> Result<ResumeFrom, BrokerError> {
        Ok(match (from, cursor) {
            (ResumeFrom::Earliest, _) => ResumeFrom::Earliest,
            (ResumeFrom::After(_), Some(cursor)) => match cursor.get(partition) {
                Some(at) => {
                    let (epoch, _) = self.head_of(partition).await?;
                    if epoch_tag(&epoch) == at.epoch {
                        ResumeFrom::After(format!("{epoch}-{}", at.seq))
                    } else {
                        // The partition started over: the position is unknown.
                        ResumeFrom::After(String::new())
                    }
                }
                // The cursor holds no place in this partition.
                None => ResumeFrom::After(String::new()),
            },
            // A publisher id (or anything else), looked up in the partition.
            (ResumeFrom::After(id), None) => ResumeFrom::After(id.clone()),
        })
    }
}

#[async_trait]
impl Broker for Partitioned {
    fn kind(&self) -> &'static str {
        self.parts.first().map_or("memory", |p| p.kind())
    }

    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Accepted>, BrokerError> {
        let count = events.len();
        let mut batches: Vec<(Vec<usize>, Vec<NewEvent>)> =
            vec![(Vec::new(), Vec::new()); self.parts.len()];
        for (index, event) in events.into_iter().enumerate() {
            let id = event.id.clone();
            let mut parts = self.split(event);
            if let (Some(id), true) = (id, parts.len() > 1) {
                self.mark_late(&id, &mut parts).await;
            }
            for (partition, part) in parts {
                let batch = &mut batches[usize::from(partition)];
                batch.0.push(index);
                batch.1.push(part);
            }
        }
        // A batch that splits an event holds the locks of the partitions it
        // touches, ascending, while it publishes: two such batches are then in one
        // order in every partition they share, which lets a connection merge them.
        let splits = batches
            .iter()
            .filter(|(indexes, _)| !indexes.is_empty())
            .count()
            > 1;
        let mut guards = Vec::new();
        if splits {
            for (partition, (indexes, _)) in batches.iter().enumerate() {
                if !indexes.is_empty() {
                    guards.push(self.locks[partition].lock().await);
                }
            }
        }
        let outcomes = join_all(
            batches
                .into_iter()
                .enumerate()
                .filter(|(_, (indexes, _))| !indexes.is_empty())
                .map(|(partition, (indexes, parts))| async move {
                    let outcome = self.parts[partition].publish(parts).await;
                    (partition, indexes, outcome)
                }),
        )
        .await;
        drop(guards);
        let mut accepted: Vec<Vec<(Partition, Accepted)>> = vec![Vec::new(); count];
        for (partition, indexes, outcome) in outcomes {
            let partition = u16::try_from(partition).unwrap_or(0);
            match outcome {
                Ok(parts) => {
                    for (index, part) in indexes.into_iter().zip(parts) {
                        accepted[index].push((partition, part));
                    }
                }
                Err(BrokerError::IdConflict { index, id }) => {
                    return Err(BrokerError::IdConflict {
                        index: indexes.get(index).copied().unwrap_or(index),
                        id,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(accepted.into_iter().map(combine).collect())
    }

    async fn replay(
        &self,
        channels: &[ChannelName],
        from: ResumeFrom,
    ) -> Result<Replay, BrokerError> {
        let groups = by_partition(&self.place(channels));
        let cursor = match &from {
            ResumeFrom::After(id) => Cursor::parse(id),
            ResumeFrom::Earliest => None,
        };
        let replays = join_all(groups.into_iter().map(|(partition, channels)| {
            let from = &from;
            let cursor = cursor.as_ref();
            async move {
                let resume = self.resume_in(partition, from, cursor).await?;
                let replay = self.part(partition).replay(&channels, resume).await?;
                Ok::<_, BrokerError>((partition, replay))
            }
        }))
        .await;
        let mut start = Cursor::new();
        let mut head = Cursor::new();
        let mut events: Vec<Arc<Event>> = Vec::new();
        let mut reset: Option<Reset> = None;
        for outcome in replays {
            let (partition, replay) = outcome?;
            if let Some(at) = position(partition, &replay.head) {
                head.advance(at);
                start.advance(Position {
                    seq: replay.after_seq,
                    ..at
                });
            }
            events.extend(replay.events);
            if let Some(gap) = replay.reset {
                let merged = reset.get_or_insert_with(|| Reset {
                    reason: ResetReason::Expired,
                    channels: Vec::new(),
                    id: String::new(),
                });
                if gap.reason == ResetReason::UnknownId {
                    merged.reason = ResetReason::UnknownId;
                }
                merged.channels.extend(gap.channels);
            }
        }
        if let Some(reset) = &mut reset {
            // Where the client is once the replayed events and the reset are through.
            let mut after = start.clone();
            for event in &events {
                after.advance(event.position());
            }
            reset.id = after.to_string();
        }
        Ok(Replay {
            events,
            reset,
            after_seq: 0,
            head: head.to_string(),
            partitioned: Some(PartitionStart {
                partitions: self.partitions,
                cursor: start,
            }),
        })
    }

    async fn head(&self) -> Result<String, BrokerError> {
        self.heads(0..self.partitions.total()).await
    }

    async fn head_for(&self, channels: &[ChannelName]) -> Result<String, BrokerError> {
        if channels.is_empty() {
            return self.head().await;
        }
        self.heads(self.partitions.of_all(channels)).await
    }

    async fn history(
        &self,
        channel: &ChannelName,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        self.part(self.partitions.of(channel))
            .history(channel, limit)
            .await
    }

    fn follows_on_demand(&self) -> bool {
        self.parts.iter().any(|p| p.follows_on_demand())
    }

    async fn follow(&self, channels: &[ChannelName]) {
        let wanted = self.partitions.of_all(channels);
        join_all(wanted.into_iter().map(|p| self.part(p).follow(&[]))).await;
    }

    async fn check(&self) -> Result<(), BrokerError> {
        for outcome in join_all(self.parts.iter().map(|p| p.check())).await {
            outcome?;
        }
        Ok(())
    }

    async fn maintain(&self) {
        join_all(self.parts.iter().map(|p| p.maintain())).await;
    }

    fn history_channels(&self) -> usize {
        self.parts.iter().map(|p| p.history_channels()).sum()
    }

    fn history_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.history_bytes()).sum()
    }
}

/// Placed channels grouped by partition, ascending, each channel once.
fn by_partition(placed: &[(Partition, ChannelName)]) -> BTreeMap<Partition, Vec<ChannelName>> {
    let mut groups: BTreeMap<Partition, Vec<ChannelName>> = BTreeMap::new();
    for (partition, channel) in placed {
        let channels = groups.entry(*partition).or_default();
        if !channels.contains(channel) {
            channels.push(channel.clone());
        }
    }
    groups
}

/// One answer for an event from the answers of its parts: its id is the cursor of
/// the positions its parts got (or the publisher's id), and it is a duplicate when
/// every part was.
fn combine(parts: Vec<(Partition, Accepted)>) -> Accepted {
    let duplicate = parts.iter().all(|(_, a)| a.duplicate);
    let seq = parts.first().map_or(0, |(_, a)| a.seq);
    let mut cursor = Cursor::new();
    let mut publisher_id = None;
    for (partition, part) in &parts {
        match position(*partition, &part.id) {
            Some(at) => cursor.advance(at),
            None => publisher_id = Some(part.id.clone()),
        }
    }
    Accepted {
        id: publisher_id.unwrap_or_else(|| cursor.to_string()),
        seq,
        duplicate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::LocalDelivery;
    use crate::broker::memory::MemoryBroker;
    use crate::core::{Clock, Fanout, Policies};
    use crate::stats::Stats;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn broker(count: u16) -> (Partitioned, Arc<Fanout>) {
        let fanout = Fanout::new();
        let delivery = LocalDelivery::new(fanout.clone(), Arc::new(Stats::default()));
        let policies = Arc::new(Policies::default());
        let partitions = Partitions::new(count).unwrap();
        let parts = (0..partitions.total())
            .map(|p| {
                Arc::new(MemoryBroker::for_partition(
                    p,
                    policies.clone(),
                    delivery.clone(),
                    1 << 20,
                    Clock::system(),
                )) as Arc<dyn Broker>
            })
            .collect();
        (Partitioned::new(partitions, parts).unwrap(), fanout)
    }

    /// Two channel names in different partitions of `p`, the first's partition lower.
    fn apart(p: Partitions) -> (ChannelName, ChannelName) {
        let names: Vec<ChannelName> = (0..100).map(|i| ch(&format!("c{i}"))).collect();
        let first = names.iter().min_by_key(|c| p.of(c)).unwrap().clone();
        let second = names.iter().max_by_key(|c| p.of(c)).unwrap().clone();
        (first, second)
    }

    #[test]
    fn an_event_is_split_into_one_part_per_partition_sharing_every_channel() {
        let (b, _) = broker(4);
        let (low, high) = apart(b.partitions());
        let parts = b.split(NewEvent::text(low.clone(), "x").also_to(high.clone()));
        assert_eq!(parts.len(), 2);
        let (first, second) = (&parts[0].1, &parts[1].1);
        assert_eq!(first.channels, vec![low.clone()]);
        assert_eq!(second.channels, vec![high.clone()]);
        let split = first.split.as_ref().unwrap();
        assert_eq!(Some(split), second.split.as_ref());
        let p = b.partitions();
        assert_eq!(
            split.channels,
            vec![(p.of(&low), low.clone()), (p.of(&high), high.clone())]
        );
        assert!(
            b.split(NewEvent::text(low, "x"))
                .iter()
                .all(|(_, e)| e.split.is_none())
        );
    }

    #[tokio::test]
    async fn a_connection_on_both_partitions_receives_a_split_event_once() {
        let (b, fanout) = broker(4);
        let (low, high) = apart(b.partitions());
        let mut both = fanout.register(1, vec![low.clone(), high.clone()], 16);
        let mut only_high = fanout.register(2, vec![high.clone()], 16);
        let accepted = b
            .publish(vec![NewEvent::text(low.clone(), "x").also_to(high.clone())])
            .await
            .unwrap();
        let cursor = Cursor::parse(&accepted[0].id).expect("the id is a cursor");
        assert_eq!(cursor.positions().len(), 2);
        let got = both.try_next().unwrap().expect("the event");
        let crate::core::Item::Event(event) = got else {
            panic!("an event")
        };
        let mine = [low.clone(), high.clone()];
        assert_eq!(
            crate::protocol::matching_channels(&event, &mine),
            vec![&low, &high],
            "it names both channels"
        );
        assert_eq!(both.merged().len(), 1, "it stands for the other part too");
        assert!(both.try_next().unwrap().is_none(), "once");
        assert!(only_high.try_next().unwrap().is_some());
        assert!(only_high.try_next().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cursor_resumes_each_partition_from_its_own_position() {
        let (b, _) = broker(4);
        let (low, high) = apart(b.partitions());
        let first = b
            .publish(vec![
                NewEvent::text(low.clone(), "1"),
                NewEvent::text(high.clone(), "2"),
            ])
            .await
            .unwrap();
        // Where a client is after both: one position in each partition.
        let mut cursor = Cursor::parse(&first[0].id).unwrap();
        cursor.advance(Cursor::parse(&first[1].id).unwrap().positions()[0]);
        b.publish(vec![NewEvent::text(high.clone(), "3")])
            .await
            .unwrap();
        let replay = b
            .replay(
                &[low.clone(), high.clone()],
                ResumeFrom::After(cursor.to_string()),
            )
            .await
            .unwrap();
        let data: Vec<&str> = replay.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["3"]);
        assert!(replay.reset.is_none());
        assert_eq!(replay.floor(&low), 1);
        assert_eq!(replay.floor(&high), 1);
        assert_eq!(replay.start_id(), Some(cursor.to_string()));
    }

    #[tokio::test]
    async fn the_head_of_channels_holds_only_their_partitions() {
        let (b, _) = broker(4);
        let (low, high) = apart(b.partitions());
        b.publish(vec![NewEvent::text(high.clone(), "1")])
            .await
            .unwrap();
        let whole = Cursor::parse(&b.head().await.unwrap()).unwrap();
        assert_eq!(
            whole.positions().len(),
            5,
            "four partitions and the hub's own"
        );
        let of_low = Cursor::parse(&b.head_for(std::slice::from_ref(&low)).await.unwrap()).unwrap();
        let partitions: Vec<u16> = of_low.positions().iter().map(|p| p.partition).collect();
        assert_eq!(partitions, [b.partitions().of(&low)]);
        let of_high =
            Cursor::parse(&b.head_for(std::slice::from_ref(&high)).await.unwrap()).unwrap();
        assert_eq!(of_high.positions()[0].seq, 1);
    }
}
