//! Network safety rules with no I/O: which URLs the product may fetch
//! (origins, VAST, decision APIs, tracking) and which hosts are private.
//! The bottom layer, beside `model`: beacons (ads), the control plane and
//! the workers' one outbound fetch all apply the same rules.

use std::net::{IpAddr, Ipv4Addr};

/// Why a URL may not be fetched. The messages are what an operator sees
/// (config field errors, fetch refusals), unchanged from the strings they
/// replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("not a URL: {0}")]
    NotAUrl(url::ParseError),
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("credentials in the URL are not allowed")]
    Credentials,
    #[error("URL has no host")]
    NoHost,
    /// A loopback/private/link-local address while none is allowed.
    #[error("loopback/private addresses are not allowed")]
    Private,
    /// A private host the deployment's policy does not list.
    #[error("{0}: loopback/private addresses are not allowed")]
    PrivateHost(String),
}

/// An origin, VAST or API URL we may fetch: http(s), a host, no
/// credentials, and (unless allowed) no loopback/private/link-local address.
pub fn check_origin_url(u: &str, private_ok: bool) -> Result<url::Url, UrlRefused> {
    let url = url::Url::parse(u).map_err(UrlRefused::NotAUrl)?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(UrlRefused::Scheme(url.scheme().to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefused::Credentials);
    }
    let host = url.host().ok_or(UrlRefused::NoHost)?;
    if !private_ok && is_private_host(&host) {
        return Err(UrlRefused::Private);
    }
    Ok(url)
}

/// A URL we may fetch under the deployment's `ALLOW_PRIVATE_ORIGINS`
/// policy: `"false"` (production: no private address), `"true"` (every
/// private address), or a comma-separated list of hosts that may be
/// private (local dev: `127.0.0.1`, where the demo origin and the test
/// servers listen; `localhost`, `[::1]`, `10.x`, the metadata address stay
/// refused). Checked on every hop of a redirect chain.
pub fn check_url_allowing(u: &str, allow: &str) -> Result<url::Url, UrlRefused> {
    let url = check_origin_url(u, true)?;
    let host = url.host().ok_or(UrlRefused::NoHost)?;
    let name = url.host_str().unwrap_or("");
    if is_private_host(&host) && !private_host_allowed(allow, name) {
        return Err(UrlRefused::PrivateHost(name.to_string()));
    }
    Ok(url)
}

/// Is `host` named by the `ALLOW_PRIVATE_ORIGINS` policy `allow`
/// (`"true"`, `"false"`/empty, or a comma-separated host list)?
pub fn private_host_allowed(allow: &str, host: &str) -> bool {
    match allow.trim() {
        "true" => true,
        "" | "false" => false,
        list => list.split(',').any(|h| h.trim().eq_ignore_ascii_case(host)),
    }
}

/// A host that names this machine or a private network: loopback, private,
/// link-local, CGNAT, the metadata address, and the IPv6 forms that embed
/// one of those (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`); names `localhost`, `*.localhost`, `*.local`,
/// `*.internal`, with or without the root's trailing dot.
pub fn is_private_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => is_private_ip(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => is_private_ip(IpAddr::V6(*ip)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d.is_empty()
                || d == "localhost"
                || d.ends_with(".localhost")
                || d.ends_with(".local")
                || d.ends_with(".internal")
                || d.ends_with(".localdomain")
        }
    }
}

pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_broadcast()
                || v.is_multicast()
                || o[0] == 0 // 0.0.0.0/8 ("this network"; 0.0.0.0 reaches loopback)
                || o[0] == 100 && (o[1] & 0xC0) == 64 // 100.64/10 CGNAT
                || o[0] == 192 && o[1] == 0 && o[2] == 0 // 192.0.0/24 IETF
                || o[0] == 198 && (o[1] & 0xFE) == 18 // 198.18/15 benchmarking
                || o[0] >= 240 // 240/4 reserved
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            let embedded_v4 = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || v.to_ipv4_mapped().is_some_and(|m| is_private_ip(IpAddr::V4(m)))
                // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks)
                || (s[..6] == [0; 6] && is_private_ip(IpAddr::V4(embedded_v4(s[6], s[7]))))
                // NAT64 64:ff9b::/96 and 64:ff9b:1::/48 reach the embedded IPv4
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                    && is_private_ip(IpAddr::V4(embedded_v4(s[6], s[7]))))
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                // 6to4 2002:a.b.c.d::/48 embeds the IPv4 in bits 16..48
                || (s[0] == 0x2002 && is_private_ip(IpAddr::V4(embedded_v4(s[1], s[2]))))
                // Teredo 2001::/32 hides a client address: refuse outright
                || (s[0] == 0x2001 && s[1] == 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_urls() {
        assert!(check_origin_url("https://origin.example/live/master.m3u8", false).is_ok());
        for bad in [
            "ftp://x/y",
            "https://user:pw@x/y",
            "http://127.0.0.1/x",
            "http://10.1.2.3/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest",
            "http://localhost:8080/x",
            "not a url",
            // The gaps an attacker tried (each passed before).
            "http://localhost./x",
            "http://LOCALHOST./x",
            "http://0.0.0.0:8787/x",
            "http://0.1.2.3/x",
            "http://[64:ff9b::7f00:1]/x",
            "http://[64:ff9b::a00:1]/x",
            "http://[2002:7f00:1::]/x",
            "http://[2002:c0a8:101::1]/x",
            "http://[::127.0.0.1]/x",
            "http://[::10.0.0.1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://2130706433/x", // 127.0.0.1 in decimal
            "http://0x7f.1/x",
            "http://[fec0::1]/x",
            "http://224.0.0.1/x",
            "http://255.255.255.255/x",
            "http://198.18.0.1/x",
            "http://metadata.google.internal/x",
        ] {
            assert!(check_origin_url(bad, false).is_err(), "{bad}");
        }
        for good in [
            "http://[64:ff9b::808:808]/x", // NAT64 of 8.8.8.8
            "http://[2002:808:808::]/x",   // 6to4 of 8.8.8.8
            "https://cdn.example.com./x",
            "http://1.1.1.1/x",
        ] {
            assert!(check_origin_url(good, false).is_ok(), "{good}");
        }
        assert!(check_origin_url("http://127.0.0.1:9000/x", true).is_ok());
    }

    #[test]
    fn private_policy_lists_hosts() {
        assert!(check_url_allowing("http://127.0.0.1:9/x", "127.0.0.1").is_ok());
        assert!(check_url_allowing("http://127.0.0.1:9/x", "false").is_err());
        assert!(check_url_allowing("http://10.0.0.1/x", "true").is_ok());
        for bad in [
            "http://localhost:9/x",
            "http://[::1]:9/x",
            "http://169.254.169.254/",
            "http://10.0.0.1/",
        ] {
            assert!(check_url_allowing(bad, "127.0.0.1").is_err(), "{bad}");
        }
        assert!(check_url_allowing("https://ads.example/vast", "127.0.0.1").is_ok());
    }

    #[test]
    fn refusals_read_as_before() {
        let m = |u: &str, allow: &str| check_url_allowing(u, allow).unwrap_err().to_string();
        assert_eq!(
            m("ftp://x/y", "false"),
            "scheme \"ftp\" is not http or https"
        );
        assert_eq!(
            m("http://10.0.0.1/x", "127.0.0.1"),
            "10.0.0.1: loopback/private addresses are not allowed"
        );
        assert_eq!(
            check_origin_url("http://[::1]/", false)
                .unwrap_err()
                .to_string(),
            "loopback/private addresses are not allowed"
        );
        assert!(m("not a url", "false").starts_with("not a URL: "));
    }
}
