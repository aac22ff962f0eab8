//! Herald: a realtime push hub.
//!
//! Browsers subscribe to channels over Server-Sent Events; servers publish over
//! HTTP (or, embedding this crate, by calling [`Hub::publish`]). Herald checks
//! credentials, authorises every channel, keeps a bounded history per channel so
//! a client that reconnects with `Last-Event-ID` misses nothing, and tells a
//! client explicitly (a `reset` event) when history cannot cover its gap.
//!
//! # Embedding
//!
//! ```no_run
//! use herald::{Config, Hub, NewEvent, ChannelName};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new(Config::default())?;
//! let app = axum::Router::new().nest("/realtime", hub.router());
//! let order = NewEvent::json(ChannelName::new("orders")?, &serde_json::json!({"id": 17}))?;
//! hub.publish(order).await?;
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`core`]: channels, events, history and fan-out. Knows nothing of HTTP or
//!   of any service.
//! - [`broker`]: how events get their positions and reach every node; [`broker::memory`]
//!   for a single node.
//! - [`auth`]: JWT and API-key credentials, turned into grants.
//! - [`hub`]: the [`Hub`] handle tying them together, with limits and shutdown.
//! - [`hooks`]: channel joins and leaves, presence, the application's hooks (and,
//!   in `webhooks`, the same as signed HTTP callbacks).
//! - `presence`: presence shared between nodes through the broker.
//! - [`store`]: the notification inbox and tasks as stored, in SQLite
//!   ([`store::sqlite`], the default) or PostgreSQL ([`store::postgres`]). Knows
//!   nothing of HTTP or channels.
//! - [`inbox`]: inbox and task changes stored, then pushed on the user's channel
//!   (`Hub::notify`, `Hub::put_task`, ...), and the retention cleanup.
//! - [`http`]: the HTTP routes (SSE, publish, history, ops, demo app, and the
//!   `/api` inbox and tasks described by `docs/openapi.json`).
//! - [`server`]: the accept loop with per-connection control and graceful shutdown.
//! - [`source`]: event sources the hub reads itself; [`source::postgres`] turns table
//!   changes (LISTEN/NOTIFY or an outbox table) into events.
//! - [`config`]: the configuration file, environment overrides and their checks.
//! - [`stats`]: counters, `/stats` and Prometheus metrics.

pub mod auth;
pub mod broker;
pub mod config;
pub mod core;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod inbox;
pub mod limits;
mod presence;
pub mod protocol;
pub mod server;
pub mod session;
pub mod source;
pub mod stats;
pub mod store;
pub mod webhooks;

pub use crate::config::{Config, ConfigError};
pub use crate::core::{ChannelName, Event, NewEvent, Payload};
pub use crate::hub::{Hub, PublishError};
pub use crate::server::serve;
