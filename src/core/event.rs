//! Events: what a publisher sends and what a subscriber receives.
//!
//! A [`NewEvent`] is what an app hands to the hub; once the hub accepts it, it
//! becomes an [`Event`] with an id and a position ([`Event::seq`]) in the hub's
//! sequence. Events are shared between every subscriber behind an `Arc`, and each
//! transport caches its encoding of an event in the event itself, so a frame is
//! encoded once however many connections receive it.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::channel::{ChannelError, ChannelName};
use super::partition::{Partition, Position, Split, epoch_tag};

/// The event type of an event published without one.
pub const DEFAULT_TYPE: &str = "message";

/// The longest event type accepted, in bytes.
pub const MAX_TYPE_LEN: usize = 64;

/// The longest publisher-supplied id accepted, in bytes.
pub const MAX_ID_LEN: usize = 200;

/// Words a resuming client sends in place of an id; no event may carry them as its id.
/// `earliest` asks for everything still kept.
pub const RESERVED_IDS: &[&str] = &["earliest"];

/// The deepest nesting of arrays and objects accepted in JSON data (as serde_json
/// allows when it reads a value), so that no reader of an event, the hub's own
/// WebSocket path or a browser's `JSON.parse`, runs out of stack on it.
pub const MAX_DATA_DEPTH: usize = 128;

/// The rule a publisher id follows, as error messages state it.
pub const PUBLISHER_ID_RULE: &str = "1 to 200 bytes of visible ASCII (no space or control character), \
     not of the hub's own forms {hex}-{digits} (such as 5f3a9c1e-42) and \
     {partition}.{8 hex}.{digits} joined by '_' (such as 3.5f3a9c1e.42_7.0b1c2d3e.19), \
     and not `earliest`";

/// Event types the hub itself sends; a publisher may not use them.
pub const RESERVED_TYPES: &[&str] = &["connected", "reset", "shutdown", "token_expired", "error"];

/// The prefix of the hub's presence event types (`presence.join`, `presence.leave`).
pub const PRESENCE_PREFIX: &str = "presence.";

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A target channel is not a valid name.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The event names no channel.
    #[error("the event names no channel")]
    NoChannel,
    /// The event type is not acceptable.
    #[error(
        "event type {0:?} is not valid: 1 to {MAX_TYPE_LEN} characters of letters, digits, '_', '-', '.' and ':'"
    )]
    BadType(String),
    /// The event type is one the hub sends itself.
    #[error("event type {0:?} is reserved for the hub's own events")]
    ReservedType(String),
    /// The publisher-supplied id does not follow [`validate_publisher_id`]'s grammar.
    #[error("event id {0:?} is not valid: a publisher id is {PUBLISHER_ID_RULE}")]
    BadId(String),
    /// The publisher-supplied id is already the id of another event, on other channels.
    #[error(
        "event id {0:?} is already the id of another event, on other channels: an id names one event across the hub"
    )]
    IdConflict(String),
    /// The event names more channels than the configured limit.
    #[error("the event names more than {limit} channels")]
    TooManyChannels {
        /// The configured limit.
        limit: usize,
    },
    /// The data is larger than the configured limit.
    #[error("event data is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The size of the data.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// The body of an event: JSON, or plain text.
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    /// Compact JSON text (no line breaks).
    Json(Bytes),
    /// UTF-8 text, possibly over several lines.
    Text(Bytes),
}

impl Payload {
    /// JSON from any serialisable value.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(|v| Self::Json(Bytes::from(v)))
    }

    /// JSON from text that is already valid JSON; white space outside strings is removed.
    /// Arrays and objects nested deeper than [`MAX_DATA_DEPTH`] are refused.
    pub fn json_text(raw: &str) -> Result<Self, serde_json::Error> {
        let _: &serde_json::value::RawValue = serde_json::from_str(raw)?;
        minify_json(raw)
            .map(|v| Self::Json(Bytes::from(v)))
            .ok_or_else(too_deep)
    }

    /// JSON from a value already read as JSON (so already checked): white space
    /// outside strings is removed; arrays and objects nested deeper than
    /// [`MAX_DATA_DEPTH`] are refused.
    pub fn json_raw(raw: &serde_json::value::RawValue) -> Result<Self, serde_json::Error> {
        minify_json(raw.get())
            .map(|v| Self::Json(Bytes::from(v)))
            .ok_or_else(too_deep)
    }

    /// Plain text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(Bytes::from(text.into()))
    }

    /// The bytes as they are sent.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Json(b) | Self::Text(b) => b,
        }
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the payload is JSON.
    pub fn is_json(&self) -> bool {
        matches!(self, Self::Json(_))
    }

    /// The payload as text (JSON is valid UTF-8).
    pub fn as_str(&self) -> &str {
        // Both variants are built from `str` or `String` only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(_) => write!(f, "Json({})", self.as_str()),
            Self::Text(_) => write!(f, "Text({:?})", self.as_str()),
        }
    }
}

