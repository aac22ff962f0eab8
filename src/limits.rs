//! Connection limits: how many streaming connections the hub holds at once, in
//! all and per client address, and the place each admitted connection holds
//! until it closes ([`Slot`]).
//!
//! The counts here are the limits' own; the metrics only read them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
        Ok(())
    }
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
    fn without_a_per_address_limit_addresses_are_not_kept() {
        let limits = ConnectionLimits::new(10, 0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..5).map(|_| limits.admit(Some(ip)).unwrap()).collect();
        assert!(limits.per_ip.lock().is_empty());
        drop(slots);
        assert_eq!(limits.counts().open, 0);
    }
}
