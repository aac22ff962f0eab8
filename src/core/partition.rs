//! Partitions: how channels are spread over several independent sequences, and the
//! cursor that tells where a connection is in each of them.
//!
//! A deployment has P partitions. A channel belongs to one of them, chosen by a
//! stable hash of its name, or of the `{tag}` inside its name when it has one (as
//! Redis Cluster places keys), so that an application can put channels that need a
//! common order in one partition: `{team:42}:tasks` and `{team:42}:chat` share one.
//! Each partition orders its own events; events of different partitions have no
//! order between them, which is what lets partitions live on different servers.
//!
//! A connection on channels of several partitions is at one position in each. Its
//! [`Cursor`] holds them, and its text form is the `id` the connection sees and
//! sends back as `Last-Event-ID`: one id still resumes every channel of the
//! connection. With one partition the cursor is the hub's usual `{epoch}-{seq}`.

use std::fmt;
use std::num::NonZeroU16;

use super::channel::ChannelName;

/// The most partitions a deployment may have.
pub const MAX_PARTITIONS: u16 = 1024;

/// One partition's number, from 0 to P - 1, or P for the hub's own channels.
pub type Partition = u16;

/// How many partitions a deployment has, and which channel belongs to which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partitions(NonZeroU16);

impl Default for Partitions {
    fn default() -> Self {
        Self::ONE
    }
}

impl Partitions {
    /// One partition: one order across every channel.
    pub const ONE: Self = Self(NonZeroU16::MIN);

    /// `count` partitions, from 1 to [`MAX_PARTITIONS`].
    pub fn new(count: u16) -> Option<Self> {
        NonZeroU16::new(count)
            .filter(|c| c.get() <= MAX_PARTITIONS)
            .map(Self)
    }

    /// How many there are.
    pub fn count(self) -> u16 {
        self.0.get()
    }

    /// Whether there is more than one.
    pub fn is_partitioned(self) -> bool {
        self.count() > 1
    }

    /// The partition of `channel`.
    pub fn of(self, channel: &ChannelName) -> Partition {
        self.of_name(channel.as_str())
    }

    /// With several partitions, the partition of the hub's own channels
    /// (`$broadcast`, `$presence`): one more, numbered P, so that a node following
    /// them (every node with connections does) follows no application channel with
    /// them.
    pub fn hub(self) -> Option<Partition> {
        self.is_partitioned().then_some(self.count())
    }

    /// How many sequences order the channels: P, and the hub's own partition when
    /// there are several.
    pub fn total(self) -> u16 {
        match self.hub() {
            Some(hub) => hub + 1,
            None => 1,
        }
    }

    /// The partition of a channel named `name`.
    pub fn of_name(self, name: &str) -> Partition {
        if !self.is_partitioned() {
            return 0;
        }
        if name.starts_with('$') {
            // Only the hub's own channels start with `$`.
            return self.count();
        }
        let hash = fnv1a(hash_key(name).as_bytes());
        // The remainder is below `count`, a u16.
        u16::try_from(hash % u64::from(self.count())).unwrap_or(0)
    }

