//! The client's address behind a reverse proxy (`http.trusted_proxies`).
//!
//! A proxy in front of the hub makes every connection come from the proxy's
//! address, so per-address limits and logs would see one client. A proxy says who
//! its client was in a header: `X-Forwarded-For: client, proxy1, proxy2` (each proxy
//! appends the address it accepted the request from), or RFC 7239's
//! `Forwarded: for=client, for=proxy1`. Anyone can write such a header, so it is
//! believed only from a TCP peer inside one of the configured networks, and only as
//! far as it was written by trusted proxies: the chain is walked from the right (the
//! entry the nearest proxy appended) past every address that is itself a trusted
//! proxy, and the first other address is the client. What lies further left was
//! sent by the client and is never read.
//!
//! An entry that is not an address (`unknown`, an obfuscated `_name`, garbage) ends
//! the walk at the last trusted hop: a trusted proxy did not say who its client was,
//! so the request counts as that proxy's own, never as an address the client could
//! have chosen. A chain of trusted proxies only ends at its leftmost entry.
//!
//! Only the one header [`ForwardedHeader`] names is read: a proxy passes on headers
//! it does not set itself, so the other one may hold whatever the client wrote.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

/// The header trusted proxies put the client's address in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx `$proxy_add_x_forwarded_for`, most
    /// load balancers).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// A network in CIDR notation: `10.0.0.0/8`, `fd00::/8`; a bare address is a
/// network of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpNet {
    /// The network's address, with the bits past the prefix cleared.
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address. Bits set past the prefix
    /// (`10.0.0.1/8`) are ignored: the network is the one the address is in.
    /// IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are taken as IPv4.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or network such as 10.0.0.0/8"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
        };
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            other => (other, prefix),
        };
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address as IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

/// `addr` with the bits past `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

/// The proxies whose forwarded client address is believed, and the header they set.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// The networks of `http.trusted_proxies` (checked by the section's check;
    /// an entry that does not parse is left out) and the header they set.
    pub(crate) fn new(nets: &[String], header: ForwardedHeader) -> Self {
        Self {
            nets: nets.iter().filter_map(|n| IpNet::parse(n).ok()).collect(),
            header,
        }
    }

    /// Whether a connection from `ip` comes from a trusted proxy.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// The client's address for a request from the trusted proxy `peer`: the
    /// rightmost address of the forwarded chain that is not a trusted proxy (see the
    /// module docs); its port is the one the header names, else 0. `peer` itself
    /// when the header is absent or names no address at its right end.
    pub(crate) fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        let mut client = peer;
        // Header lines are one list in order: the last line holds the right end.
        let entries = headers
            .get_all(name)
            .iter()
            .rev()
            .flat_map(|value| value.as_bytes().rsplit(|b| *b == b','));
        for entry in entries {
            let node = std::str::from_utf8(entry)
                .ok()
                .and_then(|entry| match self.header {
                    ForwardedHeader::XForwardedFor => node(entry),
                    ForwardedHeader::Forwarded => forwarded_for(entry).and_then(node),
                });
            let Some(node) = node else {
                // A trusted hop that did not say who its client was.
                return client;
            };
            client = node;
            if !self.trusts(node.ip()) {
                return client;
            }
        }
        client
    }
}

/// The `for=` parameter of one element of a `Forwarded` header
/// (`for=192.0.2.60;proto=https;by=203.0.113.43`), unquoted; `None` without one.
fn forwarded_for(element: &str) -> Option<&str> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    })?;
    match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').filter(|v| !v.contains('"')),
        None => Some(value),
    }
}

