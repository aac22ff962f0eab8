//! Webhooks: signed HTTP callbacks telling the application about joins, leaves and
//! events published by clients.
//!
//! Every request is a JSON POST signed with HMAC-SHA256 over `"{timestamp}.{body}"`:
//! `X-Herald-Timestamp: <unix seconds>` and `X-Herald-Signature: sha256=<hex>`.
//!
//! - Joins and leaves are gathered for `webhooks.batch_window` and sent as one
//!   `{"type":"activity","node","events":[...]}` request, retried on failure.
//! - A client event is sent as `{"type":"client_event", ...}` before it is published;
//!   a 2xx lets it through (a JSON body with `data` replaces its data), a 4xx refuses
//!   it with the answer's message, and a 5xx or timeout is retried and then refuses
//!   it: a client event is never published unchecked.
//! - When the node stops, its connections' leaves are not sent one by one: one
//!   `{"type":"node_stopping","node"}` request tells the application instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::core::Payload;
use crate::hooks::{ActivityKind, ChannelActivity, ClientEvent, HookResult};
use crate::settings::ConfigError;
use crate::stats::Stats;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The webhook sender of a hub.
pub(crate) struct Webhooks {
    url: String,
    secret: String,
    joins: bool,
    leaves: bool,
    client_events: bool,
    timeout: Duration,
    retries: u32,
    node: String,
    client: reqwest::Client,
    activity: mpsc::UnboundedSender<Value>,
    stopping: CancellationToken,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Part of the hub's `Debug`: the secret and URL credentials stay out.
        f.debug_struct("Webhooks")
            .field("url", &crate::redact::redact_url(&self.url))
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Starts the sender when `config.url` is set.
    pub(crate) fn start(
        config: &WebhooksConfig,
        node: &str,
        stopping: CancellationToken,
        stats: Arc<Stats>,
    ) -> Option<Arc<Self>> {
        let url = config.url.clone()?;
        let has = |name: &str| config.events.iter().any(|e| e == name);
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .ok()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let webhooks = Arc::new(Self {
            url,
            secret: config.secret.clone().unwrap_or_default(),
            joins: has("join"),
            leaves: has("leave"),
            client_events: has("client_event"),
            timeout: config.timeout,
            retries: config.retries,
            node: node.to_owned(),
            client,
            activity: tx,
            stopping,
            stats,
        });
        tokio::spawn(batcher(webhooks.clone(), rx, config.batch_window));
        Some(webhooks)
    }

    /// Queues a join or leave for the next batch.
    pub(crate) fn notify(&self, activity: &ChannelActivity) {
        let wanted = match activity.kind {
            ActivityKind::Join => self.joins,
            ActivityKind::Leave => self.leaves && !self.stopping.is_cancelled(),
        };
        if !wanted {
            return;
        }
        let mut entry = serde_json::to_value(activity).unwrap_or(Value::Null);
        entry["time"] = json!(unix_millis());
        let _ = self.activity.send(entry);
    }

    /// Asks the application about a client event; see the module docs.
    pub(crate) async fn check_client_event(&self, event: &ClientEvent) -> HookResult {
        let mut new = event.event.clone();
        if !self.client_events {
            return Ok(new);
        }
        let data: Value = match &new.data {
            Payload::Json(_) => serde_json::from_str(new.data.as_str()).unwrap_or(Value::Null),
            Payload::Text(_) => Value::String(new.data.as_str().to_owned()),
        };
        let body = json!({
            "type": "client_event",
            "node": self.node,
            "connection_id": event.connection_id,
            "user": event.user,
            "event": {"channels": new.channels, "type": new.kind, "data": data},
            "time": unix_millis(),
        });
        match self.send(&body).await {
            Ok((status, answer)) if (200..300).contains(&status) => {
                if let Some(data) = serde_json::from_str::<Value>(&answer)
                    .ok()
                    .and_then(|v| v.get("data").cloned())
                {
                    new.data = match data {
                        Value::String(text) => Payload::text(text),
                        other => Payload::json(&other).map_err(|e| e.to_string())?,
                    };
                }
                Ok(new)
            }
            Ok((_, answer)) => {
                let message = serde_json::from_str::<Value>(&answer)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/error/message")
                            .or_else(|| v.get("message"))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "refused by the application".to_owned());
                Err(message)
            }
            Err(e) => Err(format!("the application could not be asked: {e}")),
        }
    }

    /// POSTs `body` with retries on 5xx and transport errors; returns the final
    /// status and answer.
    async fn send(&self, body: &Value) -> Result<(u16, String), String> {
        let text = body.to_string();
        let mut last_error = String::new();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(6));
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            self.stats.webhook_sent();
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let request = self
                .client
                .post(&self.url)
                .timeout(self.timeout)
                .header("content-type", "application/json")
                .header("x-herald-timestamp", timestamp.to_string())
                .header(
                    "x-herald-signature",
                    format!("sha256={}", sign(&self.secret, timestamp, &text)),
                )
                .body(text.clone());
            match request.send().await {
                Ok(response) if response.status().is_server_error() => {
                    last_error = format!("status {}", response.status());
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let answer = response.text().await.unwrap_or_default();
                    return Ok((status, answer));
                }
                // The error quotes the URL, whose query may hold a token.
                Err(e) => last_error = crate::redact::redact_url(&e.to_string()),
            }
        }
        self.stats.webhook_failed();
        Err(last_error)
    }
}

