//! Where the load goes: hub base URLs (plain http on loopback only), local
//! source addresses to bind outgoing sockets to, channel names and request
//! path templates.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result, bail};

/// One hub node: a loopback socket address plus what goes into `Host:` and
/// an optional path prefix taken from the base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Address to connect to.
    pub(crate) addr: SocketAddr,
    /// Value of the `Host:` header (the URL's authority as written).
    pub(crate) host: String,
    /// Path prefix from the base URL, without a trailing slash (often empty).
    pub(crate) base_path: String,
    /// The URL as given, for reports.
    pub(crate) url: String,
}

impl Target {
    /// Parses `http://host[:port][/prefix]`, refusing anything that is not
    /// plain http to a loopback address: this tool is for local benchmarking.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            bail!("{url}: https is not supported; use plain http to a loopback address");
        }
        let Some(rest) = lower.starts_with("http://").then(|| &url[7..]) else {
            bail!("{url}: expected a URL of the form http://127.0.0.1:8080");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains('?') || path.contains('#') {
            bail!("{url}: the base URL must not carry a query or fragment");
        }
        if authority.contains('@') {
            bail!("{url}: credentials in the URL are not supported; use --token");
        }
        let (host, port) =
            split_host_port(authority).with_context(|| format!("{url}: bad host or port"))?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse::<IpAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "{url}: host {host:?} is not a loopback address; this tool only targets \
                     127.0.0.0/8, ::1 or localhost (local benchmarking only)"
                )
            })?
        };
        if !ip.is_loopback() {
            bail!(
                "{url}: {ip} is not a loopback address; this tool only targets 127.0.0.0/8, \
                 ::1 or localhost (local benchmarking only)"
            );
        }
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            host: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
            url: url.to_string(),
        })
    }
}

fn split_host_port(authority: &str) -> Result<(&str, u16)> {
    if authority.is_empty() {
        bail!("empty host");
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').context("unterminated [ in IPv6 address")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().context("bad port")?,
            None if after.is_empty() => 80,
            None => bail!("unexpected text after ]"),
        };
        return Ok((host, port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h, p.parse().context("bad port")?)),
        None => Ok((authority, 80)),
    }
}

/// Largest number of addresses a single `a-b` range may expand to.
const MAX_SOURCE_RANGE: u32 = 65_536;

/// Parses `--source-ips`: a comma separated list of loopback addresses and
/// IPv4 ranges such as `127.0.0.2-127.0.0.9`.
pub(crate) fn parse_source_ips(spec: &str) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .with_context(|| format!("source range {part:?}: bad start address"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .with_context(|| format!("source range {part:?}: bad end address"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a {
                bail!("source range {part:?}: end is before start");
            }
            if b - a >= MAX_SOURCE_RANGE {
                bail!("source range {part:?}: more than {MAX_SOURCE_RANGE} addresses");
            }
            out.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("bad source address {part:?}"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("--source-ips is empty");
    }
    if let Some(ip) = out.iter().find(|ip| !ip.is_loopback()) {
        bail!("source address {ip} is not a loopback address (local benchmarking only)");
    }
    Ok(out)
}

/// Percent-encodes everything except RFC 3986 unreserved characters, so a
/// channel name can go into a query string or a path segment.
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// A channel name in the encodings the requests need.
#[derive(Debug, Clone)]
pub(crate) struct Channel {
    /// Percent-encoded, for paths and query strings.
    pub(crate) url: String,
    /// As a JSON string literal, quotes included.
    pub(crate) json: String,
}

impl Channel {
    /// Builds the encodings of channel `{prefix}{index}`.
    pub(crate) fn new(prefix: &str, index: usize) -> Self {
        let name = format!("{prefix}{index}");
        let json = serde_json::Value::String(name.clone()).to_string();
        Self {
            url: url_encode(&name),
            json,
        }
    }
}

/// A request path with `{channel}` placeholders, pre-split so filling it in
/// is a couple of copies.
#[derive(Debug, Clone)]
pub(crate) struct PathTemplate {
    parts: Vec<String>,
}

impl PathTemplate {
    /// Splits `template` at each `{channel}`.
    pub(crate) fn new(template: &str) -> Result<Self> {
        if !template.starts_with('/') {
            bail!("path template {template:?} must start with '/'");
        }
        if template
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            bail!("path template {template:?} must not contain spaces or control characters");
        }
        Ok(Self {
            parts: template.split("{channel}").map(str::to_string).collect(),
        })
    }

    /// Whether the template mentions `{channel}` at all.
    pub(crate) fn has_channel(&self) -> bool {
        self.parts.len() > 1
    }

    /// Appends `base` + the template with `channel` filled in to `out`.
    pub(crate) fn render_into(&self, out: &mut Vec<u8>, base: &str, channel: &str) {
        out.extend_from_slice(base.as_bytes());
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(channel.as_bytes());
            }
            out.extend_from_slice(part.as_bytes());
        }
    }

    /// The full subscribe path: base + template, plus `token=` when a token
    /// is given (joined with `&` or `?` as the template requires).
    pub(crate) fn render_with_token(
        &self,
        base: &str,
        channel: &str,
        token: Option<&str>,
    ) -> String {
        let mut out = Vec::new();
        self.render_into(&mut out, base, channel);
        let mut s = String::from_utf8_lossy(&out).into_owned();
        if let Some(token) = token {
            s.push(if s.contains('?') { '&' } else { '?' });
            s.push_str("token=");
            s.push_str(&url_encode(token));
        }
        s
    }
}