/// One address of a forwarded chain: `192.0.2.60`, `192.0.2.60:4711`,
/// `2001:db8::17`, `[2001:db8::17]`, `[2001:db8::17]:4711`; IPv4-mapped IPv6
/// addresses are taken as IPv4.
fn node(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    let addr = if let Ok(ip) = text.parse::<IpAddr>() {
        SocketAddr::new(ip, 0)
    } else if let Ok(addr) = text.parse::<SocketAddr>() {
        addr
    } else {
        let ip = text.strip_prefix('[')?.strip_suffix(']')?;
        SocketAddr::new(IpAddr::V6(ip.parse::<Ipv6Addr>().ok()?), 0)
    };
    Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let net = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped");
        assert!(!net.contains(ip("::1")));
        let one = IpNet::parse("127.0.0.1").unwrap();
        assert_eq!(one, IpNet::parse("127.0.0.1/32").unwrap());
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let v6 = IpNet::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12:3456::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(IpNet::parse("::1").unwrap().contains(ip("::1")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(IpNet::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(!IpNet::parse("::/0").unwrap().contains(ip("8.8.8.8")));
        // Host bits past the prefix name the network the address is in.
        assert_eq!(
            IpNet::parse("192.168.1.7/16").unwrap(),
            IpNet::parse("192.168.0.0/16").unwrap()
        );
        assert_eq!(
            IpNet::parse("::ffff:10.0.0.0/104").unwrap(),
            IpNet::parse("10.0.0.0/8").unwrap()
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0",
            "host.example",
            "10.0.0.0/8/8",
            "[::1]",
            "10.0.0.1:80",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn proxies(header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(
            &["127.0.0.1".into(), "10.0.0.0/8".into(), "fd00::/8".into()],
            header,
        )
    }

    fn client(header: ForwardedHeader, lines: &[&'static str]) -> SocketAddr {
        let name = match header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(name, HeaderValue::from_static(line));
        }
        proxies(header).client("127.0.0.1:5000".parse().unwrap(), &headers)
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right_past_trusted_proxies() {
        let xff =
            |lines: &[&'static str]| client(ForwardedHeader::XForwardedFor, lines).to_string();
        assert_eq!(xff(&["1.2.3.4"]), "1.2.3.4:0");
        assert_eq!(xff(&["1.2.3.4, 127.0.0.1"]), "1.2.3.4:0");
        assert_eq!(xff(&["1.2.3.4,10.0.0.7 , 127.0.0.1"]), "1.2.3.4:0");
        // What the client wrote left of its own address is never read.
        assert_eq!(xff(&["6.6.6.6, 1.2.3.4"]), "1.2.3.4:0");
        assert_eq!(xff(&["6.6.6.6", "1.2.3.4, 10.0.0.1"]), "1.2.3.4:0");
        assert_eq!(xff(&["2001:db8::1"]), "[2001:db8::1]:0");
        assert_eq!(xff(&["[2001:db8::1]:443"]), "[2001:db8::1]:443");
        assert_eq!(xff(&["[2001:db8::1]"]), "[2001:db8::1]:0");
        assert_eq!(xff(&["1.2.3.4:5678"]), "1.2.3.4:5678");
        assert_eq!(xff(&["::ffff:1.2.3.4"]), "1.2.3.4:0");
        // Only trusted proxies all along: the leftmost.
        assert_eq!(xff(&["10.0.0.9, 127.0.0.1"]), "10.0.0.9:0");
        // No header, or nothing usable at the right end: the proxy itself.
        assert_eq!(xff(&[]), "127.0.0.1:5000");
        for garbage in [
            "",
            "unknown",
            "1.2.3.4, unknown",
            "1.2.3.4, ",
            "1.2.3.4,,",
            "1.2.3.4, 300.1.1.1",
            "1.2.3.4, [::1",
            "1.2.3.4, host.example",
            "1.2.3.4, 1.2.3.4 5.6.7.8",
        ] {
            assert_eq!(xff(&[garbage]), "127.0.0.1:5000", "{garbage:?}");
        }
        // Garbage past a trusted hop stops at that hop, never further left.
        assert_eq!(xff(&["1.2.3.4, garbage, 10.0.0.1"]), "10.0.0.1:0");
        // Bytes that are not text.
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4, \xff\xfe").unwrap(),
        );
        let peer = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            proxies(ForwardedHeader::XForwardedFor).client(peer, &headers),
            peer
        );
    }

    #[test]
    fn forwarded_for_is_walked_the_same_way() {
        let fwd = |lines: &[&'static str]| client(ForwardedHeader::Forwarded, lines).to_string();
        assert_eq!(fwd(&["for=1.2.3.4"]), "1.2.3.4:0");
        assert_eq!(fwd(&["For=\"1.2.3.4:80\";proto=https"]), "1.2.3.4:80");
        assert_eq!(fwd(&["for=\"[::1]:8080\""]), "[::1]:8080");
        assert_eq!(
            fwd(&["for=\"[2001:db8:cafe::17]:4711\""]),
            "[2001:db8:cafe::17]:4711"
        );
        assert_eq!(fwd(&["for=\"[2001:db8::17]\""]), "[2001:db8::17]:0");
        assert_eq!(
            fwd(&["for=6.6.6.6, for=1.2.3.4;by=10.0.0.1, for=10.0.0.2;proto=https"]),
            "1.2.3.4:0"
        );
        assert_eq!(fwd(&["for=1.2.3.4", "for=\"[fd00::5]:1\""]), "1.2.3.4:0");
        for garbage in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=\"1.2.3.4",
            "for=\"1.2.3.4,5.6.7.8\"",
            "for=1.2.3.4, for=",
            "for",
            "1.2.3.4",
        ] {
            assert_eq!(fwd(&[garbage]), "127.0.0.1:5000", "{garbage:?}");
        }
    }

    #[test]
    fn ipv6_in_forwarded_resolves_when_the_hop_is_not_trusted() {
        let trusted = TrustedProxies::new(&["10.0.0.1".into()], ForwardedHeader::Forwarded);
        let mut headers = HeaderMap::new();
        headers.insert("forwarded", HeaderValue::from_static("for=\"[::1]:8080\""));
        let peer: SocketAddr = "10.0.0.1:1".parse().unwrap();
        assert_eq!(
            trusted.client(peer, &headers),
            "[::1]:8080".parse().unwrap()
        );
        // The other header is not read.
        let mut other = HeaderMap::new();
        other.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        assert_eq!(trusted.client(peer, &other), peer);
    }
}
