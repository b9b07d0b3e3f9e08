//! Who may use the server, checked in front of every endpoint: the Host header (DNS
//! rebinding), the Origin of requests from web pages (CORS, off unless configured), the API
//! key, and JSON bodies on POST. Also counts every request for `/metrics` and logs those that
//! no handler logs itself.

use super::api::ApiError;
use super::metrics::{Metrics, endpoint};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use subtle::ConstantTimeEq;

/// The access rules, from the command line.
pub struct Access {
    pub api_key: Option<String>,
    /// Host names accepted besides IP addresses and localhost, lowercase, without port.
    pub allowed_hosts: Vec<String>,
    /// Origins whose web pages may call the server; `*` for any.
    pub cors_origins: Vec<String>,
}

/// What the middleware needs.
pub struct Front {
    pub access: Access,
    pub metrics: Arc<Metrics>,
    /// Set once shutdown begins: new requests get 503.
    pub draining: Arc<AtomicBool>,
}

/// The id of a request, for its log line and its job; set on every request that passes.
#[derive(Clone, Copy, Debug)]
pub struct RequestId(pub u64);

/// Marks a response whose handler logs the request itself (when it ends: a stream ends long
/// after its response starts).
#[derive(Clone, Copy, Debug)]
pub struct Logged;

/// The host part of a Host header: `[::1]:8080` -> `::1`, `Example.com:80` -> `example.com`.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Access {
    /// Normalizes the configured names once.
    pub fn new(api_key: Option<String>, hosts: &[String], origins: &[String]) -> Access {
        Access {
            api_key,
            allowed_hosts: hosts.iter().map(|h| host_name(h)).collect(),
            cors_origins: origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// A Host header names this server when it is an IP address (what a browser shows as the
    /// page's origin, so no rebinding), localhost, or a configured name. A name that
    /// resolves here by other means (DNS rebinding: a page on attacker.example whose name
    /// now points at 127.0.0.1) is refused.
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.allowed_hosts.iter().any(|h| h == "*" || *h == name)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        self.cors_origins.iter().any(|o| o == "*" || *o == origin)
    }

    /// Compares the bearer token with the key in constant time (the time taken says nothing
    /// about how much of a guess was right).
    fn key_matches(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
        else {
            return Err(ApiError::unauthorized(
                "this server needs an API key: send `Authorization: Bearer KEY`",
            ));
        };
        if bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("incorrect API key"))
        }
    }
}

/// What the front does with a request.
enum Admit {
    Pass,
    /// A CORS preflight from an allowed origin: answered here.
    Preflight,
    Refuse(ApiError),
}

impl Front {
    fn admit(&self, req: &Request) -> Admit {
        let headers = req.headers();
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(host) = text(header::HOST)
            && !self.access.host_allowed(host)
        {
            return Admit::Refuse(ApiError::forbidden(
                "host_not_allowed",
                format!(
                    "Host `{host}` is not served here; start the server with --allowed-host {} \
                     to accept it",
                    host_name(host)
                ),
            ));
        }
        // Browsers send Origin with every cross-site request, the simple ones (a form post,
        // which no preflight guards) included; other clients do not send it.
        if let Some(origin) = text(header::ORIGIN)
            && !self.access.origin_allowed(origin)
        {
            return Admit::Refuse(ApiError::forbidden(
                "origin_not_allowed",
                format!(
                    "requests from web pages of `{origin}` are refused; start the server with \
                     --cors-origin {origin} to allow them"
                ),
            ));
        }
        if req.method() == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Admit::Preflight;
        }
        if req.uri().path() != "/health"
            && let Err(e) = self.access.key_matches(headers)
        {
            return Admit::Refuse(e);
        }
        if req.method() == Method::POST
            && let Some(kind) = headers.get(header::CONTENT_TYPE)
        {
            let kind = String::from_utf8_lossy(kind.as_bytes());
            let media = kind.split(';').next().unwrap_or("").trim();
            if !media.eq_ignore_ascii_case("application/json") {
                return Admit::Refuse(ApiError::unsupported_media_type(&kind));
            }
        }
        if self.draining.load(Ordering::Relaxed) {
            return Admit::Refuse(ApiError::shutting_down());
        }
        Admit::Pass
    }
}

fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

/// The middleware in front of every endpoint.
pub async fn front(State(f): State<Arc<Front>>, mut req: Request, next: Next) -> Response {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let start = Instant::now();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut response = match f.admit(&req) {
        Admit::Refuse(e) => e.into_response(),
        Admit::Preflight => preflight(),
        Admit::Pass => {
            req.extensions_mut().insert(RequestId(id));
            next.run(req).await
        }
    };
    if let Some(origin) = origin
        && f.access
            .origin_allowed(&String::from_utf8_lossy(origin.as_bytes()))
    {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    let status = response.status().as_u16();
    f.metrics.count_request(endpoint(&path), status);
    // Polled endpoints stay out of the log unless they fail.
    let polled = (path == "/health" || path == "/metrics") && status < 400;
    if response.extensions().get::<Logged>().is_none() && !polled {
        super::log_line!(
            "[{id}] {method} {path} {status} | {:.3} s",
            start.elapsed().as_secs_f64()
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ips_and_localhost_pass_other_names_need_configuring() {
        let a = Access::new(None, &["Models.Example:443".into()], &[]);
        for ok in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.0.0.7",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost",
            "models.example",
            "models.example.:8080",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in [
            "attacker.example:8080",
            "127.0.0.1.nip.io",
            "localhost.evil",
        ] {
            assert!(!a.host_allowed(bad), "{bad}");
        }
        assert!(Access::new(None, &["*".into()], &[]).host_allowed("anything.example"));
    }

    #[test]
    fn origins_must_be_listed() {
        let a = Access::new(None, &[], &["https://App.example/".into()]);
        assert!(a.origin_allowed("https://app.example"));
        assert!(!a.origin_allowed("https://evil.example"));
        assert!(!a.origin_allowed("null"));
        assert!(!Access::new(None, &[], &[]).origin_allowed("http://localhost:3000"));
    }

    #[test]
    fn the_key_is_a_bearer_token() {
        let a = Access::new(Some("s3cret".into()), &[], &[]);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            a.key_matches(&h).is_ok()
        };
        assert!(with("Bearer s3cret") && with("bearer  s3cret "));
        assert!(!with("Bearer s3cre") && !with("Bearer s3cret2") && !with("Basic s3cret"));
        assert!(a.key_matches(&HeaderMap::new()).is_err());
        assert!(
            Access::new(None, &[], &[])
                .key_matches(&HeaderMap::new())
                .is_ok()
        );
    }

    #[test]
    fn the_key_is_compared_in_constant_time() {
        // `==` on strings returns at the first differing byte, so its timing tells a guesser
        // how many leading bytes are right; `ct_eq` looks at every byte whatever they hold.
        let source = include_str!("access.rs");
        let start = source.find("fn key_matches").expect("key_matches");
        let end = start + source[start..].find("\n    }\n").expect("its end");
        let body = &source[start..end];
        assert!(body.contains(".ct_eq(key.as_bytes())"), "{body}");
        assert!(
            !body.contains("== key") && !body.contains("key =="),
            "{body}"
        );
    }
}
