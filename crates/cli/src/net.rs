//! Outbound HTTP for the CLI and the conditioner, without a `curl`
//! subprocess (whose URL globbing turned `http://h/[1-100000].mp4` into a
//! hundred thousand requests, and whose stderr told an org what answered
//! on the conditioner's network).
//!
//! Two agents:
//! - [`Api`]: the admin API the operator configured (trusted; may be on
//!   loopback in local dev).
//! - [`fetch_source`]: an ad server's creative (untrusted). The name is
//!   resolved once by our resolver, every address is vetted *after*
//!   resolution (private, loopback, link-local, CGNAT, the metadata
//!   address, NAT64/6to4/IPv4-mapped forms, unspecified: `config::is_private_ip`)
//!   and the connection goes only to vetted addresses, so neither DNS
//!   rebinding nor a CNAME to 169.254.169.254 reaches inside. Redirects are
//!   followed by hand, each hop checked the same way; one deadline and one
//!   size cap hold for the whole transfer; failures are categories.

use crate::ingest::Failure;
use cf_ssai_core::ads::conditioning::FailureCategory;
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resolves a name and keeps only the addresses the policy allows; notes
/// when it refused one (the failure is then "refused", not "unreachable").
struct Vetting {
    allow_private: String,
    refused: Arc<AtomicBool>,
}

impl ureq::Resolver for Vetting {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let host = netloc
            .rsplit_once(':')
            .map_or(netloc, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let all: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        let allowed: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|a| address_allowed(a.ip(), host, &self.allow_private))
            .collect();
        if allowed.is_empty() && !all.is_empty() {
            self.refused.store(true, Ordering::SeqCst);
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "every address of the name is private",
            ));
        }
        Ok(allowed)
    }
}

/// A resolved address is allowed when it is public, or private but named
/// (by address, or by the host name) in the deployer's allow-list
/// (`true`: any; local dev allows `127.0.0.1`).
pub fn address_allowed(ip: std::net::IpAddr, host: &str, allow: &str) -> bool {
    !cf_ssai_core::control::config::is_private_ip(ip)
        || cf_ssai_core::control::config::private_host_allowed(allow, &ip.to_string())
        || cf_ssai_core::control::config::private_host_allowed(allow, host)
}

fn fail(category: FailureCategory, detail: impl Into<String>) -> Failure {
    Failure::new(category, detail)
}

