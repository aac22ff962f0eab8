//! What every component's settings share: the error that names the key it is
//! about. Each component owns the type of its own section of the configuration
//! and checks it; the configuration module composes the sections.

use crate::redact::redact_url;

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key `{key}`: {message}")]
pub struct ConfigError {
    /// The dotted key, e.g. `limits.max_connections`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`. URL credentials in the message are hidden
    /// ([`redact_url`]): messages quote values, which may be URLs with passwords.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: redact_url(&message.into()),
        }
    }
}

/// A list, or one string of comma-separated items (as an environment variable).
pub(crate) fn list_or_commas<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Items {
        List(Vec<String>),
        Text(String),
    }
    Ok(match <Items as serde::Deserialize>::deserialize(d)? {
        Items::List(items) => items,
        Items::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}
