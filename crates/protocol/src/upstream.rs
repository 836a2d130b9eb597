//! Upstream URLs: where a reverse proxy (NGINX, `pxs nginx-config`) reaches a server's plain
//! HTTP port, e.g. `http://10.0.0.11:8081`. A node says its own in `hello` (`upstream_url`);
//! the coordinator stores it and `pxs nginx-config` writes it into NGINX's configuration. So it
//! is checked the same way everywhere, by [`parse`]: a scheme, a host and an optional port,
//! nothing that could change the meaning of the text it is written into.

/// A checked upstream URL, normalised (no trailing `/`, the scheme in lower case).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UpstreamUrl(String);

impl UpstreamUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest upstream URL taken.
pub const MAX_LEN: usize = 300;

/// `http://` or `https://`, then a host (a DNS name of letters, digits, `.` and `-`; an IPv4
/// address; or a bracketed IPv6 address) and an optional port (1 to 65535); a single trailing
/// `/` is allowed and dropped. No path, query, fragment, user or whitespace. The error says what
/// is wrong (without repeating the text: callers name the key and may quote it).
pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
    if text.len() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} characters"));
    }
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("not a URL like http://10.0.0.11:8081")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err("the scheme must be http or https".into());
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err("no host".into());
    }
    if let Some(bad) = authority
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')))
    {
        return Err(match bad {
            '/' | '?' | '#' => {
                "only a scheme, a host and a port: no path, query or fragment".to_owned()
            }
            '@' => "no user name or password".to_owned(),
            c => format!("`{}` is not allowed in a host and port", c.escape_default()),
        });
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or("an IPv6 address without its `]`")?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{addr}` is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("text after the IPv6 address")?),
        };
        (&authority[..addr.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if !host.starts_with('[') {
        let labels_ok = host
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'));
        if host.contains(['[', ']', ':']) || !labels_ok || host.len() > 253 {
            return Err(format!("`{host}` is not a host name or an IP address"));
        }
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(format!("`{p}` is not a port (1 to 65535)")),
        }
    }
    Ok(UpstreamUrl(format!("{scheme}://{authority}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_are_taken_and_normalised() {
        for (text, want) in [
            ("http://10.0.0.11:8081", "http://10.0.0.11:8081"),
            ("http://10.0.0.11:8081/", "http://10.0.0.11:8081"),
            ("HTTPS://gpu-1.internal", "https://gpu-1.internal"),
            ("http://[::1]:8090", "http://[::1]:8090"),
            ("http://[fd00::11]", "http://[fd00::11]"),
            ("http://localhost:1", "http://localhost:1"),
        ] {
            assert_eq!(parse(text).map(|u| u.0), Ok(want.to_owned()), "{text}");
        }
    }

    #[test]
    fn anything_that_could_change_a_config_is_refused() {
        for (text, why) in [
            ("10.0.0.11:8081", "not a URL"),
            ("ftp://h", "scheme"),
            ("http://", "no host"),
            ("http://h/path", "no path"),
            ("http://h:80/x", "no path"),
            ("http://h?x=1", "no path"),
            ("http://u:p@h", "no user"),
            ("http://h;}", "`;`"),
            ("http://h}", "`}`"),
            ("http://h:80 ; x", "` `"),
            ("http://h\n", "`\\n`"),
            ("http://$host", "`$`"),
            ("http://h\"", "`\\\"`"),
            ("http://h:0", "not a port"),
            ("http://h:65536", "not a port"),
            ("http://h:", "not a port"),
            ("http://h:+80", "`+`"),
            ("http://-h", "not a host"),
            ("http://h..x", "not a host"),
            ("http://[::1", "without its"),
            ("http://[zz]:1", "not an IPv6"),
            ("http://[::1]x", "text after"),
            ("http://a:1:2", "not a port"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e} (wanted {why})");
        }
        assert!(parse(&format!("http://{}", "a".repeat(400))).is_err());
    }
}
