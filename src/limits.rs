//! Limits that protect the hub: how many streaming connections it holds at once, in
//! all and per client address, and the place each admitted connection holds
//! until it closes ([`Slot`]); how fast a WebSocket client or an HTTP publisher may
//! publish ([`RateLimit`], [`PublishLimiter`]).
//!
//! The counts here are the limits' own; the metrics only read them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::core::{ChannelName, NewEvent};
use crate::settings::ConfigError;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Why a connection was refused before it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The hub was at `max_connections`.
    MaxConnections,
    /// The client address was at `max_connections_per_ip`.
    PerIp,
}

/// The limits on streaming connections and their counts.
#[derive(Debug)]
pub struct ConnectionLimits {
    max: u64,
    max_per_ip: usize,
    open: AtomicU64,
    total: AtomicU64,
    rejected_max: AtomicU64,
    rejected_per_ip: AtomicU64,
    /// Open connections per address; only kept when there is a per-address limit.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// The counts of [`ConnectionLimits`], for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Open streaming connections.
    pub open: u64,
    /// Streaming connections admitted since start.
    pub total: u64,
    /// Refused at `max_connections`.
    pub rejected_max: u64,
    /// Refused at `max_connections_per_ip`.
    pub rejected_per_ip: u64,
}

impl ConnectionLimits {
    /// At most `max` connections, and `max_per_ip` per address (0: no such limit).
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max as u64,
            max_per_ip,
            open: AtomicU64::new(0),
            total: AtomicU64::new(0),
            rejected_max: AtomicU64::new(0),
            rejected_per_ip: AtomicU64::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for a connection from `ip` (unknown: only the overall limit
    /// applies), or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Rejection> {
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok();
        if !taken {
            self.rejected_max.fetch_add(1, Ordering::Relaxed);
            return Err(Rejection::MaxConnections);
        }
        let ip = ip.filter(|_| self.max_per_ip > 0);
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.lock();
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                drop(per_ip);
                self.open.fetch_sub(1, Ordering::Relaxed);
                self.rejected_per_ip.fetch_add(1, Ordering::Relaxed);
                return Err(Rejection::PerIp);
            }
            *count += 1;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }

    /// The counts so far.
    pub fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            open: self.open.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            rejected_max: self.rejected_max.load(Ordering::Relaxed),
            rejected_per_ip: self.rejected_per_ip.load(Ordering::Relaxed),
        }
    }
}

