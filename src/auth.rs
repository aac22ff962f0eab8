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
//! public key or the keys of a JWKS file (chosen by the token's `kid`). A token's
//! `alg` picks the key and must be the key's own algorithm, so a token cannot choose
//! how it is checked (no `none`, no HMAC over a public key).
//!
//! `exp` is required; `nbf` is honoured; with `auth.issuer` or `auth.audience` set,
//! `iss` or `aud` is required too and must match. `exp` and `nbf` allow
//! `auth.leeway` of clock skew. Times are plain seconds: a fraction, a negative
//! number or text is refused, and a time too far in the future to represent counts
//! as "far away" rather than failing.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::{ChannelName, ChannelPattern, Grants};
use crate::settings::ConfigError;
use std::path::PathBuf;

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
            exp: Some(now.saturating_add(ttl.as_secs())),
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

    /// Time left before the credential expires (`None` when it does not), at most
    /// [`LONGEST_EXPIRY`]: callers add it to the current instant, which must not
    /// overflow whatever `exp` a token carries.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_at.map(|exp| time_left(exp, SystemTime::now()))
    }
}

/// The longest time [`Identity::expires_in`] reports. A token valid for longer is
/// treated as valid for this long: its streams end after ten years.
pub const LONGEST_EXPIRY: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Time from `now` until the Unix time `exp`, none when past, at most
/// [`LONGEST_EXPIRY`]; an `exp` beyond what `SystemTime` holds is far away, not an
/// overflow.
fn time_left(exp: u64, now: SystemTime) -> Duration {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(exp))
        .map_or(LONGEST_EXPIRY, |at| {
            at.duration_since(now).unwrap_or_default()
        })
        .min(LONGEST_EXPIRY)
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
    /// The token's `nbf` (not before) is still in the future.
    #[error("the token is not valid yet: its `nbf` (not before) is in the future")]
    NotYetValid,
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

/// The largest `auth.leeway` (see [`AuthConfig::leeway`]): clock skew
/// is a matter of seconds, and a far larger leeway would make time checks overflow.
pub const MAX_LEEWAY: Duration = Duration::from_secs(3600);

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
            // Config::validate refuses more; an embedder may not have called it.
            leeway: config.leeway.min(MAX_LEEWAY).as_secs(),
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
                .is_some_and(|exp| self.expired(exp, now))
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

    /// Whether a token with this `exp` is expired at `now`: from its `exp` second
    /// on (the moment its streams end), after the leeway.
    fn expired(&self, exp: u64, now: u64) -> bool {
        exp.saturating_add(self.leeway) <= now
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
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(refusal)?;
        if claims.exp.is_some_and(|exp| self.expired(exp, unix_now())) {
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

/// Why a token that failed decoding is refused, in words a client developer can act on.
fn refusal(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!(
            "the token has no `{claim}` claim, which this hub requires"
        )),
        ErrorKind::InvalidIssuer => {
            AuthError::Invalid("the token's `iss` is not the issuer this hub accepts".into())
        }
        ErrorKind::InvalidAudience => {
            AuthError::Invalid("the token's `aud` is not the audience this hub accepts".into())
        }
        ErrorKind::InvalidClaimFormat(claim) => AuthError::Invalid(format!(
            "the token's `{claim}` is not a whole number of seconds since 1970"
        )),
        _ => AuthError::Invalid(e.to_string()),
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

/// Credentials the hub accepts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HS256 secret (`HERALD_JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// A PEM file with an RSA or EC public key, for RS256 or ES256 tokens.
    pub jwt_public_key: Option<PathBuf>,
    /// A JWKS file with RS256 or ES256 public keys, chosen by the token's `kid`.
    pub jwks: Option<PathBuf>,
    /// The `iss` a token must carry, if set: a token without one is refused.
    pub issuer: Option<String>,
    /// The `aud` a token must carry, if set: a token without one is refused.
    pub audience: Option<String>,
    /// Tolerated clock skew when checking `exp` and `nbf` (5 s by default, at most
    /// 1 h): a token is accepted this long after its `exp` and before its `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The cookie a browser may carry its token in.
    pub cookie: String,
    /// Static keys for publishing servers.
    pub api_keys: Vec<ApiKeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key: None,
            jwks: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            cookie: "herald_token".into(),
            api_keys: Vec::new(),
        }
    }
}

