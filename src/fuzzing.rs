//! Entry points for fuzzing: the parsers that take a client's bytes, reached
//! without a network. Each function forwards to the parser the hub uses, and holds
//! no logic of its own; the targets under `fuzz/` and the property tests call them.
//! Not part of the API an application embeds: names and signatures may change.
//!
//! Parsers that are public already are fuzzed where they are:
//! [`crate::core::ChannelName::new`], [`crate::core::ChannelPattern::parse`],
//! [`crate::broker::ResumeFrom::parse`], [`crate::core::event::validate_publisher_id`],
//! [`crate::core::event::parse_hub_id`], the brokers' `replay` and
//! [`crate::auth::Authenticator::authenticate`].

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use serde_json::Value;
use tokio::io::AsyncRead;

use crate::auth::Identity;
use crate::config::Limits;
use crate::core::NewEvent;
use crate::http::ApiError;
use crate::node::Node;
use crate::session::{OpenRequest, Session};

/// Reads a request head from `stream` as the server does before anything else:
/// up to the blank line, within [`HEAD_BOUNDS`]. `None` when the client sent
/// nothing.
pub async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Vec<u8>>> {
    crate::server::fuzzing::read_head(stream).await
}

/// The longest head [`read_head`] takes, and the longest request line (a head can
/// be longer by what one read brings).
pub const HEAD_BOUNDS: (usize, usize) = crate::server::fuzzing::HEAD_BOUNDS;

pub use crate::server::fuzzing::HeadVerdict;

/// Checks a connection's first request head as the server does before anything
/// serves it.
pub fn check_head(bytes: &[u8]) -> HeadVerdict {
    crate::server::fuzzing::check_head(bytes)
}

/// The target and headers of a head the server serves as an SSE stream directly on
/// the socket; `None` for a request that goes to the router.
pub fn direct_stream(head: &[u8], cors: bool) -> Option<(Uri, HeaderMap)> {
    crate::server::fuzzing::direct_stream(head, cors)
}

/// A stream request's query as read: channel names, last event id, token and
/// whether events come in envelopes.
pub type StreamQuery = (Vec<String>, Option<String>, Option<String>, bool);

/// Reads the query of `/events`, `/ws` or `/poll`, bounded by `max_channels`
/// (`limits.max_channels_per_connection`).
pub fn stream_query(query: Option<&str>, max_channels: usize) -> Result<StreamQuery, ApiError> {
    crate::http::fuzzing::stream_query(query, max_channels)
}

/// Reads a stream request's target and headers into what a session is opened
/// with, and whether events come in envelopes. `cookie` is the auth cookie's name.
pub fn stream_request(
    uri: &Uri,
    headers: &HeaderMap,
    cookie: &str,
    require_channel: bool,
    max_channels: usize,
) -> Result<(OpenRequest, bool), ApiError> {
    crate::http::fuzzing::stream_request(uri, headers, cookie, require_channel, max_channels)
}

/// The decoded `name=value` pairs of a query, each an error when it is not UTF-8.
pub fn query_pairs(
    query: Option<&str>,
) -> impl Iterator<Item = Result<(Cow<'_, str>, Cow<'_, str>), ApiError>> {
    crate::http::fuzzing::query_pairs(query)
}

/// The value of `name` in the query of a request other than a stream (at most 64
/// parameters; `name` at most once).
pub fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    crate::http::fuzzing::query_param(query, name)
}

/// The `timeout` of a `/poll` request.
pub fn poll_timeout(query: Option<&str>, max_channels: usize) -> Result<Duration, ApiError> {
    crate::http::fuzzing::poll_timeout(query, max_channels)
}

/// The events of a `POST /publish` body that `identity` may publish within
/// `limits`, and whether the body was a batch.
pub fn publish_body(
    body: &[u8],
    identity: &Identity,
    limits: &Limits,
) -> Result<(Vec<NewEvent>, bool), ApiError> {
    crate::http::fuzzing::publish_body(body, identity, limits)
}

/// Opens the session a `GET /ws` request with `uri` and `headers` would get on
/// `node`, without the upgrade.
pub async fn ws_session(node: &Node, uri: &Uri, headers: &HeaderMap) -> Result<Session, ApiError> {
    crate::http::fuzzing::ws_session(node.services(), uri, headers).await
}

/// The hub's answer to a WebSocket text frame from the client of `session`.
pub async fn ws_frame(session: &mut Session, text: &str) -> Value {
    crate::http::fuzzing::ws_frame(session, text).await
}

/// The close code and reason owed to a client whose frame the WebSocket library
/// refused with `error`; `None` when the client is gone.
pub fn ws_close_code(error: &axum::Error) -> Option<(u16, &'static str)> {
    crate::http::fuzzing::ws_close_code(error)
}

/// The settings of the property tests beside each parser: a fixed number of cases
/// from a fixed seed, so that every run of the suite checks the same inputs in
/// about the same time (the fuzz targets are where new inputs are sought).
#[cfg(test)]
pub(crate) fn cases(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x4865_7261_6c64),
        ..proptest::test_runner::Config::default()
    }
}

/// Any JSON value: nested arrays and objects of strings (any characters), numbers
/// (whole, negative, huge, fractional), booleans and nulls.
#[cfg(test)]
pub(crate) fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
