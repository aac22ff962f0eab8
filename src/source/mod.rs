//! Event sources: services the hub reads changes from and publishes itself, so an
//! application does not have to call `/publish` for them.
//!
//! - [`postgres`]: rows of PostgreSQL tables, through `LISTEN`/`NOTIFY` or an outbox
//!   table, turned into events on channels built from their columns.
//! - [`redis`]: messages applications `PUBLISH` to Redis channels, mapped to Herald
//!   channels by name patterns.
//!
//! A source runs as one background task per hub, started by [`crate::Hub::new`]
//! when it is configured. It registers a [`crate::hub::Readiness`] so `/readyz`
//! reports it, counts what it receives and skips in [`crate::stats::Stats`], and
//! ends when the hub shuts down.

pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