/// Removes insignificant white space from valid JSON text, leaving strings intact;
/// `None` when arrays and objects nest deeper than [`MAX_DATA_DEPTH`].
fn too_deep() -> serde_json::Error {
    serde::de::Error::custom(format_args!(
        "the JSON nests arrays and objects deeper than {MAX_DATA_DEPTH} levels"
    ))
}

fn minify_json(raw: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut depth = 0usize;
    for &b in raw.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_DATA_DEPTH {
                        return None;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            out.push(b);
        }
    }
    Some(out)
}

/// An event an app asks the hub to publish.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Where it goes; a subscriber of several of them receives it once.
    pub channels: Vec<ChannelName>,
    /// The SSE event name; [`DEFAULT_TYPE`] when `None`.
    pub kind: Option<String>,
    /// The body.
    pub data: Payload,
    /// An id chosen by the publisher, kept as the event's id.
    pub id: Option<String>,
    /// A reconnection delay hint for clients, in milliseconds.
    pub retry: Option<u32>,
    /// Delivered live only, never kept in history (typing indicators, presence).
    pub ephemeral: bool,
    /// Set by the hub when it publishes an event to channels of several partitions
    /// as one part per partition (`None` when publishing): what the parts share.
    pub split: Option<Arc<Split>>,
}

impl NewEvent {
    /// An event with `data` for one channel.
    pub fn new(channel: ChannelName, data: Payload) -> Self {
        Self {
            channels: vec![channel],
            kind: None,
            data,
            id: None,
            retry: None,
            ephemeral: false,
            split: None,
        }
    }

    /// An event carrying `value` as JSON for one channel.
    pub fn json<T: serde::Serialize + ?Sized>(
        channel: ChannelName,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(channel, Payload::json(value)?))
    }

    /// An event carrying plain text for one channel.
    pub fn text(channel: ChannelName, text: impl Into<String>) -> Self {
        Self::new(channel, Payload::text(text))
    }

    /// Sets the event type.
    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Sets a publisher-chosen id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Marks the event as live-only: it is not kept in history.
    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }

    /// Adds another target channel.
    pub fn also_to(mut self, channel: ChannelName) -> Self {
        self.channels.push(channel);
        self
    }

    /// Checks the channels, type, id and size against the hub's rules and `limits`.
    pub fn validate(&self, limits: &EventLimits) -> Result<(), EventError> {
        if self.channels.is_empty() {
            return Err(EventError::NoChannel);
        }
        if self.channels.len() > limits.max_channels {
            return Err(EventError::TooManyChannels {
                limit: limits.max_channels,
            });
        }
        if let Some(kind) = &self.kind {
            validate_type(kind)?;
        }
        if let Some(id) = &self.id {
            validate_publisher_id(id)?;
        }
        if self.data.len() > limits.max_data_bytes {
            return Err(EventError::TooLarge {
                size: self.data.len(),
                limit: limits.max_data_bytes,
            });
        }
        Ok(())
    }
}

/// The configured bounds an event must stay within (`limits.max_event_bytes`,
/// `limits.max_channels_per_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// The largest data, in bytes.
    pub max_data_bytes: usize,
    /// The most channels one event may name.
    pub max_channels: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_data_bytes: 64 * 1024,
            max_channels: 100,
        }
    }
}

