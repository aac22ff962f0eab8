//! Credentials: JWTs for subscribers and publishers, static API keys for publishers.
//!
//! A token's claims say who the holder is (`sub`, which also gives them their
//! private `user:{sub}` channel) and which channels they may subscribe and publish
//! to, in a `herald` claim:
//!
//! ```json
//! {"sub": "42", "exp": 1767225600,
//!  "herald": {"subscribe": ["team:7", "orders:*"], "publish": ["team:7"]}}
//! ```
//!
//! HS256 tokens are checked with a shared secret; RS256 and ES256 tokens with a PEM
//! public key or the keys of a JWKS file (chosen by the token's `kid`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, ConfigError};
use crate::core::{ChannelName, ChannelPattern, Grants};

/// The grants carried in a token's `herald` claim.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HeraldClaims {
    /// Channels the holder may subscribe to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<ChannelPattern>,
    /// Channels the holder may publish to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<ChannelPattern>,
    /// Public information about the holder, shown to others (presence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// The claims Herald reads from a JWT.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Issue time, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Herald's grants.
    #[serde(default)]
    pub herald: HeraldClaims,
}

impl Claims {
    /// Claims for `sub` valid for `ttl` from now.
    pub fn new(sub: Option<String>, ttl: Duration) -> Self {
        let now = unix_now();
        Self {
            sub,
            iat: Some(now),
            exp: Some(now + ttl.as_secs()),
            herald: HeraldClaims::default(),
        }
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// No credential.
    Anonymous,
    /// A JWT.
    Token,
    /// A static API key, by its configured name.
    ApiKey(String),
}

/// Who is making a request and what they may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user, from the token's `sub`.
    pub user: Option<String>,
    /// Channels granted for subscribing.
    pub subscribe: Vec<ChannelPattern>,
    /// Channels granted for publishing.
    pub publish: Vec<ChannelPattern>,
    /// When the credential expires, in seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// Public information about the holder.
    pub info: Option<serde_json::Value>,
    /// How the identity was established.
    pub credential: Credential,
}

impl Identity {
    /// Someone who presented no credential.
    pub fn anonymous() -> Self {
        Self {
            user: None,
            subscribe: Vec::new(),
            publish: Vec::new(),
            expires_at: None,
            info: None,
            credential: Credential::Anonymous,
        }
    }

    /// Whether a credential was presented and accepted.
    pub fn is_authenticated(&self) -> bool {
        self.credential != Credential::Anonymous
    }

    /// What the core needs to decide on subscriptions.
    pub fn grants(&self) -> Grants {
        Grants {
            user: self.user.clone(),
            authenticated: self.is_authenticated(),
            subscribe: self.subscribe.clone(),
        }
    }

    /// Whether this identity may publish to `channel`.
    pub fn may_publish(&self, channel: &ChannelName) -> bool {
        ChannelPattern::any_matches(&self.publish, channel.as_str())
    }

    /// Time left before the credential expires (`None` when it does not).
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_at.map(|exp| {
            let exp = UNIX_EPOCH + Duration::from_secs(exp);
            exp.duration_since(SystemTime::now()).unwrap_or_default()
        })
    }
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token could not be verified, or its claims are not acceptable.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// Signing is not possible: no HS256 secret is configured.
    #[error("no HS256 secret is configured (set auth.jwt_secret or HERALD_JWT_SECRET)")]
    NoSecret,
}

#[derive(Debug)]
struct ApiKey {
    name: String,
    publish: Vec<ChannelPattern>,
}

/// Checks credentials against the configured secret, keys and API keys.
pub struct Authenticator {
    /// Credentials that passed, with what they proved: a server publishes with the
    /// same token or key request after request, and browsers reconnect with theirs,
    /// so each is checked (signature, claims, key hash) once rather than every time.
    /// Keys are fixed for the process's life; what changes with time, a token's
    /// expiry, is checked on every use. Failures are not kept.
    verified: Mutex<HashMap<Box<str>, Identity>>,
    verified_capacity: usize,
    secret: Option<(EncodingKey, DecodingKey)>,
    public_keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    api_keys: HashMap<[u8; 32], ApiKey>,
    leeway: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.secret.is_some())
            .field("public_keys", &self.public_keys.len())
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

