//! What the broker needs to speak to a Redis Cluster beside redis-rs's cluster
//! client (which carries the commands and follows MOVED/ASK): the hash slot of a
//! key, hash tags that spread partitions over the slots, where a slot is served,
//! and a subscriber for one sharded pub/sub channel (`SSUBSCRIBE`) on the primary
//! that serves it.
//!
//! The subscriber is a small RESP reader of its own rather than redis-rs's: the
//! follower must know when its subscription ends (the primary failed, the slot
//! moved and the server sent `sunsubscribe`, a ping went unanswered) to catch up
//! from the partition's log and subscribe again where the slot now lives, instead
//! of a library resubscribing out of sight.

use std::time::Duration;

use redis::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

/// Hash slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16_384;

/// The longest frame the subscriber reads (an event is far smaller).
const MAX_BULK: usize = 64 << 20;
/// The most elements of one array the subscriber reads (a push has three).
const MAX_ARRAY: usize = 64;

/// CRC16-CCITT (XModem), the checksum Redis Cluster takes slots from.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`: of the part between the first `{` and the next `}` when
/// that part is not empty, else of the whole key.
pub(crate) fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16(hashed) % SLOTS
}

/// The hash tag of partition `partition` of `total` in a cluster: `prefix:N`, or
/// `prefix:N.k` with the smallest `k` that puts it in the `N`th of `total` equal
/// ranges of slots. `redis-cli --cluster create` gives each primary one
/// contiguous range, so the partitions spread over the primaries about evenly,
/// rather than as a hash happens to fall. Every node computes the same tags.
pub(crate) fn spread_tag(prefix: &str, partition: u16, total: u16) -> String {
    let total = u32::from(total.max(1));
    let width = u32::from(SLOTS).div_ceil(total);
    let wanted = |tag: &str| u32::from(key_slot(&format!("{{{tag}}}"))) / width;
    let plain = format!("{prefix}:{partition}");
    if total == 1 || wanted(&plain) == u32::from(partition) {
        return plain;
    }
    // About `total` tries on average; bounded all the same.
    (0..u32::from(SLOTS) * 4)
        .map(|k| format!("{prefix}:{partition}.{k}"))
        .find(|tag| wanted(tag) == u32::from(partition))
        .unwrap_or(plain)
}

/// The primary serving `slot`, from a `CLUSTER SLOTS` reply: host and port.
pub(crate) fn owner(reply: &Value, slot: u16) -> Option<(String, u16)> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    for range in ranges {
        let Value::Array(parts) = range else {
            continue;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        if !(*start..=*end).contains(&i64::from(slot)) {
            continue;
        }
        let host = match primary.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = match primary.get(1)? {
            Value::Int(p) => u16::try_from(*p).ok()?,
            _ => return None,
        };
        return Some((host, port));
    }
    None
}

/// What arrives on a sharded subscription.
#[derive(Debug, PartialEq)]
pub(crate) enum Push {
    /// A message published to the channel.
    Message(Vec<u8>),
    /// The answer to a ping.
    Pong,
    /// The server ended the subscription (the slot moved, the node became a
    /// replica).
    Ended,
    /// A confirmation or anything else without consequence.
    Other,
}

/// One `SSUBSCRIBE`d connection to the primary of a slot. A task of its own reads
/// the connection, so [`ShardSubscriber::next`] can be raced against timers
/// without losing half a frame.
pub(crate) struct ShardSubscriber {
    writer: OwnedWriteHalf,
    pushes: tokio::sync::mpsc::Receiver<Result<Push, String>>,
    _reader: tokio_util::task::AbortOnDropHandle<()>,
}

/// Pushes read ahead of the follower at most.
const READ_AHEAD: usize = 1024;

impl ShardSubscriber {
    /// Connects to `host:port`, signs in as `username`/`password` when given, and
    /// subscribes to `channel`, all within `timeout`.
    pub(crate) async fn subscribe(
        host: &str,
        port: u16,
        username: Option<&str>,
        password: Option<&str>,
        channel: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let connect = async {
            let stream = TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (read, mut writer) = stream.into_split();
            let mut reader = BufReader::new(read);
            if let Some(password) = password {
                let mut auth = redis::cmd("AUTH");
                if let Some(username) = username {
                    auth.arg(username);
                }
                auth.arg(password);
                send(&mut writer, &auth).await?;
                if let Resp::Error(e) = read_value(&mut reader, 0).await? {
                    return Err(format!("{host}:{port} refused the credentials: {e}"));
                }
            }
            send(&mut writer, redis::cmd("SSUBSCRIBE").arg(channel)).await?;
            match read_value(&mut reader, 0).await? {
                Resp::Array(parts) if parts.first().is_some_and(|k| k.is(b"ssubscribe")) => {}
                Resp::Error(e) => return Err(format!("{host}:{port} refused SSUBSCRIBE: {e}")),
                other => return Err(format!("unexpected answer to SSUBSCRIBE: {other:?}")),
            }
            let (tx, pushes) = tokio::sync::mpsc::channel(READ_AHEAD);
            let reading = tokio::spawn(async move {
                loop {
                    let push = read_value(&mut reader, 0).await.and_then(push_of);
                    let failed = push.is_err();
                    if tx.send(push).await.is_err() || failed {
                        return;
                    }
                }
            });
            Ok(Self {
                writer,
                pushes,
                _reader: tokio_util::task::AbortOnDropHandle::new(reading),
            })
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| format!("no answer from {host}:{port} within {timeout:?}"))?
    }

