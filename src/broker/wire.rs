//! How an event travels between nodes and sits in a shared store: one line of
//! compact JSON holding what a publisher gave (channels, type, data, its own id,
//! retry, whether it is live only). The position and the time are kept beside it by
//! each broker (a stream entry id, a JetStream sequence), not inside it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::{ChannelName, Event, NewEvent, Partition, Payload, Position, Split};

/// The stored form of an event.
#[derive(Debug, Serialize, Deserialize)]
struct Wire<'a> {
    /// Channels.
    #[serde(borrow)]
    c: Vec<Cow<'a, str>>,
    /// Event type, when not the default.
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    t: Option<Cow<'a, str>>,
    /// Data as text.
    #[serde(borrow)]
    d: Cow<'a, str>,
    /// Whether `d` is JSON.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    j: bool,
    /// The publisher's id.
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    i: Option<Cow<'a, str>>,
    /// Retry hint in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<u32>,
    /// Live only (not kept in history).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    x: bool,
    /// With partitions, when this is one part of an event published to channels of
    /// several: what the parts share.
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    s: Option<WireSplit<'a>>,
}

/// [`Split`] as it travels.
#[derive(Debug, Serialize, Deserialize)]
struct WireSplit<'a> {
    /// The key.
    k: u64,
    /// Every channel of the event, with its partition.
    #[serde(borrow)]
    c: Vec<(Partition, Cow<'a, str>)>,
    /// On a late part, the other parts' positions: partition, epoch tag, position.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    l: Vec<(Partition, u32, u64)>,
}

fn names(channels: &[ChannelName]) -> Vec<Cow<'_, str>> {
    channels.iter().map(|c| Cow::Borrowed(c.as_str())).collect()
}

fn channels(names: &[Cow<'_, str>]) -> Vec<ChannelName> {
    names
        .iter()
        .filter_map(|c| ChannelName::from_broker(c))
        .collect()
}

/// Encodes an event for a store or another node. The text never holds a line break.
pub(crate) fn encode(event: &NewEvent) -> String {
    let wire = Wire {
        c: names(&event.channels),
        t: event.kind.as_deref().map(Cow::Borrowed),
        d: Cow::Borrowed(event.data.as_str()),
        j: event.data.is_json(),
        i: event.id.as_deref().map(Cow::Borrowed),
        r: event.retry,
        x: event.ephemeral,
        s: event.split.as_ref().map(|split| WireSplit {
            k: split.key,
            c: split
                .channels
                .iter()
                .map(|(p, c)| (*p, Cow::Borrowed(c.as_str())))
                .collect(),
            l: split
                .late
                .iter()
                .map(|at| (at.partition, at.epoch, at.seq))
                .collect(),
        }),
    };
    // Serialising borrowed strings and integers into a String cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

/// A decoded event: what was published, before it gets its position.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) new: NewEvent,
}

impl Decoded {
    /// The accepted event at `seq` of `partition`; its id is the publisher's or
    /// `{epoch}-{seq}`.
    pub(crate) fn accept(
        self,
        epoch: &str,
        seq: u64,
        time: SystemTime,
        partition: Partition,
    ) -> Arc<Event> {
        let id = match &self.new.id {
            Some(id) => id.clone(),
            None => format!("{epoch}-{seq}"),
        };
        Arc::new(Event::accept(self.new, seq, id, time).in_partition(partition, epoch))
    }
}

/// Decodes what [`encode`] wrote. Channels whose names are not valid any more are
/// left out; `None` when nothing usable is left.
pub(crate) fn decode(text: &[u8]) -> Option<Decoded> {
    let wire: Wire<'_> = serde_json::from_slice(text).ok()?;
    let channels = channels(&wire.c);
    let first = channels.first()?.clone();
    let data = Bytes::from(wire.d.into_owned());
    let data = if wire.j {
        Payload::Json(data)
    } else {
        Payload::Text(data)
    };
    let mut new = NewEvent::new(first, data);
    new.channels = channels;
    new.kind = wire.t.map(Cow::into_owned);
    new.id = wire.i.map(Cow::into_owned);
    new.retry = wire.r;
    new.ephemeral = wire.x;
    new.split = wire.s.map(|split| {
        Arc::new(Split {
            key: split.k,
            channels: split
                .c
                .iter()
                .filter_map(|(p, c)| Some((*p, ChannelName::from_broker(c)?)))
                .collect(),
            late: split
                .l
                .iter()
                .map(|&(partition, epoch, seq)| Position {
                    partition,
                    epoch,
                    seq,
                })
                .collect(),
        })
    });
    Some(Decoded { new })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let new = NewEvent::text(ChannelName::new("a").unwrap(), "line one\nline \"two\"")
            .also_to(ChannelName::broadcast())
            .with_type("note.added")
            .with_id("order-1");
        let mut new = new;
        new.retry = Some(1500);
        let split = Split {
            key: 42,
            channels: vec![
                (1, ChannelName::new("a").unwrap()),
                (3, ChannelName::broadcast()),
            ],
            late: vec![Position {
                partition: 1,
                epoch: 7,
                seq: 9,
            }],
        };
        new.split = Some(Arc::new(split.clone()));
        let text = encode(&new);
        assert!(!text.contains('\n'));
        let back = decode(text.as_bytes())
            .unwrap()
            .accept("e", 7, SystemTime::now(), 3);
        assert_eq!(back.id, "order-1");
        assert_eq!(back.seq, 7);
        assert_eq!(back.partition, 3);
        assert_eq!(back.split.as_deref(), Some(&split));
        assert_eq!(back.kind, "note.added");
        assert_eq!(back.data.as_str(), "line one\nline \"two\"");
        assert!(!back.data.is_json());
        assert_eq!(
            back.channels,
            vec![ChannelName::new("a").unwrap(), ChannelName::broadcast()]
        );
        assert_eq!(back.retry, Some(1500));

        let json = NewEvent::json(ChannelName::new("b").unwrap(), &serde_json::json!({"x": 1}))
            .unwrap()
            .ephemeral();
        let back = decode(encode(&json).as_bytes())
            .unwrap()
            .accept("e", 8, SystemTime::now(), 0);
        assert_eq!(back.id, "e-8");
        assert!(back.split.is_none());
        assert_eq!(back.data.as_str(), r#"{"x":1}"#);
        assert!(back.data.is_json());
        assert!(back.ephemeral);
        assert_eq!(back.kind, "message");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode(b"nope").is_none());
        assert!(decode(br#"{"c":[],"d":"x"}"#).is_none());
        assert!(decode(br#"{"c":["bad name"],"d":"x"}"#).is_none());
    }
}