/// Most credentials kept as verified; beyond it an arbitrary one makes room.
const VERIFIED_CAPACITY: usize = 4096;

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    /// Builds the authenticator, reading key files named in the config.
    pub fn from_config(config: &AuthConfig) -> Result<Self, ConfigError> {
        let secret = config.jwt_secret.as_deref().map(|s| {
            (
                EncodingKey::from_secret(s.as_bytes()),
                DecodingKey::from_secret(s.as_bytes()),
            )
        });
        let mut public_keys = Vec::new();
        if let Some(path) = &config.jwt_public_key {
            public_keys.push(read_pem(path)?);
        }
        if let Some(path) = &config.jwks {
            public_keys.extend(read_jwks(path)?);
        }
        let mut api_keys = HashMap::new();
        for (i, key) in config.api_keys.iter().enumerate() {
            let hash = match (&key.key, &key.key_sha256) {
                (Some(plain), None) => sha256(plain),
                (None, Some(hex)) => parse_hex32(hex).ok_or_else(|| {
                    ConfigError::new(
                        format!("auth.api_keys[{i}].key_sha256"),
                        "must be 64 hexadecimal characters",
                    )
                })?,
                _ => {
                    return Err(ConfigError::new(
                        format!("auth.api_keys[{i}]"),
                        "set exactly one of `key` and `key_sha256`",
                    ));
                }
            };
            api_keys.insert(
                hash,
                ApiKey {
                    name: key.name.clone(),
                    publish: key.publish.clone(),
                },
            );
        }
        Ok(Self {
            verified: Mutex::new(HashMap::new()),
            verified_capacity: VERIFIED_CAPACITY,
            secret,
            public_keys,
            api_keys,
            leeway: config.leeway.as_secs(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// Whether any credential can be checked at all.
    pub fn has_credentials(&self) -> bool {
        self.secret.is_some() || !self.public_keys.is_empty() || !self.api_keys.is_empty()
    }

    /// Checks a bearer credential: an API key or a JWT.
    pub fn authenticate(&self, credential: &str) -> Result<Identity, AuthError> {
        self.authenticate_at(credential, unix_now())
    }

    /// [`Authenticator::authenticate`] at the Unix time `now` (seconds).
    fn authenticate_at(&self, credential: &str, now: u64) -> Result<Identity, AuthError> {
        let mut verified = self.verified.lock();
        if let Some(identity) = verified.get(credential) {
            if identity
                .expires_at
                .is_some_and(|exp| exp + self.leeway <= now)
            {
                verified.remove(credential);
                return Err(AuthError::Expired);
            }
            return Ok(identity.clone());
        }
        drop(verified);
        let identity = self.check(credential)?;
        let mut verified = self.verified.lock();
        if verified.len() >= self.verified_capacity {
            // Any entry will do: one that is needed again is checked again.
            if let Some(old) = verified.keys().next().cloned() {
                verified.remove(&old);
            }
        }
        verified.insert(credential.into(), identity.clone());
        Ok(identity)
    }

    /// Checks a credential: an API key, or a token's signature and claims.
    fn check(&self, credential: &str) -> Result<Identity, AuthError> {
        if let Some(key) = self.api_keys.get(&sha256(credential)) {
            return Ok(Identity {
                user: None,
                subscribe: Vec::new(),
                publish: key.publish.clone(),
                expires_at: None,
                info: None,
                credential: Credential::ApiKey(key.name.clone()),
            });
        }
        let claims = self.verify(credential)?;
        if let Some(sub) = &claims.sub {
            ChannelName::user(sub).map_err(|e| {
                AuthError::Invalid(format!("`sub` is not usable as a user id: {e}"))
            })?;
        }
        Ok(Identity {
            user: claims.sub,
            subscribe: claims.herald.subscribe,
            publish: claims.herald.publish,
            expires_at: claims.exp,
            info: claims.herald.info,
            credential: Credential::Token,
        })
    }

    fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("not a JWT ({e})")))?;
        let key = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                self.secret.as_ref().map(|(_, d)| d)
            }
            alg => self
                .public_keys
                .iter()
                .find(|(kid, key_alg, _)| {
                    *key_alg == alg && (header.kid.is_none() || kid.is_none() || *kid == header.kid)
                })
                .map(|(_, _, key)| key),
        };
        let key = key.ok_or_else(|| {
            AuthError::Invalid(format!(
                "no key is configured for algorithm {:?}",
                header.alg
            ))
        })?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        // A token is expired from its `exp` second on, the moment its streams end.
        if claims
            .exp
            .is_some_and(|exp| exp + self.leeway <= unix_now())
        {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }

    /// Signs claims with the HS256 secret.
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        let (key, _) = self.secret.as_ref().ok_or(AuthError::NoSecret)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn read_pem(path: &Path) -> Result<(Option<String>, Algorithm, DecodingKey), ConfigError> {
    let key = "auth.jwt_public_key";
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((None, Algorithm::RS256, k));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        return Ok((None, Algorithm::ES256, k));
    }
    Err(ConfigError::new(
        key,
        format!(
            "{} is not an RSA or EC public key in PEM form",
            path.display()
        ),
    ))
}