/// Download `url` to `out`: every hop's URL checked by its name and every
/// connection by its resolved address, at most 5 redirects, `max_bytes`
/// and `timeout` for the whole transfer. Failures carry a category and our
/// own words only; the transport's are logged here.
pub fn fetch_source(
    url: &str,
    out: &Path,
    max_bytes: u64,
    timeout: Duration,
    allow_private: &str,
) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    let refused = Arc::new(AtomicBool::new(false));
    let agent = ureq::AgentBuilder::new()
        .resolver(Vetting {
            allow_private: allow_private.to_string(),
            refused: refused.clone(),
        })
        .redirects(0)
        .timeout_connect(Duration::from_secs(10))
        .user_agent("cf-ssai-conditioner")
        .build();
    let too_large = || {
        fail(
            FailureCategory::SourceTooLarge,
            format!("over the {max_bytes}-byte limit"),
        )
    };
    let mut url = cf_ssai_core::control::config::check_url_allowing(url, allow_private)
        .map_err(|e| fail(FailureCategory::SourceRefused, e.to_string()))?;
    for _hop in 0..=5 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(
                FailureCategory::SourceUnreachable,
                "the download timed out",
            ));
        }
        let resp = match agent.get(url.as_str()).timeout(left).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) => {
                return Err(fail(FailureCategory::SourceGone, format!("HTTP {code}")))
            }
            Err(ureq::Error::Status(code, _)) => {
                return Err(fail(
                    FailureCategory::SourceUnreachable,
                    format!("HTTP {code}"),
                ))
            }
            Err(ureq::Error::Transport(t)) => {
                log_transport(url.as_str(), &t.to_string());
                if refused.load(Ordering::SeqCst) {
                    return Err(fail(
                        FailureCategory::SourceRefused,
                        "the source's name resolves to a private address",
                    ));
                }
                return Err(fail(
                    FailureCategory::SourceUnreachable,
                    if Instant::now() >= deadline {
                        "the download timed out"
                    } else {
                        "the source did not answer"
                    },
                ));
            }
        };
        match resp.status() {
            200 => {}
            301 | 302 | 303 | 307 | 308 => {
                let next = resp
                    .header("Location")
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| {
                        fail(FailureCategory::SourceGone, "a redirect without a Location")
                    })?;
                url =
                    cf_ssai_core::control::config::check_url_allowing(next.as_str(), allow_private)
                        .map_err(|e| fail(FailureCategory::SourceRefused, e.to_string()))?;
                continue;
            }
            code => {
                return Err(fail(
                    FailureCategory::SourceGone,
                    format!("HTTP {code} (not a file)"),
                ))
            }
        }
        if resp
            .header("Content-Length")
            .and_then(|l| l.trim().parse::<u64>().ok())
            .is_some_and(|l| l > max_bytes)
        {
            return Err(too_large());
        }
        let mut file = std::fs::File::create(out)
            .map_err(|e| fail(FailureCategory::EncodeFailed, format!("work file: {e}")))?;
        // One byte over the cap is enough to know.
        let mut body = resp.into_reader().take(max_bytes.saturating_add(1));
        let n = std::io::copy(&mut body, &mut file).map_err(|e| {
            log_transport(url.as_str(), &e.to_string());
            fail(
                FailureCategory::SourceUnreachable,
                if Instant::now() >= deadline {
                    "the download timed out"
                } else {
                    "the transfer broke off"
                },
            )
        })?;
        file.flush()
            .map_err(|e| fail(FailureCategory::EncodeFailed, format!("work file: {e}")))?;
        if n > max_bytes {
            return Err(too_large());
        }
        return Ok(());
    }
    Err(fail(FailureCategory::SourceGone, "more than 5 redirects"))
}

fn log_transport(url: &str, err: &str) {
    eprintln!(
        "{}",
        serde_json::json!({"event": "conditioning_download_error", "url": url, "error": err})
    );
}

/// The admin API, with the operator's token.
pub struct Api {
    agent: ureq::Agent,
    token: String,
}

impl Api {
    pub fn new(token: &str) -> Api {
        Api {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .user_agent("cf-ssai-cli")
                .build(),
            token: token.to_string(),
        }
    }

