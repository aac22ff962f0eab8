//! Channel histories spread over several Redis servers.
//!
//! The first server (the sequencer) keeps what orders a deployment: the position
//! counter, the epoch, publisher ids, the catch-up log and the pub/sub channel every
//! node follows. Each channel's history stream lives on the server its name hashes
//! to ([`Shards::of`]), the sequencer included.
//!
//! A publish is accepted by the sequencer (positions, log, fan-out) and then written
//! into the histories of its channels' shards from the log, in position order, by
//! `append.lua`: each shard records how far it is written (`applied`), and a write
//! that does not start there changes nothing, so any node can finish what another
//! node left half done (a crash between the two steps) and writes never land out of
//! order. The publish is answered 2xx only once every history it touches is
//! written. A replay asks the sequencer for the newest position, brings the shards
//! of its channels up to it and reads them, keeping nothing past it: every event a
//! client could have missed live is in what it reads, and events past that position
//! (perhaps on one shard and not yet on another) come live, in order. If the log no longer holds events a shard never got (the shard was down
//! for longer than the log is long), the shard records that stretch as `lost` and a
//! client resuming from before it gets a `reset`.

use std::collections::BTreeMap;
use std::sync::Arc;

use redis::Value;

use super::link::Link;
use super::{Shared, int, text};
use crate::broker::{BrokerError, wire};
use crate::core::ChannelName;

/// Log entries read at once while writing a shard's histories.
const PAGE: usize = 500;

/// One history server.
#[derive(Debug)]
pub(super) struct Shard {
    /// Its URL with the password hidden: it names the shard in messages.
    pub(super) url: String,
    pub(super) link: Arc<Link>,
}

/// The history servers, in the configured order (the first is the sequencer).
#[derive(Debug)]
pub(super) struct Shards {
    pub(super) list: Vec<Shard>,
    append: redis::Script,
}

/// The shard index of `channel` among `count` shards: FNV-1a of its name, so every
/// node (and every version) places it alike.
pub(crate) fn shard_of(channel: &str, count: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % count.max(1) as u64) as usize
}

impl Shards {
    pub(super) fn new(list: Vec<Shard>) -> Self {
        Self {
            list,
            append: super::script(include_str!("append.lua")),
        }
    }

    /// The shard of `channel`.
    pub(super) fn of(&self, channel: &ChannelName) -> usize {
        shard_of(channel.as_str(), self.list.len())
    }

    /// Why shard `k` cannot be used now, if it cannot.
    pub(super) fn down(&self, k: usize) -> Option<String> {
        let shard = &self.list[k];
        shard
            .link
            .down()
            .map(|why| format!("redis shard {}: {why}", shard.url))
    }

    /// Writes every event up to position `upto` into the histories of shard `k`.
    pub(super) async fn apply(
        &self,
        sh: &Shared,
        k: usize,
        epoch: &str,
        upto: u64,
    ) -> Result<(), BrokerError> {
        let shard = &self.list[k];
        let with_shard = |e: BrokerError| match e {
            BrokerError::Unavailable(why) => {
                BrokerError::Unavailable(format!("redis shard {}: {why}", shard.url))
            }
            other => other,
        };
        loop {
            let state: Vec<Value> = shard
                .link
                .cmd(
                    redis::cmd("MGET")
                        .arg(sh.key("applied_epoch"))
                        .arg(sh.key("applied")),
                )
                .await
                .map_err(with_shard)?;
            let applied = match (state.first().and_then(text), state.get(1).and_then(int)) {
                (Some(e), Some(applied)) if e == epoch => applied as u64,
                _ => 0,
            };
            if applied >= upto {
                return Ok(());
            }
            let reply: Value = sh
                .link
                .cmd(
                    redis::cmd("XRANGE")
                        .arg(sh.key("log"))
                        .arg(format!("{}-0", applied + 1))
                        .arg("+")
                        .arg("COUNT")
                        .arg(PAGE),
                )
                .await?;
            let entries = super::follow::log_entries(&reply).map_err(BrokerError::Unavailable)?;
            let first = entries.first().map_or(upto + 1, |(seq, _, _)| *seq);
            // Positions the log no longer holds: their events can no longer be written.
            let lost = if first > applied + 1 { first - 1 } else { 0 };
            let to = entries.last().map_or(upto, |(seq, _, _)| *seq).max(lost);
            let mut call = self.append.prepare_invoke();
            call.arg(&sh.base).arg(epoch).arg(applied).arg(to).arg(lost);
            let mut writes = Vec::new();
            for (seq, time, blob) in &entries {
                let Some(decoded) = wire::decode(blob) else {
                    continue;
                };
                if decoded.new.ephemeral {
                    continue;
                }
                let channels: Vec<&ChannelName> = decoded
                    .new
                    .channels
                    .iter()
                    .filter(|c| self.of(c) == k)
                    .collect();
                if channels.is_empty() {
                    continue;
                }
                let mut args: Vec<String> = vec![
                    seq.to_string(),
                    time.to_string(),
                    String::from_utf8_lossy(blob).into_owned(),
                    channels.len().to_string(),
                ];
                for channel in channels {
                    let history = &sh.policies.of(channel).history;
                    args.push(channel.as_str().to_owned());
                    args.push(history.size.to_string());
                    args.push(super::RedisBroker::ms(history.ttl).to_string());
                }
                writes.push(args);
            }
            call.arg(writes.len());
            for args in &writes {
                for arg in args {
                    call.arg(arg);
                }
            }
            let _now: u64 = shard.link.script(&call).await.map_err(with_shard)?;
        }
    }

    /// Brings shards `ks` up to the newest position; returns the epoch and position.
    pub(super) async fn catch_up(
        &self,
        sh: &Shared,
        ks: impl IntoIterator<Item = usize>,
    ) -> Result<(String, u64), BrokerError> {
        let state: Vec<Value> = sh
            .link
            .cmd(redis::cmd("MGET").arg(sh.key("epoch")).arg(sh.key("seq")))
            .await?;
        let Some(epoch) = state.first().and_then(text) else {
            // Nothing was ever published.
            return Ok((String::new(), 0));
        };
        let head = state.get(1).and_then(int).unwrap_or(0) as u64;
        for k in ks {
            self.apply(sh, k, &epoch, head).await?;
        }
        Ok((epoch, head))
    }

    /// Groups `channels` by shard, keeping their order within each.
    pub(super) fn split<'a>(
        &self,
        channels: &'a [ChannelName],
    ) -> BTreeMap<usize, Vec<&'a ChannelName>> {
        let mut by: BTreeMap<usize, Vec<&ChannelName>> = BTreeMap::new();
        for channel in channels {
            by.entry(self.of(channel)).or_default().push(channel);
        }
        by
    }
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn channels_spread_over_shards_the_same_way_everywhere() {
        // Fixed values: a change of the hash would move channels between shards.
        assert_eq!(shard_of("a", 2), shard_of("a", 2));
        assert_eq!(shard_of("anything", 1), 0);
        let on_first = (0..1000)
            .filter(|i| shard_of(&format!("room:{i}"), 2) == 0)
            .count();
        assert!((400..600).contains(&on_first), "{on_first} of 1000");
        assert_eq!(shard_of("", 3), (0xcbf2_9ce4_8422_2325_u64 % 3) as usize);
    }
}
