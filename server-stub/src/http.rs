//! The HTTP side of `thoonk-server serve`: the WebSocket endpoint and static files.
//!
//! Web hygiene: a browser may open `/ws` only from an allowed origin (the
//! gateway's own by default: the page and the socket share host and port;
//! clients that send no `Origin`, i.e. not browsers, are not affected); every
//! response carries `X-Content-Type-Options: nosniff`, a
//! `Content-Security-Policy` the demo passes, `Referrer-Policy` and
//! `X-Frame-Options`; a path longer than [`MAX_PATH`] gets 414 and one with a
//! segment no file name can have gets 404. An address may hold at most a few
//! connections that have not said `hello` yet (429 beyond).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::{ConnectInfo, Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tower_http::services::ServeDir;

use crate::gateway::limits::AddressSlots;
use crate::gateway::{session, SessionLimits, Shared};

/// The longest request path served, in bytes; longer ones get 414.
pub const MAX_PATH: usize = 2048;

/// The longest path segment looked up as a file, in bytes (a file name's limit).
const MAX_SEGMENT: usize = 255;

/// The policy every response carries: scripts, styles and connections from
/// the page's own origin only (`'wasm-unsafe-eval'` lets it compile its
/// WebAssembly), no plugins, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The gateway's web and connection limits, as `thoonk-server serve` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct WebArgs {
    /// An origin (`https://app.example.com`) allowed to open the WebSocket
    /// besides the gateway's own; `*` allows any. Repeatable. Clients that
    /// send no `Origin` header (not browsers) are always allowed.
    #[arg(
        long = "allow-origin",
        env = "THOONK_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub allow_origins: Vec<String>,
    /// Frames per second a connection may send on average.
    #[arg(long, env = "THOONK_FRAME_RATE", default_value_t = 200)]
    pub frame_rate: u32,
    /// Frames a connection may send at once above its rate.
    #[arg(long, env = "THOONK_FRAME_BURST", default_value_t = 2000)]
    pub frame_burst: u32,
    /// Connections one address may hold before their `hello` succeeded.
    #[arg(long, env = "THOONK_MAX_UNAUTHENTICATED", default_value_t = 64)]
    pub max_unauthenticated_per_address: usize,
    /// Bytes of events one connection may have queued; a client that reads
    /// slower than that is closed (code 4008).
    #[arg(long, env = "THOONK_MAX_QUEUED_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_queued_bytes: usize,
    /// Milliseconds a frame may wait on a client that does not read before
    /// the connection is closed (code 4008).
    #[arg(long, env = "THOONK_SEND_TIMEOUT_MS", default_value_t = 10_000)]
    pub send_timeout_ms: u64,
    /// Snapshot and replay reads run at once; the others wait their turn.
    #[arg(long, env = "THOONK_BIG_READS", default_value_t = 4)]
    pub big_reads: usize,
}

impl WebArgs {
    /// The session limits these flags set (the others at their defaults).
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            frame_rate: self.frame_rate,
            frame_burst: self.frame_burst,
            max_queued_bytes: self.max_queued_bytes,
            send_timeout: std::time::Duration::from_millis(self.send_timeout_ms),
            big_reads: self.big_reads.max(1),
            ..SessionLimits::default()
        }
    }

    /// The web options these flags set.
    pub fn web_options(&self) -> WebOptions {
        WebOptions {
            allow_origins: self.allow_origins.clone(),
            max_unauthenticated_per_address: self.max_unauthenticated_per_address,
        }
    }
}

/// Who may open the WebSocket, and how many half-open connections an address may hold.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// Origins allowed besides the gateway's own (`*`: any).
    pub allow_origins: Vec<String>,
    /// Connections one address may hold before their `hello` succeeded.
    pub max_unauthenticated_per_address: usize,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            max_unauthenticated_per_address: 64,
        }
    }
}

impl WebOptions {
    /// Whether a request with these headers may open the WebSocket: no
    /// `Origin` (not a browser), the gateway's own origin (its host and port
    /// are the request's `Host`), or one of [`WebOptions::allow_origins`].
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/');
        if self.allow_origins.iter().any(|allowed| {
            allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin)
        }) {
            return true;
        }
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
    }
}

/// A folder served over HTTP under a URL prefix (`/` or `/pkg`, say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticDir {
    /// The URL prefix, starting with `/`.
    pub prefix: String,
    /// The folder.
    pub dir: PathBuf,
}

impl std::str::FromStr for StaticDir {
    type Err = String;

    /// Parses `DIR` (served at `/`) or `/PREFIX=DIR`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (prefix, dir) = match s.split_once('=') {
            Some((prefix, dir)) if prefix.starts_with('/') => (prefix.trim_end_matches('/'), dir),
            Some(_) => return Err(format!("{s:?}: the prefix before `=` must start with `/`")),
            None => ("", s),
        };
        if dir.is_empty() {
            return Err(format!("{s:?}: name a folder"));
        }
        Ok(Self {
            prefix: if prefix.is_empty() {
                "/".into()
            } else {
                prefix.into()
            },
            dir: dir.into(),
        })
    }
}