/// Checks a publisher-supplied event id.
///
/// The grammar: 1 to [`MAX_ID_LEN`] bytes of visible ASCII (`!` to `~`: no space, no
/// control character, nothing beyond ASCII), not of the hub's own form (see
/// [`is_hub_id`]) and not a word of [`RESERVED_IDS`] (in any case).
///
/// Why: the hub gives out ids of the form `{epoch}-{seq}` on every broker, and a
/// resuming client may send `earliest`. A publisher id of either form could be
/// given to another event than the one a subscriber saw (a publisher of one channel
/// claiming the next positions of another), or be read as a request for the whole
/// history, and a client resuming from it would replay or skip events of channels
/// the publisher has no grant for. Keeping the two sets disjoint makes every id name
/// one event. Visible ASCII is what travels unchanged in an SSE `id:` line, the
/// `Last-Event-ID` header and a query parameter, and still admits real-world ids:
/// UUIDs, `urn:uuid:...`, `order-17-created`, URLs such as
/// `https://example.com/books/1`.
pub fn validate_publisher_id(id: &str) -> Result<(), EventError> {
    let visible =
        !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    let reserved = RESERVED_IDS.iter().any(|w| id.eq_ignore_ascii_case(w));
    if !visible || reserved || is_hub_id(id) {
        return Err(EventError::BadId(id.to_owned()));
    }
    Ok(())
}

/// Whether `id` has the form of the ids the hub assigns itself, on every broker:
/// `^[0-9a-f]+-[0-9]+$` (a lowercase hexadecimal epoch, a dash, a decimal position),
/// or, with several partitions, a cursor (see [`Cursor::parse`]).
///
/// [`Cursor::parse`]: super::partition::Cursor::parse
pub fn is_hub_id(id: &str) -> bool {
    if super::partition::Cursor::is_cursor(id) {
        return true;
    }
    let Some((epoch, seq)) = id.split_once('-') else {
        return false;
    };
    !epoch.is_empty()
        && epoch
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && !seq.is_empty()
        && seq.bytes().all(|b| b.is_ascii_digit())
}

/// The epoch and position of a hub-assigned id; `None` for anything not exactly of
/// the hub's form (a sign, a space or a position too large for a `u64` included).
pub fn parse_hub_id(id: &str) -> Option<(&str, u64)> {
    if !is_hub_id(id) {
        return None;
    }
    let (epoch, seq) = id.split_once('-')?;
    Some((epoch, seq.parse().ok()?))
}

/// A digest of a set of channels (order and repeats do not matter): what tells a
/// publisher's retry of an event (same id, same channels) from another event that
/// claims the same id. The same on every node, so a shared store can keep it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelSet([u8; 16]);

impl ChannelSet {
    /// The digest of `channels`.
    pub fn of(channels: &[ChannelName]) -> Self {
        let mut names: Vec<&str> = channels.iter().map(ChannelName::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let mut hash = Sha256::new();
        // No channel name holds a ',', so the joined names are unambiguous.
        for name in names {
            hash.update(name.as_bytes());
            hash.update(b",");
        }
        let mut digest = [0; 16];
        digest.copy_from_slice(&hash.finalize()[..16]);
        Self(digest)
    }

    /// Lowercase hexadecimal, 32 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for ChannelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelSet({})", self.to_hex())
    }
}

/// Checks an event type: the name a browser listens to with `addEventListener`.
pub fn validate_type(kind: &str) -> Result<(), EventError> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_TYPE_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if !ok {
        return Err(EventError::BadType(kind.to_owned()));
    }
    if RESERVED_TYPES.contains(&kind) || kind.starts_with(PRESENCE_PREFIX) {
        return Err(EventError::ReservedType(kind.to_owned()));
    }
    Ok(())
}

/// An accepted event, shared by every subscriber that receives it.
#[derive(Debug)]
pub struct Event {
    /// The id clients see (and send back as `Last-Event-ID`).
    pub id: String,
    /// The position in the hub's sequence: ordered, unique, never reused within an epoch.
    pub seq: u64,
    /// The channels it was published to.
    pub channels: Vec<ChannelName>,
    /// The event type.
    pub kind: String,
    /// The body.
    pub data: Payload,
    /// A reconnection delay hint, in milliseconds.
    pub retry: Option<u32>,
    /// Live only: not kept in history.
    pub ephemeral: bool,
    /// When the hub accepted it.
    pub time: SystemTime,
    /// The partition whose sequence `seq` is a position of (0 with one partition).
    pub partition: Partition,
    /// The partition's epoch, as [`epoch_tag`] gives it (0 where the broker does not
    /// set it: with one partition, `id` tells the epoch).
    pub epoch: u32,
    /// With several partitions, when the event is one part of an event published
    /// to channels of several: what the parts share (see [`NewEvent::split`]).
    pub split: Option<Arc<Split>>,
    /// Whether `id` was chosen by the publisher (rather than assigned by the hub).
    publisher_id: bool,
    frames: FrameCache,
}

