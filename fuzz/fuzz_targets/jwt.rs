//! JWT headers and claims. A credential that is not signed with the hub's secret
//! never authenticates, whatever its segments hold; one that is signed, with any
//! header and claims, is taken or refused without a panic, and when taken its
//! claims hold what the hub requires (an `exp` still to come, a usable `sub`).
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald::auth::{Authenticator, Credential, unix_now};
use herald::config::AuthConfig;
use herald::core::ChannelName;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRET: &str = "fuzzing-secret-0123456789abcdef";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let config = AuthConfig {
            jwt_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        };
        Authenticator::from_config(&config).expect("a valid config")
    })
}

/// `header.claims.signature`, signed with HS256 under `secret`.
fn signed(header: &[u8], claims: &[u8], secret: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fuzz_target!(|input: &[u8]| {
    let auth = authenticator();
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    match mode % 3 {
        // Any text as a credential: no secret known, so nothing authenticates.
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                assert!(auth.authenticate(text).is_err(), "{text:?}");
            }
        }
        // Any header and claims, signed with another secret.
        1 => {
            let (header, claims) = split(rest);
            let token = signed(header, claims, "another-secret");
            assert!(auth.authenticate(&token).is_err());
        }
        // Any header and claims, signed with the hub's secret.
        _ => {
            let (header, claims) = split(rest);
            let token = signed(header, claims, SECRET);
            if let Ok(identity) = auth.authenticate(&token) {
                assert_eq!(identity.credential, Credential::Token);
                let exp = identity.expires_at.expect("exp is required");
                assert!(exp >= unix_now().saturating_sub(60), "not expired");
                if let Some(user) = &identity.user {
                    assert!(ChannelName::user(user).is_ok());
                }
                let _ = identity.expires_in();
            }
        }
    }
});

/// A header and claims, apart at the first NUL; a usual header when none is given.
fn split(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == 0) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (br#"{"alg":"HS256","typ":"JWT"}"#, bytes),
    }
}
