//! The outbound network guard: webhook URLs (and, later, delivery endpoints) are
//! users' strings, so a request to one must not reach the server's own network —
//! loopback, private ranges, link-local, carrier-grade NAT, unique-local IPv6, or a
//! cloud provider's metadata service (server-side request forgery, OWASP SSRF
//! prevention). The host name is resolved here, every address is checked, and the
//! connection is pinned to the checked address (`reqwest::ClientBuilder::resolve`),
//! so a DNS answer that changes between check and connect (DNS rebinding) cannot slip
//! through; redirects are never followed.
//!
//! `network.allow_private_targets = true` turns the refusal off for on-premises
//! installs and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::Url;

/// Why an address may not be connected to, or `None` when it is a public address.
/// Ranges from IANA's special-purpose registries (RFC 6890 and successors).
pub fn refused_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and the
            // NAT64 well-known prefix (64:ff9b::/96) carry an IPv4 address.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            // 6to4 (2002::/16) carries an IPv4 address in bits 16-48.
            if s[0] == 0x2002 {
                return refused_v4(embedded(s[1], s[2]));
            }
            // The local-use NAT64 prefix (RFC 8215) translates to anything.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                return Some("local-use NAT64 (64:ff9b:1::/48)");
            }
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return refused_v4(v4);
            }
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified address")
            } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
                // ::a.b.c.d, the deprecated IPv4-compatible form.
                refused_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ))
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("cloud metadata service")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("unique-local (private) IPv6")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (s[0] & 0xffc0) == 0xfec0 {
                Some("site-local (deprecated private) IPv6")
            } else if (s[0] & 0xff00) == 0xff00 {
                Some("multicast")
            } else if s[0] == 0x2001 && s[1] == 0xdb8 {
                Some("documentation range")
            } else {
                None
            }
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    // AWS/GCP/Azure IMDS, Alibaba's metadata service, Azure's wire server.
    if ip == Ipv4Addr::new(169, 254, 169, 254)
        || ip == Ipv4Addr::new(100, 100, 100, 200)
        || ip == Ipv4Addr::new(168, 63, 129, 16)
    {
        Some("cloud metadata service")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private network")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("carrier-grade NAT (shared address space)")
    } else if o[0] == 0 {
        Some("\"this network\" (0.0.0.0/8)")
    } else if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some("broadcast, multicast or reserved")
    } else if ip.is_documentation() || (o[0] == 198 && (o[1] & 0xfe) == 18) {
        Some("documentation or benchmarking range")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignments")
    } else {
        None
    }
}

/// Why a URL cannot be used as an outbound target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute `http://` or `https://` URL with a host.
    #[error("{0}")]
    BadUrl(String),
    /// The host name did not resolve.
    #[error("the host {host} does not resolve: {reason}")]
    Unresolvable {
        /// The host.
        host: String,
        /// The resolver's message.
        reason: String,
    },
    /// An address the host resolves to is refused.
    #[error(
        "{host} resolves to {ip}, a {reason} address; evidex does not send to its own network unless network.allow_private_targets = true"
    )]
    Refused {
        /// The host.
        host: String,
        /// The refused address.
        ip: IpAddr,
        /// Which kind of address it is.
        reason: &'static str,
    },
}

/// A checked target: the URL and the one address to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: Url,
    /// The host name of the URL.
    pub host: String,
    /// The address checked, which the connection must use.
    pub addr: SocketAddr,
}

/// Checks that `url` is an http(s) URL without credentials.
pub fn parse_target_url(url: &str) -> Result<Url, TargetError> {
    let u = Url::parse(url).map_err(|e| TargetError::BadUrl(format!("url: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(TargetError::BadUrl(format!(
            "url: the scheme must be http or https, not {}",
            u.scheme()
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(TargetError::BadUrl("url: no host".to_string()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(TargetError::BadUrl(
            "url: credentials in the URL are not allowed (they would be stored and shown)"
                .to_string(),
        ));
    }
    Ok(u)
}

/// Resolves `url`'s host (within `timeout`) and checks every address it resolves to;
/// returns the first address to connect to. With `allow_private`, nothing is refused.
pub async fn resolve_target(
    url: &str,
    allow_private: bool,
    timeout: Duration,
) -> Result<Target, TargetError> {
    let u = parse_target_url(url)?;
    let host = u.host_str().unwrap_or_default().to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let lookup = tokio::net::lookup_host((bare.as_str(), port));
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => {
                    return Err(TargetError::Unresolvable {
                        host,
                        reason: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(TargetError::Unresolvable {
                        host,
                        reason: format!("no answer within {} s", timeout.as_secs()),
                    });
                }
            }
        }
    };
    let Some(first) = addrs.first().copied() else {
        return Err(TargetError::Unresolvable {
            host,
            reason: "no addresses".to_string(),
        });
    };
    if !allow_private {
        // Every address, not just the first: a client may fall back to any of them.
        for a in &addrs {
            if let Some(reason) = refused_reason(a.ip()) {
                return Err(TargetError::Refused {
                    host,
                    ip: a.ip(),
                    reason,
                });
            }
        }
    }
    Ok(Target {
        url: u,
        host: bare,
        addr: first,
    })
}

/// An HTTP client that connects only to `target.addr` (the checked address), never
/// follows redirects, and gives up after `timeout`.
pub fn pinned_client(target: &Target, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .resolve(&target.host, target.addr)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .no_proxy()
        .build()
}

/// Like [`pinned_client`] for transfers of any size (S3 uploads): `timeout` bounds
/// the connection and each wait for the other side (no bytes moving), not the whole
/// request, so a large part on a slow link is not cut off while it progresses.
pub fn pinned_transfer_client(
    target: &Target,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .resolve(&target.host, target.addr)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .no_proxy()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_kind_of_internal_address() {
        let refused = [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "carrier-grade"),
            ("100.127.255.254", "carrier-grade"),
            ("0.0.0.0", "this network"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("192.0.2.1", "documentation"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "metadata"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "metadata"),
            ("64:ff9b::a00:1", "private"),
            ("::127.0.0.1", "loopback"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a9fe:a9fe::1", "metadata"),
            ("64:ff9b:1::a00:1", "NAT64"),
            ("fec0::1", "site-local"),
            ("168.63.129.16", "metadata"),
            ("ff02::1", "multicast"),
        ];
        for (ip, want) in refused {
            let reason = refused_reason(ip.parse().unwrap());
            assert!(
                reason.is_some_and(|r| r.contains(want)),
                "{ip}: {reason:?}, want {want}"
            );
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(refused_reason(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_before_any_connection() {
        let t = Duration::from_secs(2);
        for (url, want) in [
            ("ftp://example.com/x", "scheme"),
            ("http://user:pw@example.com/", "credentials"),
            ("not a url", "url:"),
            ("http://127.0.0.1:9/hook", "loopback"),
            ("http://[::1]:9/hook", "loopback"),
            ("http://169.254.169.254/latest/meta-data", "metadata"),
            ("http://localhost:9/hook", "loopback"),
        ] {
            let e = resolve_target(url, false, t).await.unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
        // Allowed on request (loopback only here: tests never touch other hosts).
        let ok = resolve_target("http://localhost:9/hook", true, t)
            .await
            .unwrap();
        assert!(ok.addr.ip().is_loopback());
        let e = resolve_target("http://no-such-host.invalid/", false, t)
            .await
            .unwrap_err();
        assert!(matches!(e, TargetError::Unresolvable { .. }), "{e}");
    }
}