impl Event {
    /// Builds an accepted event from a publication and its assigned position.
    pub fn accept(new: NewEvent, seq: u64, id: String, time: SystemTime) -> Self {
        let slots = new.channels.len();
        Self {
            id,
            seq,
            kind: new.kind.unwrap_or_else(|| DEFAULT_TYPE.to_owned()),
            channels: new.channels,
            data: new.data,
            retry: new.retry,
            ephemeral: new.ephemeral,
            time,
            partition: 0,
            epoch: 0,
            split: new.split,
            publisher_id: new.id.is_some(),
            frames: FrameCache::new(slots),
        }
    }

    /// Places the event in `partition`, whose epoch is `epoch` (see [`epoch_tag`]).
    pub fn in_partition(mut self, partition: Partition, epoch: &str) -> Self {
        self.partition = partition;
        self.epoch = epoch_tag(epoch);
        self
    }

    /// Its position in its partition, as a connection's [`Cursor`] holds it.
    ///
    /// [`Cursor`]: super::partition::Cursor
    pub fn position(&self) -> Position {
        Position {
            partition: self.partition,
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// Whether the id was chosen by the publisher: such ids are remembered, so that
    /// a client can resume from them and a publisher's retry is a duplicate.
    pub fn has_publisher_id(&self) -> bool {
        self.publisher_id
    }

    /// The cached encoding of this event in `format` for the channel at `channel_index`
    /// (a format that does not depend on the channel uses index 0), made by `encode` on
    /// first use.
    pub fn frame(
        &self,
        format: FrameFormat,
        channel_index: usize,
        encode: impl FnOnce(&Event) -> Bytes,
    ) -> Bytes {
        self.frames.get(self, format, channel_index, encode)
    }

    /// The index in [`Event::channels`] of the first channel satisfying `wanted`.
    pub fn channel_index(&self, mut wanted: impl FnMut(&ChannelName) -> bool) -> usize {
        self.channels.iter().position(&mut wanted).unwrap_or(0)
    }
}

/// The encodings a transport may cache on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// SSE with the payload as it was published.
    SseRaw = 0,
    /// SSE with the payload inside a JSON envelope naming the channel.
    SseEnvelope = 1,
    /// A JSON message frame (WebSocket, long-poll).
    Json = 2,
}

const FORMATS: usize = 3;

/// Lazily filled encodings, one per (format, channel).
#[derive(Debug)]
struct FrameCache {
    channels: usize,
    slots: OnceLock<Box<[OnceLock<Bytes>]>>,
}

impl FrameCache {
    fn new(channels: usize) -> Self {
        Self {
            channels: channels.max(1),
            slots: OnceLock::new(),
        }
    }