    /// The distinct partitions of `channels`, ascending.
    pub fn of_all<'a>(self, channels: impl IntoIterator<Item = &'a ChannelName>) -> Vec<Partition> {
        let mut out: Vec<Partition> = channels.into_iter().map(|c| self.of(c)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The part of a channel name that chooses its partition: what stands between the
/// first `{` and the next `}` when that is not empty, otherwise the whole name.
pub fn hash_key(name: &str) -> &str {
    if let Some(open) = name.find('{')
        && let Some(len) = name[open + 1..].find('}')
        && len > 0
    {
        return &name[open + 1..open + 1 + len];
    }
    name
}

/// 64-bit FNV-1a: small, fast and fixed forever, so a channel keeps its partition
/// across versions and on every node.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A short fingerprint of a partition's epoch, as a cursor carries it: 32 bits of
/// the epoch's hash, so a cursor from before a partition lost its data (a new epoch)
/// is told apart without carrying the whole epoch.
pub fn epoch_tag(epoch: &str) -> u32 {
    let hash = fnv1a(epoch.as_bytes());
    // The high and low halves folded together.
    u32::try_from((hash >> 32) ^ (hash & 0xffff_ffff)).unwrap_or(0)
}

/// What the parts of an event published to channels of several partitions share:
/// one part is published in each partition, with that partition's channels, and
/// every part carries this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Tells the parts of one event from those of another.
    pub key: u64,
    /// Every channel of the whole event, with its partition, as published.
    pub channels: Vec<(Partition, ChannelName)>,
    /// Set on a part published after the others: a retry completing an event whose
    /// publish had failed in this part's partition (its primary was failing over),
    /// which found the other parts already published, here. A connection whose
    /// cursor is past one of them has had the event, and takes this part as seen.
    pub late: Vec<Position>,
}

impl Split {
    /// The partitions of the event's channels that `wanted` picks, ascending.
    pub fn partitions_of(&self, mut wanted: impl FnMut(&ChannelName) -> bool) -> Vec<Partition> {
        let mut out: Vec<Partition> = self
            .channels
            .iter()
            .filter(|(_, c)| wanted(c))
            .map(|(p, _)| *p)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A position in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The partition.
    pub partition: Partition,
    /// The partition's epoch, as [`epoch_tag`] gives it.
    pub epoch: u32,
    /// The position within the partition.
    pub seq: u64,
}

/// Where a connection is in each partition its channels touch: the position of the
/// last event it has of each. Kept sorted by partition, at most one position each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    positions: Vec<Position>,
}

/// The separator between the positions of a cursor's text.
const SEPARATOR: char = '_';

impl Cursor {
    /// An empty cursor.
    pub fn new() -> Self {
        Self::default()
    }

    /// The positions, ascending by partition.
    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// Whether it holds no position.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The position in `partition`, if the cursor holds one.
    pub fn get(&self, partition: Partition) -> Option<Position> {
        self.positions
            .binary_search_by_key(&partition, |p| p.partition)
            .ok()
            .map(|i| self.positions[i])
    }

    /// Moves to `position` in its partition: a newer position, or any position of
    /// another epoch, replaces the one held; an older one of the same epoch is
    /// ignored.
    pub fn advance(&mut self, position: Position) {
        match self
            .positions
            .binary_search_by_key(&position.partition, |p| p.partition)
        {
            Ok(i) => {
                let held = &mut self.positions[i];
                if held.epoch != position.epoch || held.seq < position.seq {
                    *held = position;
                }
            }
            Err(i) => self.positions.insert(i, position),
        }
    }

    /// Forgets the positions of partitions not in `keep` (ascending).
    pub fn retain(&mut self, keep: &[Partition]) {
        self.positions
            .retain(|p| keep.binary_search(&p.partition).is_ok());
    }

    /// Reads the text form of a cursor of a partitioned deployment:
    /// `{partition}.{epoch}.{seq}` for each partition (the epoch as 8 lowercase
    /// hexadecimal digits, the others in decimal), joined by `_`, partitions
    /// ascending. `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut positions: Vec<Position> = Vec::new();
        for part in text.split(SEPARATOR) {
            let mut fields = part.split('.');
            let (Some(p), Some(epoch), Some(seq), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return None;
            };
            let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let hex = epoch.len() == 8
                && epoch
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !decimal(p) || !decimal(seq) || !hex {
                return None;
            }
            let position = Position {
                partition: p.parse().ok()?,
                epoch: u32::from_str_radix(epoch, 16).ok()?,
                seq: seq.parse().ok()?,
            };
            // Partition MAX_PARTITIONS is the hub's own with that many.
            if position.partition > MAX_PARTITIONS
                || positions
                    .last()
                    .is_some_and(|last| last.partition >= position.partition)
            {
                return None;
            }
            positions.push(position);
        }
        Some(Self { positions })
    }

    /// Whether `text` has the form of a partitioned cursor (see [`Cursor::parse`]).
    pub fn is_cursor(text: &str) -> bool {
        Self::parse(text).is_some()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.positions.iter().enumerate() {
            if i > 0 {
                write!(f, "{SEPARATOR}")?;
            }
            write!(f, "{}.{:08x}.{}", p.partition, p.epoch, p.seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn one_partition_holds_every_channel() {
        let one = Partitions::ONE;
        assert_eq!(one.of(&ch("orders")), 0);
        assert_eq!(one.of(&ch("user:17")), 0);
        assert!(!one.is_partitioned());
    }

    #[test]
    fn the_hubs_own_channels_have_a_partition_of_their_own() {
        assert_eq!(Partitions::ONE.hub(), None);
        assert_eq!(Partitions::ONE.total(), 1);
        assert_eq!(Partitions::ONE.of(&ChannelName::broadcast()), 0);
        let p = Partitions::new(16).unwrap();
        assert_eq!((p.hub(), p.total()), (Some(16), 17));
        assert_eq!(p.of(&ChannelName::broadcast()), 16);
        assert_eq!(p.of(&ChannelName::presence_log()), 16);
        assert!((0..2000).all(|i| p.of(&ch(&format!("room{i}"))) < 16));
        let most = Partitions::new(MAX_PARTITIONS).unwrap();
        let text = format!("{}.00000007.5", most.hub().unwrap());
        assert!(Cursor::parse(&text).is_some(), "the hub's own at the most");
    }

    #[test]
    fn the_count_is_bounded() {
        assert_eq!(Partitions::new(0), None);
        assert_eq!(Partitions::new(MAX_PARTITIONS + 1), None);
        assert_eq!(Partitions::new(16).map(Partitions::count), Some(16));
    }

    #[test]
    fn a_tag_puts_channels_in_one_partition() {
        assert_eq!(hash_key("{team:42}:tasks"), "team:42");
        assert_eq!(hash_key("chat:{team:42}"), "team:42");
        assert_eq!(hash_key("a{}b{c}"), "a{}b{c}", "an empty tag is no tag");
        assert_eq!(hash_key("a{b"), "a{b");
        let p = Partitions::new(64).unwrap();
        assert_eq!(p.of(&ch("{team:42}:tasks")), p.of(&ch("{team:42}:chat")));
        assert_eq!(p.of(&ch("{team:42}:tasks")), p.of_name("team:42"));
    }

    #[test]
    fn channels_spread_over_the_partitions_and_keep_their_place() {
        let p = Partitions::new(16).unwrap();
        let mut counts = [0usize; 16];
        for i in 0..16_000 {
            counts[usize::from(p.of(&ch(&format!("user:{i}"))))] += 1;
        }
        // Each partition gets its share within 15 %.
        assert!(
            counts.iter().all(|&c| (850..=1150).contains(&c)),
            "{counts:?}"
        );
        // Fixed forever: these are the places of today's names.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_cursor_keeps_the_newest_position_of_each_partition() {
        let mut c = Cursor::new();
        let at = |partition, seq| Position {
            partition,
            epoch: 7,
            seq,
        };
        c.advance(at(3, 10));
        c.advance(at(1, 5));
        c.advance(at(3, 8));
        assert_eq!(c.get(3), Some(at(3, 10)));
        assert_eq!(c.to_string(), "1.00000007.5_3.00000007.10");
        let new_epoch = Position {
            partition: 3,
            epoch: 9,
            seq: 1,
        };
        c.advance(new_epoch);
        assert_eq!(c.get(3), Some(new_epoch), "a new epoch starts over");
        c.retain(&[3]);
        assert_eq!(c.positions(), &[new_epoch]);
    }

    #[test]
    fn cursors_that_are_not_of_the_form_are_refused() {
        for bad in [
            "",
            "1.00000007",
            "1.0000007.5",
            "1.0000000G.5",
            "1.00000007.5.1",
            "3.00000007.1_1.00000007.5",
            "1.00000007.5_1.00000007.6",
            "1.00000007.5_",
            "-1.00000007.5",
            "1025.00000007.5",
            "1.00000007.99999999999999999999",
            "1.00000007.+5",
            "5f3a9c1e-42",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(crate::fuzzing::cases(256))]

        /// A cursor reads back as written, and anything at all is read without panic.
        #[test]
        fn a_cursor_reads_back_as_written(
            entries in proptest::collection::btree_map(0u16..MAX_PARTITIONS, (any::<u32>(), any::<u64>()), 1..20),
            junk in ".{0,60}",
        ) {
            let mut c = Cursor::new();
            for (partition, (epoch, seq)) in entries {
                c.advance(Position { partition, epoch, seq });
            }
            prop_assert_eq!(Cursor::parse(&c.to_string()), Some(c));
            let _ = Cursor::parse(&junk);
        }
    }
}
