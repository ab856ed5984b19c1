//! The HTTP side of `thoonk-server serve`: the WebSocket endpoint and static files.

use std::path::PathBuf;

use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tower_http::services::ServeDir;

use crate::gateway::{session, Shared};

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
pub fn router(
    shared: Shared,
    statics: &[StaticDir],
    demo_users: Option<serde_json::Value>,
) -> Router {
    let max_frame = shared.limits.max_frame;
    let mut router = Router::new()
        .route(
            "/ws",
            get(
                move |State(shared): State<Shared>, upgrade: WebSocketUpgrade| async move {
                    upgrade_socket(shared, upgrade, max_frame)
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
}

fn upgrade_socket(shared: Shared, upgrade: WebSocketUpgrade, max_frame: usize) -> Response {
    // Frames up to 4× the limit are read so that the client gets a `too_large`
    // error frame; beyond that the connection is cut.
    // A small read buffer per connection (the default is 128 KiB, allocated up
    // front): idle connections are what a gateway holds most of.
    upgrade
        .read_buffer_size(4 * 1024)
        .max_message_size(max_frame.saturating_mul(4))
        .on_upgrade(move |socket| session::serve(shared, socket))
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
}