    fn get(
        &self,
        event: &Event,
        format: FrameFormat,
        channel_index: usize,
        encode: impl FnOnce(&Event) -> Bytes,
    ) -> Bytes {
        let slots = self.slots.get_or_init(|| {
            (0..FORMATS * self.channels)
                .map(|_| OnceLock::new())
                .collect()
        });
        let index = format as usize * self.channels + channel_index.min(self.channels - 1);
        slots[index].get_or_init(|| encode(event)).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn json_text_is_minified_but_strings_are_kept() {
        let p = Payload::json_text("{\n  \"a\": \"x  y\\\" \\n z\",\n  \"b\": [1, 2]\n}").unwrap();
        assert_eq!(p.as_str(), r#"{"a":"x  y\" \n z","b":[1,2]}"#);
        assert!(Payload::json_text("{nope").is_err());
        let raw: Box<serde_json::value::RawValue> =
            serde_json::from_str("{ \"a\" : [ 1 , \"x y\" ] }").unwrap();
        assert_eq!(
            Payload::json_raw(&raw).unwrap().as_str(),
            r#"{"a":[1,"x y"]}"#
        );
    }

    fn limits(max_data_bytes: usize) -> EventLimits {
        EventLimits {
            max_data_bytes,
            max_channels: 3,
        }
    }

    #[test]
    fn types_ids_channels_and_sizes_are_checked() {
        let e = NewEvent::text(ch("a"), "hi");
        assert!(e.validate(&limits(10)).is_ok());
        assert!(matches!(
            e.clone().with_type("bad type").validate(&limits(10)),
            Err(EventError::BadType(_))
        ));
        assert!(matches!(
            e.clone().with_type("reset").validate(&limits(10)),
            Err(EventError::ReservedType(_))
        ));
        assert!(matches!(
            e.clone().with_type("presence.join").validate(&limits(10)),
            Err(EventError::ReservedType(_))
        ));
        assert_eq!(
            e.clone().with_id("a\nb").validate(&limits(10)),
            Err(EventError::BadId("a\nb".into()))
        );
        assert!(matches!(
            e.validate(&limits(1)),
            Err(EventError::TooLarge { .. })
        ));
        let none = NewEvent {
            channels: vec![],
            ..NewEvent::text(ch("a"), "")
        };
        assert_eq!(none.validate(&limits(10)), Err(EventError::NoChannel));
        let four = e.clone().also_to(ch("b")).also_to(ch("c")).also_to(ch("d"));
        assert_eq!(
            four.validate(&limits(10)),
            Err(EventError::TooManyChannels { limit: 3 })
        );
    }

    #[test]
    fn publisher_ids_accept_real_world_ids() {
        for id in [
            "order-17-created",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "https://example.com/books/1",
            "https://example.com/books/1?rev=2#x",
            "outbox-42",
            "outbox-42.1",
            "12",
            "import-77",
            "ABCDEF-12",
            "abc-12x",
            "abc-",
            "-12",
            "g1-2",
            "earliest-1",
            "latest",
            &"x".repeat(MAX_ID_LEN),
        ] {
            assert_eq!(validate_publisher_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn publisher_ids_refuse_hub_ids_reserved_words_and_invisible_bytes() {
        for id in [
            // Every form the brokers assign: memory (u32 epoch), Redis (16 hex digits),
            // NATS (microseconds in hex), and the head position 0.
            "5f3a9c1e-42",
            "0-0",
            "00000000deadbeef-1",
            "6150e5a1b2c3d-18446744073709551615",
            "1-99999999999999999999999",
            "abcdef-007",
            "earliest",
            "Earliest",
            "EARLIEST",
            "",
            "a b",
            " x",
            "tab\there",
            "line\nbreak",
            "nul\0",
            "caf\u{e9}",
            "\u{1}",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            let refused = validate_publisher_id(id);
            assert_eq!(refused, Err(EventError::BadId(id.to_owned())), "{id:?}");
        }
        let message = validate_publisher_id("earliest").unwrap_err().to_string();
        assert!(message.contains("visible ASCII") && message.contains("earliest"));
    }

    #[test]
    fn hub_ids_parse_only_in_their_exact_form() {
        assert_eq!(parse_hub_id("5f3a-42"), Some(("5f3a", 42)));
        assert_eq!(parse_hub_id("5f3a-+42"), None);
        assert_eq!(parse_hub_id("5F3A-42"), None);
        assert_eq!(parse_hub_id("5f3a-42 "), None);
        assert_eq!(parse_hub_id("5f3a-99999999999999999999999"), None);
        assert!(is_hub_id("5f3a-99999999999999999999999"));
    }

    #[test]
    fn channel_sets_ignore_order_and_repeats() {
        let ab = ChannelSet::of(&[ch("a"), ch("b")]);
        assert_eq!(ab, ChannelSet::of(&[ch("b"), ch("a"), ch("a")]));
        assert_ne!(ab, ChannelSet::of(&[ch("a")]));
        assert_ne!(ab, ChannelSet::of(&[ch("ab")]));
        assert_eq!(ab.to_hex().len(), 32);
    }

    #[test]
    fn data_nested_too_deep_is_refused() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(Payload::json_text(&deep(MAX_DATA_DEPTH)).is_ok());
        let e = Payload::json_text(&deep(MAX_DATA_DEPTH + 1)).unwrap_err();
        assert!(e.to_string().contains("deeper than 128"), "{e}");
        assert!(Payload::json_text(&deep(100_000)).is_err());
        let strings = format!("[\"{}\"]", "[".repeat(1000));
        assert!(
            Payload::json_text(&strings).is_ok(),
            "brackets in strings do not count"
        );
    }

    #[test]
    fn frames_are_encoded_once_per_format_and_channel() {
        let e = Event::accept(
            NewEvent::text(ch("a"), "x").also_to(ch("b")),
            1,
            "1".into(),
            SystemTime::now(),
        );
        let mut calls = 0;
        for _ in 0..3 {
            e.frame(FrameFormat::SseRaw, 0, |_| {
                calls += 1;
                Bytes::from_static(b"raw")
            });
        }
        assert_eq!(calls, 1);
        let b = e.frame(FrameFormat::SseEnvelope, 1, |_| Bytes::from_static(b"b"));
        let a = e.frame(FrameFormat::SseEnvelope, 0, |_| Bytes::from_static(b"a"));
        assert_eq!((&a[..], &b[..]), (&b"a"[..], &b"b"[..]));
        assert_eq!(e.channel_index(|c| c.as_str() == "b"), 1);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(crate::fuzzing::cases(256))]

            /// An id is a publisher's exactly when it follows the stated grammar;
            /// publisher ids and the hub's own never overlap.
            #[test]
            fn publisher_ids_follow_the_grammar_and_never_look_like_the_hubs(
                id in prop_oneof![
                    "[!-~]{1,8}",
                    "[0-9a-f]{1,4}-[0-9]{1,4}",
                    "(?i:earliest)",
                    ".{0,8}",
                    "[!-~]{195,205}",
                ],
            ) {
                let grammar = !id.is_empty()
                    && id.len() <= MAX_ID_LEN
                    && id.bytes().all(|b| b.is_ascii_graphic())
                    && !id.eq_ignore_ascii_case("earliest")
                    && !is_hub_id(&id);
                prop_assert_eq!(validate_publisher_id(&id).is_ok(), grammar);
                if parse_hub_id(&id).is_some() {
                    prop_assert!(validate_publisher_id(&id).is_err());
                }
            }

            /// Every id of the hub's form parses back to its epoch and position.
            #[test]
            fn hub_ids_parse_back(epoch in "[0-9a-f]{1,8}", seq in any::<u64>()) {
                let id = format!("{epoch}-{seq}");
                prop_assert!(is_hub_id(&id));
                prop_assert_eq!(parse_hub_id(&id), Some((epoch.as_str(), seq)));
            }

            /// A number, however large or small, is data passed on as written.
            #[test]
            fn numbers_are_passed_on_as_written(
                mantissa in "-?[1-9][0-9]{0,30}(\\.[0-9]{1,10})?",
                exponent in proptest::option::of(-99999i32..99999),
            ) {
                let number = match exponent {
                    Some(e) => format!("{mantissa}e{e}"),
                    None => mantissa,
                };
                let payload = Payload::json_text(&format!("[ {number} ]")).expect("valid JSON");
                prop_assert_eq!(payload.as_str(), format!("[{number}]"));
            }

            /// JSON data, however it is laid out, is kept as the same value on one
            /// line (an SSE `data:` line cannot hold a line break).
            #[test]
            fn json_data_keeps_its_value_on_one_line(value in crate::fuzzing::json_value()) {
                let pretty = serde_json::to_string_pretty(&value).expect("serialisable");
                let payload = Payload::json_text(&pretty).expect("valid and shallow JSON");
                prop_assert!(!payload.as_bytes().contains(&b'\n'));
                prop_assert!(!payload.as_bytes().contains(&b'\r'));
                let kept: serde_json::Value = serde_json::from_slice(payload.as_bytes()).expect("JSON");
                let sent: serde_json::Value = serde_json::from_str(&pretty).expect("JSON");
                prop_assert_eq!(kept, sent);
            }
        }
    }
}