    /// (status, body) of a JSON call; a transport failure is an error.
    pub fn call(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let req = self
            .agent
            .request(method, url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Content-Type", "application/json");
        let res = match body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        match res {
            Ok(r) => {
                let status = r.status();
                Ok((status, r.into_string().unwrap_or_default()))
            }
            Err(ureq::Error::Status(status, r)) => {
                Ok((status, r.into_string().unwrap_or_default()))
            }
            Err(ureq::Error::Transport(t)) => Err(format!("{url}: {t}")),
        }
    }

    /// PUT a file (a segment, a playlist, a registration body).
    pub fn put_file(&self, url: &str, file: &Path, content_type: &str) -> Result<(), String> {
        let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let res = self
            .agent
            .put(url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Content-Type", content_type)
            .send_bytes(&bytes);
        match res {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(status, r)) => Err(format!(
                "{url}: HTTP {status}: {}",
                r.into_string().unwrap_or_default()
            )),
            Err(ureq::Error::Transport(t)) => Err(format!("{url}: {t}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot HTTP server on loopback answering `reply` to every
    /// connection; the number of requests it saw.
    fn serve(reply: &'static [u8], max: usize) -> (u16, std::thread::JoinHandle<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(false).unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut n = 0;
            l.set_nonblocking(true).unwrap();
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end && n < max {
                if let Ok((mut s, _)) = l.accept() {
                    s.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(reply);
                    n += 1;
                } else {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            n
        });
        (port, h)
    }

    #[test]
    fn addresses_are_vetted_after_resolution() {
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let meta: std::net::IpAddr = "169.254.169.254".parse().unwrap();
        let pub_ip: std::net::IpAddr = "93.184.216.34".parse().unwrap();
        assert!(!address_allowed(lo, "ads.example", ""));
        assert!(!address_allowed(meta, "ads.example", "127.0.0.1"));
        assert!(address_allowed(lo, "ads.example", "127.0.0.1"));
        assert!(address_allowed(pub_ip, "ads.example", ""));
        for ip in [
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "100.64.0.1",
            "0.0.0.0",
            "::",
        ] {
            assert!(!address_allowed(ip.parse().unwrap(), "x", ""), "{ip}");
        }
    }

    #[test]
    fn a_name_that_resolves_to_loopback_is_refused_after_resolution() {
        // `localhost` resolves to 127.0.0.1 (and ::1) without DNS: the
        // resolver refuses it on its addresses, whatever the name says.
        let refused = Arc::new(AtomicBool::new(false));
        let v = Vetting {
            allow_private: String::new(),
            refused: refused.clone(),
        };
        let e = ureq::Resolver::resolve(&v, "localhost:8080").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(refused.load(Ordering::SeqCst));
        // Allowed by address in local dev.
        let v = Vetting {
            allow_private: "127.0.0.1".into(),
            refused: Arc::new(AtomicBool::new(false)),
        };
        let ok = ureq::Resolver::resolve(&v, "localhost:8080").unwrap();
        assert!(
            ok.iter().all(|a| a.ip().to_string() == "127.0.0.1"),
            "{ok:?}"
        );
    }

    #[test]
    fn this_machines_own_name_is_refused_end_to_end() {
        // The host's name passes every name check and resolves (through
        // /etc/hosts) to a loopback or private address: only the check
        // after resolution stops it. Skipped where the name does not
        // resolve to a private address.
        let Ok(name) = std::fs::read_to_string("/etc/hostname") else {
            return;
        };
        let name = name.trim().to_string();
        let Ok(addrs) = (name.as_str(), 80).to_socket_addrs() else {
            return;
        };
        let addrs: Vec<_> = addrs.collect();
        if addrs.is_empty()
            || addrs
                .iter()
                .any(|a| !cf_ssai_core::control::config::is_private_ip(a.ip()))
        {
            return;
        }
        if cf_ssai_core::control::config::check_url_allowing(&format!("http://{name}/"), "")
            .is_err()
        {
            return;
        }
        let (port, h) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1);
        let out = std::env::temp_dir().join(format!("cf-ssai-net-{}", std::process::id()));
        let e = fetch_source(
            &format!("http://{name}:{port}/x.mp4"),
            &out,
            1000,
            Duration::from_secs(2),
            "",
        )
        .unwrap_err();
        assert_eq!(e.category, FailureCategory::SourceRefused, "{e:?}");
        assert!(!e.detail.contains("os error"), "{e:?}");
        assert_eq!(h.join().unwrap(), 0, "nothing reached the server");
    }

    #[test]
    fn a_glob_url_is_one_request_and_limits_hold() {
        let (port, h) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 5);
        let out = std::env::temp_dir().join(format!("cf-ssai-net-glob-{}", std::process::id()));
        let url = format!("http://127.0.0.1:{port}/[1-100].mp4?{{a,b}}");
        fetch_source(&url, &out, 1000, Duration::from_secs(2), "127.0.0.1").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"hello");
        let e = fetch_source(&url, &out, 3, Duration::from_secs(2), "127.0.0.1").unwrap_err();
        assert_eq!(e.category, FailureCategory::SourceTooLarge);
        let _ = std::fs::remove_file(&out);
        assert_eq!(h.join().unwrap(), 2, "one request per fetch, no globbing");
    }

    #[test]
    fn a_redirect_to_a_private_address_is_refused() {
        let (port, h) = serve(
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n",
            1,
        );
        let out = std::env::temp_dir().join(format!("cf-ssai-net-redir-{}", std::process::id()));
        let e = fetch_source(
            &format!("http://127.0.0.1:{port}/x.mp4"),
            &out,
            1000,
            Duration::from_secs(2),
            "127.0.0.1",
        )
        .unwrap_err();
        assert_eq!(e.category, FailureCategory::SourceRefused, "{e:?}");
        assert_eq!(h.join().unwrap(), 1);
    }
}
