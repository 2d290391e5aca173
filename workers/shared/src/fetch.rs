//! Outbound fetches, all through one function: every URL (and every hop of
//! a redirect chain, at most [`MAX_REDIRECTS`]) is checked against the
//! deployment's private-address policy; one deadline covers the request,
//! the headers and the streamed body together; one size cap covers the
//! headers and the body together, enforced while streaming (a slow or
//! endless body is cut, never buffered whole first).

use futures::StreamExt;
use worker::*;

/// Redirect hops followed (each re-checked).
pub const MAX_REDIRECTS: usize = 5;
/// Default cap for a playlist, VAST document or JWKS.
pub const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug)]
pub enum FetchError {
    Timeout,
    Refused(String),
    TooLarge(usize),
    Failed(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Timeout => write!(f, "timed out"),
            FetchError::Refused(e) => write!(f, "refused: {e}"),
            FetchError::TooLarge(n) => write!(f, "response over the {n}-byte limit"),
            FetchError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// What one fetch asks for.
pub struct FetchSpec<'a> {
    pub url: &'a str,
    pub method: Method,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a str>,
    pub timeout_ms: u64,
    pub max_bytes: usize,
    /// `ALLOW_PRIVATE_ORIGINS` (see `cf_ssai_core::control::config::check_url_allowing`).
    pub allow_private: &'a str,
}

impl<'a> FetchSpec<'a> {
    pub fn get(url: &'a str, timeout_ms: u64, allow_private: &'a str) -> Self {
        FetchSpec {
            url,
            method: Method::Get,
            headers: &[],
            body: None,
            timeout_ms,
            max_bytes: DEFAULT_MAX_BYTES,
            allow_private,
        }
    }
}

/// A completed fetch: final status, URL after redirects, body.
pub struct Fetched {
    pub status: u16,
    pub url: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn text(self) -> std::result::Result<String, FetchError> {
        String::from_utf8(self.body).map_err(|_| FetchError::Failed("body is not UTF-8".into()))
    }
}

/// The one way out: see the module comment.
pub async fn fetch(spec: &FetchSpec<'_>) -> std::result::Result<Fetched, FetchError> {
    let controller = AbortController::default();
    let signal = controller.signal();
    let work = follow(spec, &signal);
    let delay = Delay::from(std::time::Duration::from_millis(spec.timeout_ms));
    futures::pin_mut!(work);
    futures::pin_mut!(delay);
    match futures::future::select(work, delay).await {
        futures::future::Either::Left((r, _)) => r,
        futures::future::Either::Right(_) => {
            controller.abort();
            Err(FetchError::Timeout)
        }
    }
}

/// The request hop by hop: each redirect target checked against the
/// private-address policy before it is fetched.
async fn follow(
    spec: &FetchSpec<'_>,
    signal: &AbortSignal,
) -> std::result::Result<Fetched, FetchError> {
    let check = |u: &str| {
        cf_ssai_core::control::config::check_url_allowing(u, spec.allow_private)
            .map_err(|e| FetchError::Refused(e.to_string()))
    };
    let mut url = check(spec.url)?;
    let mut method = spec.method.clone();
    let mut body = spec.body;
    for _hop in 0..=MAX_REDIRECTS {
        let mut resp = send(spec, &url, &method, body, signal).await?;
        let status = resp.status_code();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let loc = resp
                .headers()
                .get("Location")
                .ok()
                .flatten()
                .ok_or_else(|| FetchError::Failed(format!("HTTP {status} without Location")))?;
            let next = url
                .join(&loc)
                .map_err(|e| FetchError::Failed(format!("bad Location: {e}")))?;
            url = check(next.as_str())?;
            // RFC 9110 §15.4: 303 (and 301/302 after POST, as browsers do)
            // continue as GET without a body.
            if status == 303 || (matches!(status, 301 | 302) && method == Method::Post) {
                method = Method::Get;
                body = None;
            }
            continue;
        }
        let content_type = resp.headers().get("Content-Type").ok().flatten();
        let body = read_capped(&mut resp, spec.max_bytes).await?;
        return Ok(Fetched {
            status,
            url: url.to_string(),
            content_type,
            body,
        });
    }
    Err(FetchError::Refused(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// One hop, redirects not followed (the caller checks each target).
async fn send(
    spec: &FetchSpec<'_>,
    url: &Url,
    method: &Method,
    body: Option<&str>,
    signal: &AbortSignal,
) -> std::result::Result<Response, FetchError> {
    let headers = Headers::new();
    for (k, v) in spec.headers {
        headers
            .set(k, v)
            .map_err(|e| FetchError::Failed(e.to_string()))?;
    }
    let mut init = RequestInit::new();
    init.with_method(method.clone())
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    if let Some(b) = body {
        init.with_body(Some(b.into()));
    }
    let req = Request::new_with_init(url.as_str(), &init)
        .map_err(|e| FetchError::Failed(e.to_string()))?;
    Fetch::Request(req)
        .send_with_signal(signal)
        .await
        .map_err(|e| FetchError::Failed(e.to_string()))
}

/// The body, headers included in the count, refused past `max_bytes`:
/// at once when the declared length is over, else while streaming.
async fn read_capped(
    resp: &mut Response,
    max_bytes: usize,
) -> std::result::Result<Vec<u8>, FetchError> {
    let mut used: usize = resp
        .headers()
        .entries()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    let declared = resp
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    if used + declared > max_bytes {
        return Err(FetchError::TooLarge(max_bytes));
    }
    let mut out = Vec::with_capacity(declared.min(max_bytes));
    if let Ok(mut stream) = resp.stream() {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| FetchError::Failed(e.to_string()))?;
            used += chunk.len();
            if used > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            out.extend_from_slice(&chunk);
        }
    }
    Ok(out)
}

/// GET a URL as text; non-2xx is an error naming the status.
pub async fn get_text(
    url: &str,
    timeout_ms: u64,
    allow_private: &str,
) -> std::result::Result<String, FetchError> {
    let f = fetch(&FetchSpec::get(url, timeout_ms, allow_private)).await?;
    if !f.ok() {
        return Err(FetchError::Failed(format!("HTTP {}", f.status)));
    }
    f.text()
}