/// Builds the router: `GET /ws` upgrades to the sync protocol;
/// `GET /demo/users.json` lists `demo_users` when given (the demo's sign-in
/// picker; never give it in production: it holds tokens); everything else is
/// looked up in the static folders.
///
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
/// that the per-address cap applies.
pub fn router(
    shared: Shared,
    statics: &[StaticDir],
    demo_users: Option<serde_json::Value>,
    web: WebOptions,
) -> Router {
    let max_frame = shared.limits.max_frame;
    let slots = AddressSlots::new(web.max_unauthenticated_per_address);
    let mut router = Router::new()
        .route(
            "/ws",
            get(
                move |State(shared): State<Shared>,
                      headers: HeaderMap,
                      peer: Option<Extension<ConnectInfo<SocketAddr>>>,
                      upgrade: WebSocketUpgrade| async move {
                    if !web.origin_allowed(&headers) {
                        return (StatusCode::FORBIDDEN, "this origin may not connect")
                            .into_response();
                    }
                    let slot = match peer {
                        Some(Extension(ConnectInfo(addr))) => match slots.take(addr.ip()) {
                            Some(slot) => Some(slot),
                            None => {
                                return (
                                    StatusCode::TOO_MANY_REQUESTS,
                                    "too many connections from this address are not signed in",
                                )
                                    .into_response()
                            }
                        },
                        None => None,
                    };
                    upgrade_socket(shared, upgrade, max_frame, slot)
                },
            ),
        )
        .with_state(shared);
    if let Some(users) = demo_users {
        router = router.route(
            "/demo/users.json",
            get(move || async move { axum::Json(users) }),
        );
    }
    for dir in statics {
        let service = ServeDir::new(&dir.dir).append_index_html_on_directories(true);
        router = if dir.prefix == "/" {
            router.fallback_service(service)
        } else {
            router.nest_service(&dir.prefix, service)
        };
    }
    router
        .layer(middleware::from_fn(refuse_long_paths))
        .layer(middleware::map_response(security_headers))
}

/// 414 for a path longer than [`MAX_PATH`], 404 for one with a segment no
/// file can have (the file system would fail on it).
async fn refuse_long_paths(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.len() > MAX_PATH {
        return StatusCode::URI_TOO_LONG.into_response();
    }
    if path.split('/').any(|segment| segment.len() > MAX_SEGMENT) {
        return StatusCode::NOT_FOUND.into_response();
    }
    next.run(request).await
}

/// The headers every response carries.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn upgrade_socket(
    shared: Shared,
    upgrade: WebSocketUpgrade,
    max_frame: usize,
    slot: Option<crate::gateway::limits::SlotGuard>,
) -> Response {
    // Frames up to 4× the limit are read so that the client gets a `too_large`
    // error frame; beyond that the connection is cut.
    // A small read buffer per connection (the default is 128 KiB, allocated up
    // front): idle connections are what a gateway holds most of.
    upgrade
        .read_buffer_size(4 * 1024)
        .max_message_size(max_frame.saturating_mul(4))
        .on_upgrade(move |socket| session::serve(shared, socket, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_dirs_parse() {
        let plain: StaticDir = "www".parse().unwrap();
        assert_eq!(plain.prefix, "/");
        let nested: StaticDir = "/pkg/=pkg".parse().unwrap();
        assert_eq!(
            (nested.prefix.as_str(), nested.dir.to_str()),
            ("/pkg", Some("pkg"))
        );
        assert!("pkg=pkg".parse::<StaticDir>().is_err());
        assert!("/x=".parse::<StaticDir>().is_err());
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn origins_are_checked_against_the_served_one_and_the_allow_list() {
        let own = WebOptions::default();
        let host = (header::HOST, "127.0.0.1:8080");
        assert!(
            own.origin_allowed(&headers(std::slice::from_ref(&host))),
            "no Origin: not a browser"
        );
        for same in ["http://127.0.0.1:8080", "https://127.0.0.1:8080/"] {
            assert!(
                own.origin_allowed(&headers(&[host.clone(), (header::ORIGIN, same)])),
                "{same}"
            );
        }
        for other in [
            "http://127.0.0.1:8081",
            "http://evil.example",
            "null",
            "127.0.0.1:8080",
        ] {
            assert!(
                !own.origin_allowed(&headers(&[host.clone(), (header::ORIGIN, other)])),
                "{other}"
            );
        }
        let listed = WebOptions {
            allow_origins: vec!["https://app.example.com".into()],
            ..WebOptions::default()
        };
        let app = (header::ORIGIN, "https://APP.example.com");
        assert!(listed.origin_allowed(&headers(&[host.clone(), app])));
        let any = WebOptions {
            allow_origins: vec!["*".into()],
            ..WebOptions::default()
        };
        assert!(any.origin_allowed(&headers(&[(header::ORIGIN, "http://evil.example")])));
    }
}