    /// Asks for a [`Push::Pong`].
    pub(crate) async fn ping(&mut self) -> Result<(), String> {
        send(&mut self.writer, &redis::cmd("PING")).await
    }

    /// The next push; an error once the connection failed. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Push, String> {
        match self.pushes.recv().await {
            Some(push) => push,
            None => Err("the subscription connection closed".into()),
        }
    }
}

async fn send(writer: &mut OwnedWriteHalf, cmd: &redis::Cmd) -> Result<(), String> {
    writer
        .write_all(&cmd.get_packed_command())
        .await
        .map_err(|e| e.to_string())
}

/// What a value read on a subscribed connection means.
fn push_of(value: Resp) -> Result<Push, String> {
    let Resp::Array(mut parts) = value else {
        return match value {
            Resp::Error(e) => Err(format!("the server says {e}")),
            _ => Ok(Push::Other),
        };
    };
    let Some(kind) = parts.first() else {
        return Ok(Push::Other);
    };
    Ok(if kind.is(b"smessage") && parts.len() == 3 {
        match parts.pop() {
            Some(Resp::Bulk(Some(payload))) => Push::Message(payload),
            _ => Push::Other,
        }
    } else if kind.is(b"pong") {
        Push::Pong
    } else if kind.is(b"sunsubscribe") {
        Push::Ended
    } else {
        Push::Other
    })
}

/// A RESP2 value, as the subscriber reads them.
#[derive(Debug, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

impl Resp {
    /// Whether this is the bulk string `word`, in any case.
    fn is(&self, word: &[u8]) -> bool {
        matches!(self, Resp::Bulk(Some(b)) if b.eq_ignore_ascii_case(word))
    }
}

/// Reads one RESP2 value.
async fn read_value<R: AsyncBufReadExt + Unpin + Send>(
    reader: &mut R,
    depth: usize,
) -> Result<Resp, String> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(64 * 1024)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the subscription connection closed".into());
    }
    if !line.ends_with(b"\r\n") {
        return Err("malformed reply from redis".into());
    }
    line.truncate(line.len() - 2);
    let (&kind, rest) = line.split_first().ok_or("malformed reply from redis")?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    let number = || -> Result<i64, String> {
        std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "malformed length in a reply from redis".to_owned())
    };
    match kind {
        b'+' => Ok(Resp::Simple(text())),
        b'-' => Ok(Resp::Error(text())),
        b':' => Ok(Resp::Int(number()?)),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Resp::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|e| e.to_string())?;
            if len > MAX_BULK {
                return Err(format!(
                    "a reply from redis is longer than {MAX_BULK} bytes"
                ));
            }
            let mut data = vec![0; len + 2];
            reader
                .read_exact(&mut data)
                .await
                .map_err(|e| e.to_string())?;
            if !data.ends_with(b"\r\n") {
                return Err("malformed reply from redis".into());
            }
            data.truncate(len);
            Ok(Resp::Bulk(Some(data)))
        }
        b'*' => {
            let len = number()?;
            if len < 0 {
                return Ok(Resp::Array(Vec::new()));
            }
            let len = usize::try_from(len).map_err(|e| e.to_string())?;
            if len > MAX_ARRAY || depth > 2 {
                return Err("a reply from redis is nested or long beyond a push".into());
            }
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(Box::pin(read_value(reader, depth + 1)).await?);
            }
            Ok(Resp::Array(items))
        }
        _ => Err("malformed reply from redis".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_those_redis_computes() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("somekey"), 11058);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));
        assert_ne!(key_slot("foo{}{bar}"), key_slot("bar"));
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
    }

    #[test]
    fn spread_tags_fall_in_their_own_range_of_slots() {
        for total in [1u16, 3, 17, 65] {
            let width = u32::from(SLOTS).div_ceil(u32::from(total));
            for partition in 0..total {
                let tag = spread_tag("herald", partition, total);
                let slot = u32::from(key_slot(&format!("{{{tag}}}:seq")));
                assert_eq!(slot / width, u32::from(partition), "{tag} of {total}");
                assert_eq!(tag, spread_tag("herald", partition, total));
            }
        }
        assert_eq!(spread_tag("herald", 0, 1), "herald:0");
    }

    #[test]
    fn the_owner_of_a_slot_is_read_from_cluster_slots() {
        let node = |port: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node(7000),
                node(7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node(7001)]),
        ]);
        assert_eq!(owner(&reply, 0), Some(("127.0.0.1".into(), 7000)));
        assert_eq!(owner(&reply, 5461), Some(("127.0.0.1".into(), 7001)));
        assert_eq!(owner(&Value::Array(vec![]), 1), None);
    }

    #[tokio::test]
    async fn hostile_replies_are_errors_not_allocations() {
        for bad in [
            &b"$99999999999\r\n"[..],
            b"*100000\r\n",
            b"$3\r\nabcXY",
            b"!\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            b"+no end",
            b"",
        ] {
            let mut reader = BufReader::new(bad);
            assert!(read_value(&mut reader, 0).await.is_err(), "{bad:?}");
        }
        let mut reader = BufReader::new(&b"*3\r\n$8\r\nsmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n"[..]);
        assert_eq!(
            read_value(&mut reader, 0).await.unwrap(),
            Resp::Array(vec![
                Resp::Bulk(Some(b"smessage".to_vec())),
                Resp::Bulk(Some(b"c".to_vec())),
                Resp::Bulk(Some(b"hi".to_vec())),
            ])
        );
    }
}