fn read_jwks(path: &Path) -> Result<Vec<(Option<String>, Algorithm, DecodingKey)>, ConfigError> {
    let key = "auth.jwks";
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| ConfigError::new(key, format!("{} is not a JWKS: {e}", path.display())))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| {
            ConfigError::new(key, format!("unusable key in {}: {e}", path.display()))
        })?;
        let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(a), _) => a.to_string().parse::<Algorithm>().ok(),
            (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
            (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)) => {
                Some(Algorithm::ES256)
            }
            _ => None,
        }
        .ok_or_else(|| {
            ConfigError::new(
                key,
                format!("a key in {} has no usable algorithm", path.display()),
            )
        })?;
        keys.push((jwk.common.key_id.clone(), alg, decoding));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyConfig;

    fn auth() -> Authenticator {
        let config = AuthConfig {
            jwt_secret: Some("a-test-secret-that-is-long-enough".into()),
            api_keys: vec![ApiKeyConfig {
                name: "backend".into(),
                key: Some("k-123".into()),
                key_sha256: None,
                publish: vec![ChannelPattern::parse("orders:*").unwrap()],
            }],
            ..Default::default()
        };
        Authenticator::from_config(&config).unwrap()
    }

    #[test]
    fn a_verified_token_is_kept_but_still_expires() {
        let a = auth();
        let claims = Claims::new(Some("alice".into()), Duration::from_secs(60));
        let exp = claims.exp.unwrap();
        let token = a.mint(&claims).unwrap();
        assert_eq!(
            a.authenticate(&token).unwrap().user.as_deref(),
            Some("alice")
        );
        assert_eq!(a.verified.lock().len(), 1, "kept after it passed");
        assert_eq!(
            a.authenticate(&token).unwrap().user.as_deref(),
            Some("alice")
        );
        // A use after its `exp` is refused, though it passed before.
        let later = exp + a.leeway;
        assert_eq!(
            a.authenticate_at(&token, later).unwrap_err(),
            AuthError::Expired
        );
        assert!(
            a.verified.lock().is_empty(),
            "an expired token is forgotten"
        );
        // A tampered token is refused and not kept.
        let tampered = format!("{}x", &token[..token.len() - 1]);
        assert!(a.authenticate(&tampered).is_err());
        assert!(a.verified.lock().is_empty());
        // API keys are kept the same way.
        assert!(a.authenticate("k-123").unwrap().is_authenticated());
        assert!(a.authenticate("k-124").is_err());
        assert_eq!(a.verified.lock().len(), 1);
    }

    #[test]
    fn the_verified_credentials_are_bounded() {
        let mut a = auth();
        a.verified_capacity = 3;
        for user in ["a", "b", "c", "d", "e"] {
            let token = a
                .mint(&Claims::new(Some(user.into()), Duration::from_secs(60)))
                .unwrap();
            assert_eq!(a.authenticate(&token).unwrap().user.as_deref(), Some(user));
            assert!(a.verified.lock().len() <= 3);
        }
    }

    #[test]
    fn minted_tokens_round_trip_with_grants() {
        let a = auth();
        let mut claims = Claims::new(Some("alice".into()), Duration::from_secs(60));
        claims.herald.subscribe = vec![ChannelPattern::parse("team:*").unwrap()];
        let token = a.mint(&claims).unwrap();
        let id = a.authenticate(&token).unwrap();
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert!(id.grants().subscribe[0].matches("team:1"));
        assert!(id.is_authenticated());
        assert!(!id.may_publish(&ChannelName::new("team:1").unwrap()));
    }

    #[test]
    fn bad_expired_and_foreign_tokens_are_refused() {
        let a = auth();
        assert!(matches!(a.authenticate("nope"), Err(AuthError::Invalid(_))));
        let mut claims = Claims::new(Some("a".into()), Duration::from_secs(60));
        claims.exp = Some(unix_now() - 10);
        let expired = a.mint(&claims).unwrap();
        assert_eq!(a.authenticate(&expired).unwrap_err(), AuthError::Expired);
        let other = Authenticator::from_config(&AuthConfig {
            jwt_secret: Some("another-secret-another-secret".into()),
            ..Default::default()
        })
        .unwrap();
        let foreign = other
            .mint(&Claims::new(None, Duration::from_secs(60)))
            .unwrap();
        assert!(matches!(
            a.authenticate(&foreign),
            Err(AuthError::Invalid(_))
        ));
        let mut no_exp = Claims::new(None, Duration::from_secs(60));
        no_exp.exp = None;
        let token = a.mint(&no_exp).unwrap();
        assert!(matches!(a.authenticate(&token), Err(AuthError::Invalid(_))));
        let bad_sub = a
            .mint(&Claims::new(Some("a b".into()), Duration::from_secs(60)))
            .unwrap();
        assert!(matches!(
            a.authenticate(&bad_sub),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn api_keys_grant_publishing() {
        let a = auth();
        let id = a.authenticate("k-123").unwrap();
        assert_eq!(id.credential, Credential::ApiKey("backend".into()));
        assert!(id.may_publish(&ChannelName::new("orders:1").unwrap()));
        assert!(!id.may_publish(&ChannelName::new("team:1").unwrap()));
        let hashed = Authenticator::from_config(&AuthConfig {
            api_keys: vec![ApiKeyConfig {
                name: "h".into(),
                key: None,
                key_sha256: Some(
                    "3e8b2f2b2d8e0a8d8b4c5a6f7e9d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d".into(),
                ),
                publish: vec![],
            }],
            ..Default::default()
        });
        assert!(hashed.is_ok());
        let bad = Authenticator::from_config(&AuthConfig {
            api_keys: vec![ApiKeyConfig {
                name: "h".into(),
                key: None,
                key_sha256: Some("zz".into()),
                publish: vec![],
            }],
            ..Default::default()
        });
        assert_eq!(bad.unwrap_err().key, "auth.api_keys[0].key_sha256");
    }
}
