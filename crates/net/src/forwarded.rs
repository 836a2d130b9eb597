//! Trusted proxies: who the client of a request is when a reverse proxy (NGINX) stands in front
//! of the listener. The proxy's connection is the direct peer; it names the client in
//! `X-Forwarded-For` and the scheme the client used in `X-Forwarded-Proto`. Anyone can send
//! those headers, so they are believed only from a peer in the operator's list
//! (`trusted_proxies`), and then only as far as the chain of trusted proxies goes:
//!
//! - the peer is not trusted: the client is the peer, and both headers are ignored;
//! - the peer is trusted: `X-Forwarded-For` is read from the right (the entry the proxy next to
//!   us appended) to the left, skipping trusted addresses; the first untrusted one is the client
//!   (what a client put in front of it itself is never reached). If every entry is trusted, the
//!   left-most is the client. A malformed entry reached on the way, or more than
//!   [`MAX_HOPS`] entries, makes the whole header ignored (the client is the peer).
//!   `X-Forwarded-Proto` (`http` or `https`, its first value) says whether the client used TLS.

use axum::http::HeaderMap;
use std::net::IpAddr;

/// An address block, e.g. `10.0.0.0/8`, `127.0.0.1/32`, `::1/128`; a bare address is the block
/// of just it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_u32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_u128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask_u32(v: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        v & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_u128(v: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        v & (u128::MAX << (128 - u32::from(prefix)))
    }
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:10.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!("`{text}` is not an address or an address block like 10.0.0.0/8")
        })?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("`{text}`: the prefix length must be 0 to {max}")),
            },
        };
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4(mask_u32(u32::from(a), prefix).into()),
            IpAddr::V6(a) => IpAddr::V6(mask_u128(u128::from(a), prefix).into()),
        };
        if masked != addr {
            return Err(format!(
                "`{text}` has bits set after its prefix: did you mean {masked}/{prefix}?"
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// At most this many `X-Forwarded-For` entries are read; a longer chain is ignored.
pub const MAX_HOPS: usize = 32;

/// The proxies whose forwarding headers are believed (`trusted_proxies`). Empty by default:
/// nothing is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

/// Who a request comes from, as far as can be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer's, or the one a trusted proxy forwarded.
    pub ip: IpAddr,
    /// `Some(true)`: a trusted proxy says the client used https; `Some(false)`: http; `None`:
    /// nobody trusted said (the scheme of our own listener, plain HTTP, applies).
    pub https: Option<bool>,
}

impl TrustedProxies {
    /// Parses the operator's list; an error names `key[i]` and says what is wrong.
    pub fn parse<S: AsRef<str>>(key: &str, items: &[S]) -> Result<TrustedProxies, String> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_ref()
                    .trim()
                    .parse::<Cidr>()
                    .map_err(|e| format!("{key}[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// A comma-separated list (a flag or an environment variable); errors as [`Self::parse`].
    pub fn parse_list(key: &str, text: &str) -> Result<TrustedProxies, String> {
        let items: Vec<&str> = text.split(',').filter(|s| !s.trim().is_empty()).collect();
        Self::parse(key, &items)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn blocks(&self) -> &[Cidr] {
        &self.0
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that came from `peer` with `headers` (see the module's doc).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let peer = canonical(peer);
        let direct = Client {
            ip: peer,
            https: None,
        };
        if !self.trusts(peer) {
            return direct;
        }
        let https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
                "https" => Some(true),
                "http" => Some(false),
                _ => None,
            });
        let mut entries = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else {
                return Client { https, ..direct };
            };
            entries.extend(text.split(',').map(str::trim));
            if entries.len() > MAX_HOPS {
                return Client { https, ..direct };
            }
        }
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = forwarded_ip(entry) else {
                // A proxy we trust would not write this: believe none of the header.
                return Client { https, ..direct };
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Client { ip: client, https }
    }
}

/// One `X-Forwarded-For` entry: an address, an IPv4 address with a port, or a bracketed IPv6
/// address with or without a port.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    entry
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .and_then(|v| v.parse::<std::net::Ipv6Addr>().ok())
        .map(|v| canonical(IpAddr::V6(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse("trusted_proxies", list).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn blocks_parse_and_match() {
        let p = proxies(&["10.0.0.0/8", "127.0.0.1", "fd00::/16", "192.168.1.0/24"]);
        assert!(p.trusts(ip("10.200.3.4")));
        assert!(p.trusts(ip("127.0.0.1")));
        assert!(!p.trusts(ip("127.0.0.2")));
        assert!(p.trusts(ip("fd00:1::5")));
        assert!(p.trusts(ip("::ffff:192.168.1.7")), "IPv4 seen through IPv6");
        assert!(!p.trusts(ip("192.168.2.1")));
        assert!(proxies(&["0.0.0.0/0"]).trusts(ip("8.8.8.8")));
        assert!(!proxies(&["0.0.0.0/0"]).trusts(ip("::1")));
        assert!(TrustedProxies::default().is_empty());
        assert_eq!(
            TrustedProxies::parse_list("x", "127.0.0.1/32, ::1").unwrap(),
            proxies(&["127.0.0.1/32", "::1/128"])
        );
    }

    #[test]
    fn bad_blocks_are_refused_naming_the_entry() {
        for (list, want) in [
            (
                vec!["10.0.0.0/8", "nope"],
                "trusted_proxies[1]: `nope` is not an address",
            ),
            (
                vec!["10.0.0.0/33"],
                "trusted_proxies[0]: `10.0.0.0/33`: the prefix length",
            ),
            (vec!["10.0.0.1/8"], "did you mean 10.0.0.0/8?"),
            (vec!["::1/129"], "0 to 128"),
            (vec!["10.0.0.0/+8"], "prefix length"),
            (vec![""], "trusted_proxies[0]"),
        ] {
            let e = TrustedProxies::parse("trusted_proxies", &list).unwrap_err();
            assert!(e.contains(want), "{list:?}: {e}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            p.client(ip("198.51.100.1"), &h),
            Client {
                ip: ip("198.51.100.1"),
                https: None
            }
        );
        // Nothing is trusted by default.
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &h).ip,
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_right_most_untrusted_address() {
        let p = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        let client = |xff: &[&str]| {
            let pairs: Vec<_> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            p.client(ip("127.0.0.1"), &headers(&pairs)).ip
        };
        assert_eq!(client(&["203.0.113.9"]), ip("203.0.113.9"));
        // The client made up the first entries: only the one our proxy appended counts.
        assert_eq!(
            client(&["1.1.1.1, 2.2.2.2, 203.0.113.9"]),
            ip("203.0.113.9")
        );
        // Through two trusted proxies.
        assert_eq!(
            client(&["1.1.1.1, 203.0.113.9, 10.0.0.5"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&["1.1.1.1", "203.0.113.9, 10.0.0.5"]),
            ip("203.0.113.9")
        );
        // All trusted: the left-most.
        assert_eq!(client(&["10.0.0.7, 10.0.0.5"]), ip("10.0.0.7"));
        // Ports and brackets as some proxies write them.
        assert_eq!(client(&["203.0.113.9:4711"]), ip("203.0.113.9"));
        assert_eq!(client(&["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(client(&["[2001:db8::1]"]), ip("2001:db8::1"));
        // Garbage before the untrusted address is never reached.
        assert_eq!(client(&["garbage, 203.0.113.9"]), ip("203.0.113.9"));
        // Garbage where our proxy writes: believe nothing.
        assert_eq!(client(&["203.0.113.9, garbage"]), ip("127.0.0.1"));
        assert_eq!(client(&[""]), ip("127.0.0.1"));
        // No header: the proxy itself.
        assert_eq!(client(&[]), ip("127.0.0.1"));
        // Too long a chain: ignored.
        let long = vec!["10.0.0.1"; MAX_HOPS + 1].join(", ");
        assert_eq!(client(&[&long]), ip("127.0.0.1"));
    }

    #[test]
    fn the_scheme_comes_from_a_trusted_peer_only() {
        let p = proxies(&["127.0.0.1"]);
        let https = |peer: &str, proto: &str| {
            p.client(ip(peer), &headers(&[("x-forwarded-proto", proto)]))
                .https
        };
        assert_eq!(https("127.0.0.1", "https"), Some(true));
        assert_eq!(https("127.0.0.1", "HTTPS"), Some(true));
        assert_eq!(https("127.0.0.1", "http"), Some(false));
        assert_eq!(https("127.0.0.1", "https, http"), Some(true));
        assert_eq!(https("127.0.0.1", "gopher"), None);
        assert_eq!(https("127.0.0.2", "https"), None);
    }
}
