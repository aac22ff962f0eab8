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
//! use herald::{Config, Node, NewEvent, ChannelName};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::new(Config::default())?;
//! let app = axum::Router::new().nest("/realtime", node.router());
//! let order = NewEvent::json(ChannelName::new("orders")?, &serde_json::json!({"id": 17}))?;
//! node.hub().publish(order).await?;
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Layout
//!
//! From the bottom up; every module imports only modules above it in this list.
//!
//! - [`core`]: channels, events, history, fan-out, policies, presence counts.
//!   Knows nothing of HTTP or of any service.
//! - [`stats`] (the counters and their one metric table), [`limits`] (connection
//!   limits and the place each connection holds), [`health`] (the readiness of a
//!   node's parts), [`protocol`] (what the hub says on its own behalf, and why a
//!   connection ended).
//! - [`auth`]: JWT and API-key credentials, turned into grants.
//! - [`broker`]: how events get their positions and reach every node;
//!   [`broker::memory`] for a single node, `redis` and `nats` for many.
//! - [`store`]: the notification inbox and tasks as stored, in SQLite or PostgreSQL.
//! - [`hub`]: the narrow [`Hub`]: publish, subscribe, admit.
//! - [`hooks`]: joins, leaves and client events, and the hooks on them;
//!   [`presence`]: who is present, shared between nodes; [`webhooks`]: the same
//!   activity as signed HTTP callbacks; [`inbox`]: inbox and task changes stored,
//!   then pushed on the user's channel; [`source`]: event sources the hub reads
//!   itself (PostgreSQL, Redis).
//! - [`session`]: one streaming connection whatever carries it: admission, the
//!   subscription and its resume, the timer, the end.
//! - [`http`]: the HTTP routes; SSE, WebSocket and long-polling are encoders over
//!   the session. [`server`]: the accept loop, with SSE served straight on the
//!   socket, and graceful shutdown.
//! - [`config`]: the configuration file, environment overrides and their checks.
//! - [`node`]: the composition root, [`Node`], which builds and wires every part.

pub mod auth;
pub mod backoff;
pub mod broker;
pub mod config;
pub mod core;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod inbox;
pub mod limits;
pub mod node;
pub mod presence;
pub mod protocol;
mod redact;
pub mod server;
pub mod session;
pub mod settings;
pub mod source;
pub mod stats;
pub mod store;
pub mod webhooks;

pub use crate::config::{Config, ConfigError};
pub use crate::core::{ChannelName, Event, NewEvent, Payload};
pub use crate::hub::{Hub, PublishError};
pub use crate::node::Node;
pub use crate::server::{serve, serve_ops};