/// A connection's place within the limits; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut per_ip = self.limits.per_ip.lock();
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` kept, full at first.
/// Each WebSocket connection has one for its client events, and each HTTP
/// publisher one per [`PublishLimiter`] scope.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A full bucket of `burst` tokens (at least 1), refilled at `rate` a second.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Tokens added a second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes one token now, if there is one.
    pub fn allow(&mut self) -> bool {
        self.take(1.0, Instant::now()).is_ok()
    }

    /// Takes `n` tokens at `now`, or, taking none, says how long until there are
    /// `n` ([`Duration::MAX`] when there never will be: more than the burst, or no
    /// refill).
    pub fn take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        match self.wait(n, now) {
            Some(wait) => Err(wait),
            None => {
                self.tokens -= n;
                Ok(())
            }
        }
    }

    /// How long from `now` until `n` tokens are there; `None` when they are now.
    pub fn wait(&mut self, n: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        if self.tokens >= n {
            return None;
        }
        if n > self.burst || self.rate <= 0.0 {
            return Some(Duration::MAX);
        }
        Some(Duration::try_from_secs_f64((n - self.tokens) / self.rate).unwrap_or(Duration::MAX))
    }

    /// Whether the bucket is full at `now`, and so no different from a new one.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        // Callers may pass an instant taken a little before another's.
        if now > self.at {
            let added = now.duration_since(self.at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + added).min(self.burst);
            self.at = now;
        }
    }
}

/// A rate: `per_second` events on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events a second.
    pub per_second: f64,
    /// Events at once, above the average.
    pub burst: u32,
}

/// The rate limits of `POST /publish`: one for the channels of every namespace
/// without its own (`limits.publish_rate`, `limits.publish_burst`), and one for
/// each namespace with its own (`namespaces.NAME.publish_rate`, `..._burst`).
/// `None`: no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishRates {
    /// For channels of namespaces without their own rate.
    pub default: Option<Rate>,
    /// Namespaces with their own rate (`None` there: none at all).
    pub namespaces: HashMap<String, Option<Rate>>,
}

/// How many publishers' buckets a [`PublishLimiter`] keeps at most.
const PUBLISHERS_KEPT: usize = 10_000;

/// Rate limits on publishing over HTTP, per publisher and per scope (the
/// namespaces of [`PublishRates`] with their own rate, and one for all others).
/// Each event takes one token from the bucket of each scope its channels are in;
/// a request is let through whole or not at all.
///
/// Memory is bounded: a bucket that has filled up again is no different from a new
/// one and is forgotten whenever the table reaches [`PUBLISHERS_KEPT`] publishers;
/// if all are still in use, the least recently seen quarter is forgotten (they
/// start again with a full burst).
pub struct PublishLimiter {
    /// Scope 0: namespaces without their own rate; then one per namespace with one.
    scopes: Vec<Scope>,
    by_namespace: HashMap<String, usize>,
    publishers: Mutex<HashMap<String, Publisher>>,
    capacity: usize,
}

/// Its scopes and how many publishers it keeps, not who they are.
impl std::fmt::Debug for PublishLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishLimiter")
            .field("scopes", &self.scopes)
            .field("publishers", &self.publishers())
            .finish()
    }
}

/// One scope of a [`PublishLimiter`].
#[derive(Debug)]
struct Scope {
    /// The namespace, for scopes other than the default.
    namespace: Option<String>,
    rate: Option<Rate>,
}

/// A publisher's buckets, one per scope that has a rate and that it published in.
#[derive(Debug)]
struct Publisher {
    seen: Instant,
    buckets: Vec<Option<RateLimit>>,
}

/// A publish request refused by a [`PublishLimiter`].
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimited {
    /// The namespace whose rate refused it; `None`: the default rate.
    pub namespace: Option<String>,
    /// That rate.
    pub rate: Rate,
    /// The tokens the request needed from it.
    pub needed: u32,
    /// How long until the request would be let through; `None` when it never will
    /// (it needs more than the burst).
    pub retry_after: Option<Duration>,
}

impl RateLimited {
    /// The configuration key of the rate that refused the request.
    pub fn rate_key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("namespaces.{ns}.publish_rate"),
            None => "limits.publish_rate".to_owned(),
        }
    }

    /// The configuration key of the burst that refused the request.
    pub fn burst_key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("namespaces.{ns}.publish_burst"),
            None => "limits.publish_burst".to_owned(),
        }
    }
}

impl PublishLimiter {
    /// A limiter applying `rates`.
    pub fn new(rates: &PublishRates) -> Self {
        Self::with_capacity(rates, PUBLISHERS_KEPT)
    }

    fn with_capacity(rates: &PublishRates, capacity: usize) -> Self {
        let mut scopes = vec![Scope {
            namespace: None,
            rate: rates.default,
        }];
        let mut by_namespace = HashMap::new();
        let mut namespaces: Vec<_> = rates.namespaces.iter().collect();
        namespaces.sort_by(|a, b| a.0.cmp(b.0));
        for (name, rate) in namespaces {
            by_namespace.insert(name.clone(), scopes.len());
            scopes.push(Scope {
                namespace: Some(name.clone()),
                rate: *rate,
            });
        }
        Self {
            scopes,
            by_namespace,
            publishers: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Whether no rate applies anywhere.
    pub fn is_off(&self) -> bool {
        self.scopes.iter().all(|s| s.rate.is_none())
    }

    /// The scope of `channel`.
    fn scope_of(&self, channel: &ChannelName) -> usize {
        channel
            .namespace()
            .and_then(|ns| self.by_namespace.get(ns))
            .copied()
            .unwrap_or(0)
    }

    /// Takes the tokens `events` cost from `publisher`'s buckets, or none of them
    /// and says which rate refuses the request (the one that would make it wait
    /// longest).
    pub fn charge(&self, publisher: &str, events: &[NewEvent]) -> Result<(), RateLimited> {
        if self.is_off() {
            return Ok(());
        }
        let mut cost = vec![0u32; self.scopes.len()];
        let mut touched = Vec::new();
        for event in events {
            touched.clear();
            touched.extend(event.channels.iter().map(|c| self.scope_of(c)));
            touched.sort_unstable();
            touched.dedup();
            for &scope in &touched {
                cost[scope] = cost[scope].saturating_add(1);
            }
        }
        let mut publishers = self.publishers.lock();
        let now = Instant::now();
        if !publishers.contains_key(publisher) {
            if publishers.len() >= self.capacity {
                forget(&mut publishers, now, self.capacity);
            }
            publishers.insert(
                publisher.to_owned(),
                Publisher {
                    seen: now,
                    buckets: vec![None; self.scopes.len()],
                },
            );
        }
        let Some(entry) = publishers.get_mut(publisher) else {
            return Ok(());
        };
        entry.seen = now;
        let mut refusal: Option<RateLimited> = None;
        for (scope, (&needed, bucket)) in cost.iter().zip(entry.buckets.iter_mut()).enumerate() {
            let Some(rate) = self.scopes[scope].rate else {
                continue;
            };
            if needed == 0 {
                continue;
            }
            let bucket = bucket.get_or_insert_with(|| RateLimit::new(rate.per_second, rate.burst));
            let Some(wait) = bucket.wait(f64::from(needed), now) else {
                continue;
            };
            let retry_after = (wait != Duration::MAX).then_some(wait);
            let longer = refusal
                .as_ref()
                .is_none_or(|r| match (r.retry_after, retry_after) {
                    (_, None) => r.retry_after.is_some(),
                    (None, Some(_)) => false,
                    (Some(before), Some(now)) => now > before,
                });
            if longer {
                refusal = Some(RateLimited {
                    namespace: self.scopes[scope].namespace.clone(),
                    rate,
                    needed,
                    retry_after,
                });
            }
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        for (&needed, bucket) in cost.iter().zip(entry.buckets.iter_mut()) {
            if let Some(bucket) = bucket.as_mut().filter(|_| needed > 0) {
                // Checked just above, under the same lock.
                let _ = bucket.take(f64::from(needed), now);
            }
        }
        Ok(())
    }

    /// How many publishers have buckets kept.
    pub fn publishers(&self) -> usize {
        self.publishers.lock().len()
    }
}

/// Makes room in a full table: forgets the publishers whose buckets are all full
/// again, then, if that is not enough, the least recently seen quarter.
fn forget(publishers: &mut HashMap<String, Publisher>, now: Instant, capacity: usize) {
    publishers.retain(|_, p| !p.buckets.iter_mut().flatten().all(|b| b.is_full(now)));
    if publishers.len() < capacity {
        return;
    }
    let mut seen: Vec<Instant> = publishers.values().map(|p| p.seen).collect();
    let cut = (capacity / 4).min(seen.len().saturating_sub(1));
    let (_, &mut newest_forgotten, _) = seen.select_nth_unstable(cut);
    publishers.retain(|_, p| p.seen > newest_forgotten);
}

/// Limits that protect the hub.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open streaming connections at most; past it, 503 with `Retry-After`.
    pub max_connections: usize,
    /// Open streaming connections per client address at most (0: no limit); past it, 429.
    pub max_connections_per_ip: usize,
    /// Channels one connection may subscribe to.
    pub max_channels_per_connection: usize,
    /// The largest event data, in bytes; larger is answered 413.
    pub max_event_bytes: usize,
    /// The largest publish request body, in bytes; larger is answered 413.
    pub max_body_bytes: usize,
    /// Events in one publish batch at most; more is answered 413.
    pub max_batch: usize,
    /// Channels one event may name at most; more is answered 400 before any of
    /// them is looked at.
    pub max_channels_per_event: usize,
    /// The memory all channel histories of a node hold together (memory and NATS
    /// brokers), in bytes; past it the oldest events are evicted, whatever their
    /// channel.
    pub history_memory: usize,
    /// Events queued per connection before it counts as a slow consumer and is closed.
    pub queue_size: usize,
    /// Events each publisher may publish over HTTP per second, on average, to the
    /// channels of namespaces without a `publish_rate` of their own (0: no limit).
    pub publish_rate: f64,
    /// Events each publisher may publish at once above that rate.
    pub publish_burst: u32,
}

impl Limits {
    /// The bounds an event must stay within.
    pub fn events(&self) -> crate::core::EventLimits {
        crate::core::EventLimits {
            max_data_bytes: self.max_event_bytes,
            max_channels: self.max_channels_per_event,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 0,
            max_channels_per_connection: 64,
            max_event_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            max_channels_per_event: 100,
            history_memory: crate::core::history::DEFAULT_HISTORY_MEMORY,
            queue_size: 1024,
            publish_rate: 0.0,
            publish_burst: 100,
        }
    }
}

impl Limits {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("limits.max_connections", self.max_connections),
            (
                "limits.max_channels_per_connection",
                self.max_channels_per_connection,
            ),
            ("limits.max_event_bytes", self.max_event_bytes),
            ("limits.max_body_bytes", self.max_body_bytes),
            ("limits.max_batch", self.max_batch),
            ("limits.max_channels_per_event", self.max_channels_per_event),
            ("limits.history_memory", self.history_memory),
            ("limits.queue_size", self.queue_size),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        check_publish_rate("limits", Some(self.publish_rate), Some(self.publish_burst))
    }
}

/// Checks a `publish_rate` and `publish_burst` given in `section`.
pub fn check_publish_rate(
    section: &str,
    rate: Option<f64>,
    burst: Option<u32>,
) -> Result<(), ConfigError> {
    if let Some(rate) = rate
        && !(rate.is_finite() && rate >= 0.0)
    {
        return Err(ConfigError::new(
            format!("{section}.publish_rate"),
            "must be a number of events per second, 0 or more (0: no limit)",
        ));
    }
    if burst == Some(0) {
        return Err(ConfigError::new(
            format!("{section}.publish_burst"),
            "must be at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_in_all_and_per_address_and_given_back() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.admit(Some(a)).unwrap();
        let _second = limits.admit(Some(a)).unwrap();
        assert_eq!(limits.admit(Some(a)).unwrap_err(), Rejection::PerIp);
        let _third = limits.admit(Some(b)).unwrap();
        assert_eq!(limits.admit(None).unwrap_err(), Rejection::MaxConnections);
        drop(first);
        let _again = limits.admit(Some(a)).unwrap();
        assert_eq!(
            limits.counts(),
            ConnectionCounts {
                open: 3,
                total: 4,
                rejected_max: 1,
                rejected_per_ip: 1,
            }
        );
        assert!(limits.per_ip.lock().len() <= 2);
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let mut bucket = RateLimit::new(2.0, 3);
        let start = Instant::now();
        assert!(bucket.is_full(start));
        assert_eq!(bucket.take(3.0, start), Ok(()));
        assert_eq!(bucket.take(1.0, start), Err(Duration::from_millis(500)));
        assert_eq!(bucket.wait(2.0, start), Some(Duration::from_secs(1)));
        assert_eq!(
            bucket.wait(4.0, start),
            Some(Duration::MAX),
            "past the burst"
        );
        let later = start + Duration::from_millis(500);
        assert_eq!(bucket.take(1.0, later), Ok(()));
        assert!(!bucket.is_full(later));
        // An instant before the last one adds nothing and takes nothing back.
        assert_eq!(bucket.wait(1.0, start), Some(Duration::from_millis(500)));
        assert!(bucket.is_full(later + Duration::from_secs(60)));
        assert_eq!(bucket.take(3.0, later + Duration::from_secs(60)), Ok(()));
        let mut never = RateLimit::new(0.0, 1);
        assert!(never.allow());
        assert!(!never.allow());
        assert_eq!(never.wait(1.0, Instant::now()), Some(Duration::MAX));
    }

    fn event(channels: &[&str]) -> NewEvent {
        let mut event = NewEvent::text(ChannelName::new(channels[0]).unwrap(), "x");
        event.channels = channels
            .iter()
            .map(|c| ChannelName::new(c).unwrap())
            .collect();
        event
    }

    fn rates() -> PublishRates {
        PublishRates {
            default: Some(Rate {
                per_second: 1.0,
                burst: 3,
            }),
            namespaces: HashMap::from([
                (
                    "chat".to_owned(),
                    Some(Rate {
                        per_second: 0.5,
                        burst: 2,
                    }),
                ),
                ("firehose".to_owned(), None),
            ]),
        }
    }

    #[test]
    fn each_event_costs_a_token_in_each_namespace_it_reaches() {
        let limiter = PublishLimiter::new(&rates());
        // Two namespaces without their own rate: one token of the default.
        let both = [event(&["orders", "team:1"]), event(&["orders"])];
        assert_eq!(limiter.charge("a", &both), Ok(()));
        // Default and chat: one token of each.
        assert_eq!(
            limiter.charge("a", &[event(&["orders", "chat:1", "chat:2"])]),
            Ok(())
        );
        let refused = limiter.charge("a", &[event(&["orders"])]).unwrap_err();
        assert_eq!(refused.namespace, None);
        assert_eq!(refused.rate_key(), "limits.publish_rate");
        assert_eq!(refused.needed, 1);
        assert!(
            refused
                .retry_after
                .is_some_and(|w| w <= Duration::from_secs(1))
        );
        // The refused request took nothing: chat still has its second token.
        assert_eq!(limiter.charge("a", &[event(&["chat:3"])]), Ok(()));
        let refused = limiter.charge("a", &[event(&["chat:3"])]).unwrap_err();
        assert_eq!(refused.rate_key(), "namespaces.chat.publish_rate");
        // A namespace whose own rate is none is not limited at all.
        let many: Vec<NewEvent> = (0..50).map(|_| event(&["firehose:x"])).collect();
        assert_eq!(limiter.charge("a", &many), Ok(()));
        // Another publisher has buckets of its own.
        assert_eq!(limiter.charge("b", &both), Ok(()));
        // More than the burst at once never passes.
        let batch: Vec<NewEvent> = (0..3).map(|_| event(&["chat:1"])).collect();
        let refused = limiter.charge("c", &batch).unwrap_err();
        assert_eq!((refused.needed, refused.retry_after), (3, None));
        assert_eq!(refused.burst_key(), "namespaces.chat.publish_burst");
        assert!(PublishLimiter::new(&PublishRates::default()).is_off());
    }

    #[test]
    fn the_buckets_kept_are_bounded_and_full_ones_forgotten_first() {
        let limiter = PublishLimiter::with_capacity(&rates(), 8);
        // Firehose costs nothing: these publishers' buckets stay full.
        for i in 0..7 {
            limiter
                .charge(&format!("idle-{i}"), &[event(&["firehose:x"])])
                .unwrap();
        }
        limiter.charge("busy", &[event(&["orders"])]).unwrap();
        assert_eq!(limiter.publishers(), 8);
        limiter.charge("new", &[event(&["orders"])]).unwrap();
        assert_eq!(
            limiter.publishers(),
            2,
            "only the full buckets were forgotten"
        );
        // The busy publisher's spent token was kept.
        limiter
            .charge("busy", &[event(&["orders"]), event(&["orders"])])
            .unwrap();
        assert!(limiter.charge("busy", &[event(&["orders"])]).is_err());
        // With every bucket in use, the least recently seen go.
        for i in 0..100 {
            let _ = limiter.charge(&format!("flood-{i}"), &[event(&["orders"])]);
            assert!(limiter.publishers() <= 8);
        }
    }

    #[test]
    fn without_a_per_address_limit_addresses_are_not_kept() {
        let limits = ConnectionLimits::new(10, 0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..5).map(|_| limits.admit(Some(ip)).unwrap()).collect();
        assert!(limits.per_ip.lock().is_empty());
        drop(slots);
        assert_eq!(limits.counts().open, 0);
    }
}
