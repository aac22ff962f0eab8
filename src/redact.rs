//! Secrets in text: the credentials of URLs (`redis://user:REDACTED@host`, a NATS
//! token), secret query parameters (`?password=`, `?token=`) and the `password=`
//! of a PostgreSQL key-value connection string, hidden wherever the hub shows or
//! logs a URL or an error that may quote one ([`redact_url`]).

/// What stands in for a password or token inside a URL or connection string.
pub const REDACTED: &str = "REDACTED";

/// Hides the credentials of every URL in `text`, secret query parameters, and the
/// `password=` of a key-value connection string. Text without any is returned as is.
pub fn redact_url(text: &str) -> String {
    scan(text, Boundary::WhiteSpace, &mut Vec::new())
}

/// Where a URL in a text ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Boundary {
    /// At white space or the next URL: a URL within a message.
    WhiteSpace,
    /// At the next URL only: a setting's value, which may be a list of URLs.
    NextUrl,
}

/// [`redact_url`], adding each value it hid to `found`.
pub(crate) fn scan(text: &str, boundary: Boundary, found: &mut Vec<String>) -> String {
    let text = hide_urls(text, boundary, found);
    hide_password_pairs(&text, found)
}

fn hide_urls(text: &str, boundary: Boundary, found: &mut Vec<String>) -> String {
    let marks: Vec<usize> = text.match_indices("://").map(|(i, _)| i).collect();
    if marks.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (n, &mark) in marks.iter().enumerate() {
        let start = mark + 3;
        if start < copied {
            continue;
        }
        let mut end = match boundary {
            Boundary::WhiteSpace => text[start..]
                .find(char::is_whitespace)
                .map_or(text.len(), |i| start + i),
            Boundary::NextUrl => text.len(),
        };
        if let Some(&next) = marks.get(n + 1) {
            end = end.min(scheme_start(text, next));
        }
        let end = end.max(start);
        let scheme = &text[scheme_start(text, mark)..mark];
        out.push_str(&text[copied..start]);
        out.push_str(&hide_in_url(scheme, &text[start..end], found));
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Where the scheme ending at `mark` (the position of `://`) starts.
fn scheme_start(text: &str, mark: usize) -> usize {
    text[..mark]
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

/// Hides the credentials of one URL, given without its `scheme://`.
fn hide_in_url(scheme: &str, url: &str, found: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(url.len());
    let rest = match userinfo_end(url) {
        Some(at) => {
            let userinfo = &url[..at];
            match userinfo.split_once(':') {
                Some((user, password)) if !password.is_empty() && password != REDACTED => {
                    found.push(password.to_owned());
                    out.push_str(user);
                    out.push(':');
                    out.push_str(REDACTED);
                }
                // NATS takes a token as the user part alone.
                None if matches!(scheme.to_ascii_lowercase().as_str(), "nats" | "tls")
                    && !userinfo.is_empty()
                    && userinfo != REDACTED =>
                {
                    found.push(userinfo.to_owned());
                    out.push_str(REDACTED);
                }
                _ => out.push_str(userinfo),
            }
            out.push('@');
            &url[at + 1..]
        }
        None => url,
    };
    match rest.split_once('?') {
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, value)) if secret_parameter(key) && !value.is_empty() => {
                        if value != REDACTED {
                            found.push(value.to_owned());
                        }
                        format!("{key}={REDACTED}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(rest),
    }
    out
}

/// Where the user info of a URL (given without its `scheme://`) ends: the `@`
/// before the host, if there is one.
fn userinfo_end(url: &str) -> Option<usize> {
    let last_at = url.rfind('@')?;
    let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    if last_at < authority_end {
        return Some(last_at);
    }
    // An `@` after a `/`, `?` or `#`: in the path or query of a URL whose
    // authority ends there, or in a password holding one of them unencoded. The
    // first when the authority reads as a host (and port); otherwise hide too much
    // rather than too little.
    let authority = &url[..authority_end];
    if let Some(at) = authority.rfind('@') {
        return Some(at);
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_and_port = !host.is_empty()
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (!host_and_port).then_some(last_at)
}

/// Whether a query parameter carries a secret.
fn secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
        || matches!(
            key.as_str(),
            "key" | "apikey" | "api_key" | "sig" | "signature"
        )
}

/// Hides the value of every `password=` pair (PostgreSQL's key-value connection
/// strings: `host=db password=s3cret`, `password = 'a b'`).
fn hide_password_pairs(text: &str, found: &mut Vec<String>) -> String {
    const KEY: &str = "password";
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(i) = lower[from..].find(KEY) {
        let key = from + i;
        from = key + KEY.len();
        let starts_word = key == 0
            || bytes[key - 1].is_ascii_whitespace()
            || matches!(
                bytes[key - 1],
                b'&' | b'?' | b'(' | b',' | b';' | b'"' | b'\''
            );
        let mut at = from;
        while at < bytes.len() && bytes[at] == b' ' {
            at += 1;
        }
        if !starts_word || bytes.get(at) != Some(&b'=') {
            continue;
        }
        at += 1;
        while at < bytes.len() && bytes[at] == b' ' {
            at += 1;
        }
        let (value_start, value_end, after) = if bytes.get(at) == Some(&b'\'') {
            // A quoted value runs to the next quote not escaped by a backslash.
            let mut escaped = false;
            let close = text[at + 1..].char_indices().find_map(|(i, c)| {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '\'') => return Some(at + 1 + i),
                    _ => {}
                }
                None
            });
            match close {
                Some(end) => (at + 1, end, end + 1),
                None => (at + 1, text.len(), text.len()),
            }
        } else {
            let end = text[at..]
                .find(|c: char| c.is_whitespace() || c == '&')
                .map_or(text.len(), |i| at + i);
            (at, end, end)
        };
        let value = &text[value_start..value_end];
        if value.is_empty() || value == REDACTED {
            continue;
        }
        found.push(value.to_owned());
        out.push_str(&text[copied..value_start]);
        out.push_str(REDACTED);
        out.push_str(&text[value_end..after]);
        copied = after;
        from = after;
    }
    if copied == 0 {
        return text.to_owned();
    }
    out.push_str(&text[copied..]);
    out
}

/// Percent-encoded text (URL user info, `p%40ss`) as the text it encodes (`p@ss`).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digit = |at: usize| bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        if let (b'%', Some(high), Some(low)) = (bytes[i], digit(i + 1), digit(i + 2)) {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