/// A static API key for a publishing server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs.
    pub name: String,
    /// The key itself.
    #[serde(default)]
    pub key: Option<String>,
    /// The SHA-256 of the key in hexadecimal, to keep the key out of the file.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Channels the key may publish to.
    #[serde(default)]
    pub publish: Vec<ChannelPattern>,
}

impl AuthConfig {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::new(
                "auth.jwt_secret",
                "must be at least 16 characters (32 or more random characters recommended)",
            ));
        }
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::new(
                "auth.leeway",
                "must be at most 1h: it only covers clock differences between the token issuer and the hub",
            ));
        }
        if self.cookie.is_empty() {
            return Err(ConfigError::new("auth.cookie", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        let config = AuthConfig {
            jwt_secret: Some(SECRET.into()),
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

    const SECRET: &str = "a-test-secret-that-is-long-enough";

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// A token with exactly these claims, signed HS256 with `secret`.
    fn hs256(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn in_an_hour() -> u64 {
        unix_now() + 3600
    }

    #[test]
    fn a_configured_issuer_and_audience_are_required_not_only_checked() {
        let a = Authenticator::from_config(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            issuer: Some("https://auth.example.com".into()),
            audience: Some("herald".into()),
            ..Default::default()
        })
        .unwrap();
        let exp = in_an_hour();
        let iss = "https://auth.example.com";
        let good = hs256(
            SECRET.as_bytes(),
            serde_json::json!({"sub": "ana", "exp": exp, "iss": iss, "aud": "herald"}),
        );
        assert_eq!(a.authenticate(&good).unwrap().user.as_deref(), Some("ana"));
        let list = hs256(
            SECRET.as_bytes(),
            serde_json::json!({"exp": exp, "iss": iss, "aud": ["other", "herald"]}),
        );
        assert!(a.authenticate(&list).is_ok(), "one of several audiences");
        let cases = [
            (serde_json::json!({"exp": exp, "aud": "herald"}), "no `iss`"),
            (serde_json::json!({"exp": exp, "iss": iss}), "no `aud`"),
            (serde_json::json!({"exp": exp}), "no `"),
            (
                serde_json::json!({"exp": exp, "iss": "https://evil.example.com", "aud": "herald"}),
                "`iss` is not",
            ),
            (
                serde_json::json!({"exp": exp, "iss": iss, "aud": "other"}),
                "`aud` is not",
            ),
        ];
        for (claims, why) in cases {
            let token = hs256(SECRET.as_bytes(), claims.clone());
            match a.authenticate(&token) {
                Err(AuthError::Invalid(message)) => {
                    assert!(message.contains(why), "{claims}: {message}")
                }
                other => panic!("{claims} must be refused, got {other:?}"),
            }
        }
        // Without issuer and audience configured, tokens need neither.
        let plain = auth();
        let token = hs256(SECRET.as_bytes(), serde_json::json!({"exp": exp}));
        assert!(plain.authenticate(&token).is_ok());
    }

    #[test]
    fn times_at_the_edges_of_their_type_never_panic() {
        let a = auth();
        for exp in [u64::MAX, 10_000_000_000_000_000_000, u64::MAX - 1] {
            let token = hs256(
                SECRET.as_bytes(),
                serde_json::json!({"sub": "ana", "exp": exp}),
            );
            let id = a.authenticate(&token).unwrap();
            assert_eq!(id.expires_in(), Some(LONGEST_EXPIRY), "exp {exp}");
            // Again from the verified credentials, and at the end of time.
            assert!(a.authenticate(&token).is_ok());
            assert_eq!(
                a.authenticate_at(&token, u64::MAX).unwrap_err(),
                AuthError::Expired
            );
        }
        for (claims, what) in [
            (serde_json::json!({"exp": -5}), "negative"),
            (serde_json::json!({"exp": 1.5e9}), "fractional"),
            (
                serde_json::json!({"exp": unix_now() as f64 + 600.5}),
                "fractional",
            ),
            (serde_json::json!({"exp": 1e19}), "written as a fraction"),
            (serde_json::json!({"exp": 1e30}), "beyond u64"),
            (serde_json::json!({"exp": in_an_hour().to_string()}), "text"),
            (serde_json::json!({"exp": null}), "null"),
            (
                serde_json::json!({"exp": in_an_hour(), "nbf": "0"}),
                "text nbf",
            ),
            (
                serde_json::json!({"exp": in_an_hour(), "nbf": -1}),
                "negative nbf",
            ),
            (
                serde_json::json!({"exp": in_an_hour(), "iat": -1}),
                "negative iat",
            ),
        ] {
            let token = hs256(SECRET.as_bytes(), claims.clone());
            assert!(
                matches!(a.authenticate(&token), Err(AuthError::Invalid(_))),
                "{what}: {claims}"
            );
        }
        // A leeway no configuration check has seen is bounded too.
        let lax = Authenticator::from_config(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            leeway: Duration::MAX,
            ..Default::default()
        })
        .unwrap();
        for claims in [
            serde_json::json!({"exp": u64::MAX, "nbf": u64::MAX}),
            serde_json::json!({"exp": 0}),
        ] {
            let token = hs256(SECRET.as_bytes(), claims);
            assert!(lax.authenticate(&token).is_err());
        }
        // Minting with a lifetime past the end of time saturates.
        let claims = Claims::new(None, Duration::MAX);
        assert_eq!(claims.exp, Some(u64::MAX));
        // Time left, seen from a fixed instant.
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(time_left(1_060, now), Duration::from_secs(60));
        assert_eq!(time_left(10, now), Duration::ZERO);
        assert_eq!(time_left(u64::MAX, now), LONGEST_EXPIRY);
    }

    #[test]
    fn nbf_is_honoured_with_the_leeway() {
        let a = auth();
        assert_eq!(a.leeway, 5, "the default leeway");
        let token = |nbf: u64| {
            hs256(
                SECRET.as_bytes(),
                serde_json::json!({"exp": in_an_hour(), "nbf": nbf}),
            )
        };
        let early = token(unix_now() + 120);
        assert_eq!(a.authenticate(&early).unwrap_err(), AuthError::NotYetValid);
        assert!(
            a.verified.lock().is_empty(),
            "a token not valid yet is not kept"
        );
        assert!(AuthError::NotYetValid.to_string().contains("nbf"));
        assert!(
            a.authenticate(&token(unix_now() + 2)).is_ok(),
            "within the leeway"
        );
        assert!(a.authenticate(&token(unix_now() - 60)).is_ok());
        assert_eq!(
            a.authenticate(&token(u64::MAX)).unwrap_err(),
            AuthError::NotYetValid
        );
        // Expiry has the same leeway: a token expired 2 s ago still passes.
        let just_expired = hs256(
            SECRET.as_bytes(),
            serde_json::json!({"exp": unix_now() - 2}),
        );
        assert!(a.authenticate(&just_expired).is_ok());
    }

    /// An authenticator with the RSA public key of the fixtures, and `secret`.
    fn with_public_key(public: &str, secret: Option<&str>) -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            jwt_secret: secret.map(str::to_owned),
            jwt_public_key: Some(fixture(public)),
            ..Default::default()
        })
        .unwrap()
    }

    fn signed_with_private_key(alg: Algorithm, private: &str) -> String {
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        };
        let claims = serde_json::json!({"sub": "ana", "exp": in_an_hour()});
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
    }

    #[test]
    fn an_hmac_token_keyed_with_the_public_key_is_refused() {
        for public in ["rsa-public.pem", "ec-public.pem"] {
            let pem = std::fs::read(fixture(public)).unwrap();
            let forged = hs256(
                &pem,
                serde_json::json!({"sub": "ana", "exp": in_an_hour(), "herald": {"publish": ["*"]}}),
            );
            for secret in [None, Some("a-different-secret-altogether")] {
                let a = with_public_key(public, secret);
                assert!(
                    matches!(a.authenticate(&forged), Err(AuthError::Invalid(_))),
                    "{public}, secret {secret:?}"
                );
            }
        }
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let claims = b64(serde_json::json!({"sub": "ana", "exp": in_an_hour()}));
        for alg in ["none", "None", "NONE", ""] {
            let header = b64(serde_json::json!({"alg": alg, "typ": "JWT"}));
            for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
                for a in [auth(), with_public_key("rsa-public.pem", Some(SECRET))] {
                    assert!(
                        matches!(a.authenticate(&token), Err(AuthError::Invalid(_))),
                        "alg {alg:?}: {token}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_token_must_use_the_algorithm_of_its_key() {
        let rsa = with_public_key("rsa-public.pem", None);
        assert!(
            rsa.authenticate(&signed_with_private_key(
                Algorithm::RS256,
                "rsa-private.pem"
            ))
            .is_ok(),
            "the key's own algorithm"
        );
        for (alg, private) in [
            (Algorithm::RS384, "rsa-private.pem"),
            (Algorithm::RS512, "rsa-private.pem"),
            (Algorithm::PS256, "rsa-private.pem"),
            (Algorithm::ES256, "ec-private.pem"),
        ] {
            let token = signed_with_private_key(alg, private);
            assert!(
                matches!(rsa.authenticate(&token), Err(AuthError::Invalid(_))),
                "{alg:?} against an RS256 key"
            );
        }
        let ec = with_public_key("ec-public.pem", None);
        assert!(
            ec.authenticate(&signed_with_private_key(Algorithm::ES256, "ec-private.pem"))
                .is_ok()
        );
        let rs256 = signed_with_private_key(Algorithm::RS256, "rsa-private.pem");
        assert!(matches!(
            ec.authenticate(&rs256),
            Err(AuthError::Invalid(_))
        ));
        // A genuine RS256 signature under a header that claims another algorithm.
        let (_, rest) = rs256.split_once('.').unwrap();
        use base64::Engine;
        for alg in ["HS256", "PS256", "RS384"] {
            let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::json!({"alg": alg, "typ": "JWT"}).to_string());
            let relabelled = format!("{header}.{rest}");
            for a in [&rsa, &with_public_key("rsa-public.pem", Some(SECRET))] {
                assert!(
                    matches!(a.authenticate(&relabelled), Err(AuthError::Invalid(_))),
                    "{alg}"
                );
            }
        }
        // And an HS256 hub takes no RS256 token.
        assert!(matches!(
            auth().authenticate(&rs256),
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

    mod properties {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use hmac::{Hmac, Mac};
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::*;
        use crate::fuzzing::json_value;

        /// `header.claims.signature` of these bytes, signed HS256 with `secret`.
        fn signed(header: &[u8], claims: &[u8], secret: &str) -> String {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            )
        }

        /// A header: the usual one, another algorithm, or any JSON.
        fn header() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(br#"{"alg":"HS256","typ":"JWT"}"#.to_vec()),
                prop_oneof![
                    Just("none"),
                    Just("HS384"),
                    Just("RS256"),
                    Just("ES256"),
                    Just("hs256")
                ]
                .prop_map(|alg| json!({"alg": alg}).to_string().into_bytes()),
                json_value().prop_map(|v| v.to_string().into_bytes()),
                proptest::collection::vec(any::<u8>(), 0..24),
            ]
        }

        /// Claims: each of Herald's, of its own type or of any type, or any JSON.
        fn claims() -> impl Strategy<Value = Vec<u8>> {
            let any_or = |own: BoxedStrategy<Value>| {
                proptest::option::of(prop_oneof![3 => own, 1 => json_value()])
            };
            let patterns = proptest::collection::vec("[a-z:*]{0,6}", 0..3).prop_map(Value::from);
            let object = (
                any_or(".{0,6}".prop_map(Value::from).boxed()),
                any_or((0u64..4_000_000_000).prop_map(Value::from).boxed()),
                any_or((0u64..4_000_000_000).prop_map(Value::from).boxed()),
                any_or(patterns.clone().boxed()),
                any_or(patterns.boxed()),
            )
                .prop_map(|(sub, exp, nbf, subscribe, publish)| {
                    let mut claims = serde_json::Map::new();
                    let mut herald = serde_json::Map::new();
                    for (top, key, value) in [
                        (true, "sub", sub),
                        (true, "exp", exp),
                        (true, "nbf", nbf),
                        (false, "subscribe", subscribe),
                        (false, "publish", publish),
                    ] {
                        let map = if top { &mut claims } else { &mut herald };
                        if let Some(value) = value {
                            map.insert(key.into(), value);
                        }
                    }
                    claims.insert("herald".into(), Value::Object(herald));
                    Value::Object(claims).to_string().into_bytes()
                });
            prop_oneof![3 => object, 1 => json_value().prop_map(|v| v.to_string().into_bytes())]
        }

        proptest! {
            #![proptest_config(crate::fuzzing::cases(256))]

            /// No text authenticates without the secret: not arbitrary text, not
            /// three base64 segments, not any header and claims signed with another.
            #[test]
            fn nothing_unsigned_authenticates(
                text in prop_oneof![".{0,40}", "[A-Za-z0-9_-]{0,20}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,43}"],
                header in header(),
                claims in claims(),
            ) {
                let a = auth();
                prop_assume!(text != "k-123");
                prop_assert!(a.authenticate(&text).is_err());
                let forged = signed(&header, &claims, "another-secret-that-is-long-enough");
                prop_assert!(a.authenticate(&forged).is_err());
            }

            /// Any header and claims signed with the secret are taken or refused,
            /// never more: taken, the token's `exp` is still to come, its `sub`
            /// names a usable user channel and its grants are valid patterns.
            #[test]
            fn signed_claims_are_taken_only_when_acceptable(header in header(), claims in claims()) {
                let a = auth();
                let token = signed(&header, &claims, SECRET);
                if let Ok(identity) = a.authenticate(&token) {
                    let exp = identity.expires_at.expect("exp is required");
                    prop_assert!(!a.expired(exp, unix_now()));
                    if let Some(user) = &identity.user {
                        prop_assert!(ChannelName::user(user).is_ok());
                    }
                    let claims: Value = serde_json::from_slice(&claims).unwrap();
                    let subscribe = identity.subscribe.iter().map(|p| p.to_string()).collect::<Vec<_>>();
                    let sent = claims["herald"]["subscribe"].as_array().cloned().unwrap_or_default();
                    prop_assert_eq!(subscribe.len(), sent.len());
                    prop_assert!(identity.expires_in().is_some_and(|left| left <= LONGEST_EXPIRY));
                }
            }

            /// Minted claims authenticate as exactly what they grant.
            #[test]
            fn minted_claims_authenticate_as_they_grant(
                sub in proptest::option::of("[a-z0-9]{1,10}"),
                subscribe in proptest::collection::vec("[a-z]{1,4}(:\\*|:[0-9])?|\\*", 0..4),
                publish in proptest::collection::vec("[a-z]{1,4}(:\\*)?", 0..4),
                ttl in 60u64..100_000_000,
            ) {
                let a = auth();
                let mut claims = Claims::new(sub.clone(), Duration::from_secs(ttl));
                claims.herald.subscribe = subscribe.iter().map(|p| ChannelPattern::parse(p).unwrap()).collect();
                claims.herald.publish = publish.iter().map(|p| ChannelPattern::parse(p).unwrap()).collect();
                let identity = a.authenticate(&a.mint(&claims).unwrap()).unwrap();
                prop_assert_eq!(identity.user, sub);
                prop_assert_eq!(identity.subscribe, claims.herald.subscribe);
                prop_assert_eq!(identity.publish, claims.herald.publish);
                prop_assert_eq!(identity.expires_at, claims.exp);
                prop_assert_eq!(identity.credential, Credential::Token);
            }
        }
    }
}