/// The signature of a request: hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn sign(secret: &str, timestamp: u64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Gathers activity for `window` at a time and sends it in batches; tells the
/// application once when the node stops.
async fn batcher(
    webhooks: Arc<Webhooks>,
    mut rx: mpsc::UnboundedReceiver<Value>,
    window: Duration,
) {
    let mut stop_told = false;
    loop {
        let first = tokio::select! {
            item = rx.recv() => item,
            _ = webhooks.stopping.cancelled(), if !stop_told => {
                stop_told = true;
                let body = json!({"type": "node_stopping", "node": webhooks.node, "time": unix_millis()});
                if let Err(e) = webhooks.send(&body).await {
                    tracing::warn!(error = %e, "webhook not delivered");
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut events = vec![first];
        let deadline = tokio::time::Instant::now() + window;
        while events.len() < 1000 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => events.push(item),
                _ => break,
            }
        }
        let body = json!({"type": "activity", "node": webhooks.node, "events": events});
        if let Err(e) = webhooks.send(&body).await {
            tracing::warn!(error = %e, "webhook not delivered");
        }
    }
}

/// Signed HTTP callbacks to the application: joins, leaves, client events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where to POST; no webhooks when unset.
    pub url: Option<String>,
    /// The HMAC-SHA256 key that signs each request (`X-Herald-Signature`).
    pub secret: Option<String>,
    /// Which notifications to send: `join`, `leave`, `client_event`.
    pub events: Vec<String>,
    /// How long one request may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// Joins and leaves are gathered for this long and sent as one batch.
    #[serde(with = "humantime_serde")]
    pub batch_window: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            events: vec!["join".into(), "leave".into(), "client_event".into()],
            timeout: Duration::from_secs(5),
            retries: 2,
            batch_window: Duration::from_millis(200),
        }
    }
}

impl WebhooksConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "webhooks.url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            if self.secret.as_ref().is_none_or(|s| s.len() < 16) {
                return Err(ConfigError::new(
                    "webhooks.secret",
                    "is needed with webhooks.url, at least 16 characters: requests are signed with it",
                ));
            }
        }
        for (i, event) in self.events.iter().enumerate() {
            if !["join", "leave", "client_event"].contains(&event.as_str()) {
                return Err(ConfigError::new(
                    format!("webhooks.events[{i}]"),
                    format!("unknown notification {event:?}: use join, leave or client_event"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_node_debug_form_shows_no_secret() {
        let mut config = crate::Config::default();
        config.auth.jwt_secret = Some("jwt-secret-1a2b3c4d5e6f".into());
        config.webhooks.url = Some("https://u:pw-hook-9f9f@app.example.com/hooks".into());
        config.webhooks.secret = Some("webhook-secret-8e8e8e8e".into());
        config.store.path = ":memory:".into();
        let node = crate::Node::new(config).unwrap();
        let shown = format!("{node:?}");
        assert!(shown.contains("webhooks"), "{shown}");
        for secret in ["jwt-secret-1a2b", "pw-hook-9f9f", "webhook-secret-8e8e"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_and_body() {
        // Known answer computed independently: HMAC-SHA256("key", "1.{}").
        let sig = sign("key", 1, "{}");
        assert_eq!(
            sig,
            "1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
        assert_ne!(sig, sign("key", 2, "{}"));
        assert_ne!(sig, sign("other", 1, "{}"));
    }
}
