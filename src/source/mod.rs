//! Event sources: services the hub reads changes from and publishes itself, so an
//! application does not have to call `/publish` for them.
//!
//! - [`postgres`]: rows of PostgreSQL tables, through `LISTEN`/`NOTIFY` or an outbox
//!   table, turned into events on channels built from their columns.
//! - [`redis`]: messages applications `PUBLISH` to Redis channels, mapped to Herald
//!   channels by name patterns.
//!
//! A source runs as one background task per node, started by the node
//! when it is configured. It publishes through a [`Sink`]: the hub, the counters
//! where it counts what it receives and skips, its [`Readiness`] for `/readyz`;
//! and it ends when the hub shuts down.

use std::sync::Arc;

use crate::core::EventLimits;
use crate::health::Readiness;
use crate::hub::Hub;
use crate::stats::Stats;

pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
mod redis_settings;

pub use redis_settings::{RedisMessageFormat, RedisRoute, RedisSourceConfig};

/// Where an event source publishes, and what it needs to know of its node.
#[derive(Debug, Clone)]
pub struct Sink {
    /// The hub the source publishes on.
    pub hub: Hub,
    /// The counters of what the source receives and skips.
    pub stats: Arc<Stats>,
    /// The source's readiness, for `/readyz`.
    pub readiness: Readiness,
    /// The limits events must keep to.
    pub event_limits: EventLimits,
    /// Whether other nodes share the broker (so one node should publish what
    /// every node reads).
    pub shared_broker: bool,
}
