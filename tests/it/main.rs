//! Integration tests: a real hub on port 0, real HTTP clients.

#![allow(clippy::unwrap_used)]

mod auth;
#[cfg(all(feature = "redis", feature = "nats"))]
mod brokers;
mod cli;
#[cfg(feature = "redis")]
mod cluster;
mod delivery;
mod errors;
mod fixture;
mod hostile;
mod inbox;
mod limits;
#[cfg(all(feature = "redis", feature = "nats"))]
mod nodes;
mod ops;
mod ops_access;
mod origin;
mod partitions;
mod poll;
mod postgres;
#[cfg(all(feature = "redis", feature = "nats"))]
mod presence;
mod proxies;
mod publish;
mod publish_limits;
mod resume;
mod shutdown;
mod tasks;
mod websocket;
mod wire;
mod ws_protocol;
