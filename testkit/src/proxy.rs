//! A TCP proxy on 127.0.0.1 in front of a Redis: a network between a server
//! process and Redis that a test can cut, or freeze right after a chosen reply.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::free_port;

struct ProxyState {
    upstream: u16,
    /// Bumped to drop every open connection.
    generation: tokio::sync::watch::Sender<u64>,
    /// While true, connections are accepted and closed at once.
    down: AtomicBool,
    /// When a reply from upstream contains these bytes, that connection
    /// stops forwarding in both directions (frozen) and the sender fires.
    freeze_on: Mutex<Option<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>>,
    /// Releases frozen connections (by dropping them).
    frozen: AtomicU64,
}

/// A TCP proxy on 127.0.0.1 in front of a Redis: a network between a server
/// process and Redis that a test can cut, or freeze right after a chosen reply.
#[derive(Clone)]
pub struct Proxy {
    state: Arc<ProxyState>,
    pub port: u16,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        // A port no server of this process had: a killed server's port stays its own.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let (generation, _) = tokio::sync::watch::channel(0);
        let state = Arc::new(ProxyState {
            upstream,
            generation,
            down: AtomicBool::new(false),
            freeze_on: Mutex::new(None),
            frozen: AtomicU64::new(0),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if accept_state.down.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                tokio::spawn(proxy_conn(accept_state.clone(), client));
            }
        });
        Proxy { state, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Cuts the network: every open connection drops, new ones are refused.
    pub fn cut(&self) {
        self.state.down.store(true, Ordering::Release);
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Heals the network.
    pub fn heal(&self) {
        self.state.down.store(false, Ordering::Release);
    }

    /// Freezes the first connection whose upstream reply contains `pattern`
    /// (that reply is not forwarded); the receiver fires when it happens.
    pub fn freeze_on(&self, pattern: &[u8]) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.state.freeze_on.lock().unwrap() = Some((pattern.to_vec(), tx));
        rx
    }
}

async fn proxy_conn(state: Arc<ProxyState>, mut client: TcpStream) {
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", state.upstream)).await else {
        return;
    };
    let mut generation = state.generation.subscribe();
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut up_buf = vec![0u8; 64 * 1024];
    let mut down_buf = vec![0u8; 64 * 1024];
    let mut window: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            _ = generation.changed() => return,
            n = cr.read(&mut up_buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if uw.write_all(&up_buf[..n]).await.is_err() { return },
            },
            n = ur.read(&mut down_buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    window.extend_from_slice(&down_buf[..n]);
                    let hit = {
                        let mut slot = state.freeze_on.lock().unwrap();
                        let hit = slot.as_ref().is_some_and(|(p, _)| {
                            window.windows(p.len()).any(|w| w == p.as_slice())
                        });
                        if hit { slot.take().map(|(_, tx)| tx) } else { None }
                    };
                    if let Some(tx) = hit {
                        state.frozen.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(());
                        // Frozen: nothing more moves on this connection until it is cut.
                        let _ = generation.changed().await;
                        return;
                    }
                    let keep = window.len().saturating_sub(256);
                    window.drain(..keep);
                    if cw.write_all(&down_buf[..n]).await.is_err() { return }
                }
            },
        }
    }
}