/// The local port range of the kernel, if it can be read (Linux only).
pub(crate) fn local_port_range() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|x| x.parse::<u32>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() -> Result<()> {
        let t = Target::parse("http://127.0.0.1:8080")?;
        assert_eq!(t.addr, "127.0.0.1:8080".parse()?);
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.base_path, "");
        let t = Target::parse("http://localhost/hub/")?;
        assert_eq!(t.addr, "127.0.0.1:80".parse()?);
        assert_eq!(t.base_path, "/hub");
        let t = Target::parse("HTTP://[::1]:9000")?;
        assert_eq!(t.addr, "[::1]:9000".parse()?);
        let t = Target::parse("http://127.9.8.7:1")?;
        assert_eq!(t.addr.port(), 1);
        Ok(())
    }

    #[test]
    fn refuses_non_loopback_and_https() {
        for bad in [
            "http://10.0.0.1:8080",
            "http://example.com",
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "http://[2001:db8::1]:80",
            "http://127.0.0.1:notaport",
            "http://127.0.0.1:8080/?x=1",
            "http://",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} should be refused");
        }
        let err = Target::parse("http://192.168.1.2:80").err();
        assert!(err.is_some_and(|e| e.to_string().contains("loopback")));
    }

    #[test]
    fn parses_source_ip_lists_and_ranges() -> Result<()> {
        let ips = parse_source_ips("127.0.0.2, 127.0.0.5-127.0.0.7")?;
        let want: Vec<IpAddr> = ["127.0.0.2", "127.0.0.5", "127.0.0.6", "127.0.0.7"]
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        assert_eq!(ips, want);
        assert!(parse_source_ips("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_source_ips("10.0.0.1").is_err());
        assert!(parse_source_ips("").is_err());
        assert!(parse_source_ips("127.0.0.0-127.255.255.255").is_err());
        Ok(())
    }

    #[test]
    fn templates_fill_channel_and_token() -> Result<()> {
        let t = PathTemplate::new("/events?channel={channel}")?;
        assert!(t.has_channel());
        assert_eq!(
            t.render_with_token("", "bench-3", Some("a.b_c")),
            "/events?channel=bench-3&token=a.b_c"
        );
        let t = PathTemplate::new("/sub/{channel}")?;
        assert_eq!(
            t.render_with_token("/base", "x%20y", Some("tok")),
            "/base/sub/x%20y?token=tok"
        );
        assert_eq!(t.render_with_token("", "c", None), "/sub/c");
        assert!(PathTemplate::new("events").is_err());
        assert!(PathTemplate::new("/a b").is_err());
        Ok(())
    }

    #[test]
    fn channel_encodings() {
        let c = Channel::new("a b\"", 7);
        assert_eq!(c.url, "a%20b%227");
        assert_eq!(c.json, "\"a b\\\"7\"");
    }
}
