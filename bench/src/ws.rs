//! A small WebSocket load client speaking the protocol types: idle
//! connections and their memory, fan-out of one publish, publish → receive
//! latency, and replay/snapshot time by feed size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use thoonk_protocol::{
    ChangeId, ChangeRequest, ClientMessage, FeedName, FeedPattern, FeedPosition, ItemId, Operation,
    ServerMessage, PROTOCOL_VERSION,
};
use thoonk_server::feeds::{FeedSettings, FeedStore, FeedType};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::args::Args;
use crate::stats::{quantile, rss, summary_ms};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound for one awaited frame: a failure condition, not a measure.
const WAIT: Duration = Duration::from_secs(60);

async fn send(ws: &mut Ws, message: &ClientMessage) -> anyhow::Result<()> {
    ws.send(Message::text(serde_json::to_string(message)?))
        .await?;
    Ok(())
}

async fn recv(ws: &mut Ws) -> anyhow::Result<ServerMessage> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .context("no frame within the wait")?
            .ok_or_else(|| anyhow!("connection closed"))??;
        match frame {
            Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            Message::Close(close) => bail!("closed by the server: {close:?}"),
            _ => {}
        }
    }
}

/// Connects and says hello; returns after `welcome`.
pub(crate) async fn open(url: &str, client_id: &str) -> anyhow::Result<Ws> {
    // Small buffers on the load client's side (tungstenite allocates its
    // whole read buffer per connection up front), and no Nagle delay.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    send(
        &mut ws,
        &ClientMessage::Hello {
            protocol: PROTOCOL_VERSION,
            token: "bench".into(),
            client_id: client_id.into(),
        },
    )
    .await?;
    match recv(&mut ws).await? {
        ServerMessage::Welcome { .. } => Ok(ws),
        other => bail!("expected welcome, got {other:?}"),
    }
}

/// Subscribes to one feed and reads until its snapshot or replay is complete.
pub(crate) async fn subscribe(
    ws: &mut Ws,
    feed: &FeedName,
    known: Option<FeedPosition>,
    expect_items: usize,
) -> anyhow::Result<(&'static str, usize)> {
    let mut known_map = BTreeMap::new();
    if let Some(position) = known {
        known_map.insert(feed.clone(), position);
    }
    send(
        ws,
        &ClientMessage::Subscribe {
            pattern: FeedPattern::new(feed.as_str())?,
            known: known_map,
        },
    )
    .await?;
    let mut got = 0;
    loop {
        match recv(ws).await? {
            ServerMessage::Snapshot { items, .. } => return Ok(("snapshot", items.len())),
            ServerMessage::Changes { events, .. } => {
                got += events.len();
                if got >= expect_items {
                    return Ok(("changes", got));
                }
            }
            ServerMessage::Subscribed { feeds, .. } if feeds.is_empty() => return Ok(("none", 0)),
            ServerMessage::Error { code, message } => bail!("{code:?}: {message}"),
            _ => {}
        }
    }
}

async fn store(args: &Args) -> anyhow::Result<FeedStore> {
    let client = redis::Client::open(args.text("redis")?.as_str())?;
    retry(|| FeedStore::open(&client, "thoonk-bench")).await
}

pub(crate) fn stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// `--conns` connections, each subscribed to one feed, held idle: the
/// gateway's memory per connection; then `--publishes` single publishes to
/// that feed, each timed until the last connection received it.
///
/// `--url` and `--pid` may list several gateways (comma-separated, in the
/// same order): the connections are dealt over them in turn, and the RSS
/// figures are their sum (each gateway's under `gateways`).
pub async fn conns(args: &Args) -> anyhow::Result<Value> {
    let urls: Vec<String> = args.text("url")?.split(',').map(str::to_owned).collect();
    let pids: Vec<u32> = args
        .or("pid", "0".to_owned())?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(
        pids.len() == urls.len(),
        "--pid lists {} gateways, --url {}",
        pids.len(),
        urls.len()
    );
    let rss_each = || pids.iter().map(|&pid| rss(pid)).collect::<Vec<u64>>();
    let count: usize = args.or("conns", 1000)?;
    let publishes: usize = args.or("publishes", 5)?;
    // At most this many connections are opening at once (until their
    // `subscribe` is answered, well after `hello`): the gateway admits 64
    // per address that have not said `hello` yet and answers 429 beyond.
    let opening: usize = args.or("opening", 64)?;
    let store = store(args).await?;
    let feed = FeedName::new(format!("bench:fanout:{}", stamp()))?;
    let (seed, seed_item) = (ItemId::new("seed")?, json!({"title": "seed"}));
    retry(|| store.publish(&feed, Some(&seed), &seed_item, None)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_each = rss_each();
    let rss_before: u64 = rss_before_each.iter().sum();
    let client_rss_before = rss(std::process::id());

    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<usize, String>>();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(opening));
    let start = Instant::now();
    for n in 0..count {
        let gateway = n % urls.len();
        let (url, feed, gate) = (urls[gateway].clone(), feed.clone(), gate.clone());
        let (ready_tx, seen_tx, mut stop) = (ready_tx.clone(), seen_tx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let opened = async {
                let mut ws = open(&url, &format!("bench-{n}")).await?;
                subscribe(&mut ws, &feed, None, 0).await?;
                Ok::<_, anyhow::Error>(ws)
            }
            .await;
            drop(permit);
            let mut ws = match opened {
                Ok(ws) => {
                    let _ = ready_tx.send(Ok(gateway));
                    ws
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err.to_string()));
                    return;
                }
            };
            let mut ping = tokio::time::interval(Duration::from_secs(30));
            ping.tick().await;
            loop {
                tokio::select! {
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(text))) => {
                            let now = Instant::now();
                            if let Ok(ServerMessage::Event { rev, .. }) = serde_json::from_str(text.as_str()) {
                                let _ = seen_tx.send((rev, now));
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    _ = ping.tick() => {
                        if send(&mut ws, &ClientMessage::Ping).await.is_err() { return; }
                    }
                    _ = stop.changed() => {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            }
        });
    }
    drop(ready_tx);
    let (mut held, mut failed, mut first_error) = (0usize, 0usize, None);
    let mut held_each = vec![0usize; urls.len()];
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(gateway) => {
                held += 1;
                held_each[gateway] += 1;
            }
            Err(err) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
        }
        if held + failed == count {
            break;
        }
    }
    let ramp = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_each = rss_each();
    let rss_after: u64 = rss_after_each.iter().sum();
    let client_rss_after = rss(std::process::id());

    // Fan-out: one publish at a time, timed from before the publish call
    // until each connection has its event.
    let mut fanout_last = Vec::new();
    let mut fanout_median = Vec::new();
    let mut fanout_first = Vec::new();
    let mut delivered_min = usize::MAX;
    for i in 0..publishes {
        tokio::time::sleep(Duration::from_millis(300)).await;
        while seen_rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        let (id, item) = (
            ItemId::new(format!("p{i}"))?,
            json!({"title": "fan-out", "i": i}),
        );
        let applied = retry(|| store.publish(&feed, Some(&id), &item, None)).await?;
        let mut times = Vec::with_capacity(held);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while times.len() < held {
            match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
                Ok(Some((rev, at))) if rev == applied.rev => {
                    times.push(at.duration_since(t0).as_secs_f64() * 1000.0)
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        delivered_min = delivered_min.min(times.len());
        times.sort_by(f64::total_cmp);
        fanout_first.push(quantile(&times, 0.0));
        fanout_median.push(quantile(&times, 0.5));
        fanout_last.push(times.last().copied().unwrap_or(f64::NAN));
    }
    let rss_end_each = rss_each();
    let rss_end: u64 = rss_end_each.iter().sum();
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_conn = if held > 0 {
        (rss_after.saturating_sub(rss_before)) as f64 / held as f64
    } else {
        f64::NAN
    };
    Ok(json!({
        "conns": count,
        "gateways": (0..urls.len()).map(|g| json!({
            "held": held_each[g],
            "rss_before": rss_before_each[g],
            "rss_held": rss_after_each[g],
            "rss_end": rss_end_each[g],
        })).collect::<Vec<_>>(),
        "held": held,
        "failed": failed,
        "first_error": first_error,
        "ramp_secs": ramp,
        "server_rss_before": rss_before,
        "server_rss_held": rss_after,
        "server_rss_end": rss_end,
        "server_bytes_per_conn": per_conn,
        "client_bytes_per_conn": (client_rss_after.saturating_sub(client_rss_before)) as f64 / held.max(1) as f64,
        "publishes": publishes,
        "delivered_min": if publishes > 0 { delivered_min } else { 0 },
        "fanout_last_ms": fanout_last,
        "fanout_median_ms": fanout_median,
        "fanout_first_ms": fanout_first,
    }))
}

/// Publish → receive latency on loopback, two ways: a client's `submit`
/// (queued as a job, worked, applied, fanned out) to another client's
/// event, and a direct store publish (script + pub/sub + gateway) to the event.
pub async fn latency(args: &Args) -> anyhow::Result<Value> {
    let url = args.text("url")?;
    let samples: usize = args.or("samples", 300)?;
    let store = store(args).await?;
    let run = stamp();
    let feed = FeedName::new(format!("bench:latency:{run}"))?;
    let seed = ItemId::new("seed")?;
    let seed_item = json!({"title": "seed"});
    retry(|| store.publish(&feed, Some(&seed), &seed_item, None)).await?;
    let mut sub = open(&url, &format!("bench-sub-{run}")).await?;
    subscribe(&mut sub, &feed, None, 0).await?;
    let publisher = open(&url, &format!("bench-pub-{run}")).await?;
    let (mut pub_sink, mut pub_rx) = publisher.split();

    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = sub.next().await {
            let now = Instant::now();
            if let Message::Text(text) = frame {
                if let Ok(ServerMessage::Event { change, .. }) = serde_json::from_str(text.as_str())
                {
                    let _ = seen_tx.send((change.id.as_str().to_owned(), now));
                }
            }
        }
    });
    // The publisher's writer; with `ping_after_ack` the reader answers each
    // `ack` with a `ping` at once, so that the client's TCP ACK leaves without
    // the delayed-ACK wait (an experiment on the outcome's latency).
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if pub_sink.send(message).await.is_err() {
                return;
            }
        }
    });
    let ping_after_ack = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel::<(String, Instant)>();
    {
        let (out_tx, ping_after_ack) = (out_tx.clone(), ping_after_ack.clone());
        let ping = serde_json::to_string(&ClientMessage::Ping)?;
        tokio::spawn(async move {
            while let Some(Ok(frame)) = pub_rx.next().await {
                let now = Instant::now();
                if let Message::Text(text) = frame {
                    match serde_json::from_str(text.as_str()) {
                        Ok(ServerMessage::Outcome { id, .. }) => {
                            let _ = outcome_tx.send((id.0, now));
                        }
                        Ok(ServerMessage::Ack { .. })
                            if ping_after_ack.load(std::sync::atomic::Ordering::Relaxed) =>
                        {
                            let _ = out_tx.send(Message::text(ping.clone()));
                        }
                        _ => {}
                    }
                }
            }
        });
    }
    async fn wait_for(
        rx: &mut mpsc::UnboundedReceiver<(String, Instant)>,
        id: &str,
    ) -> Option<Instant> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some((got, at))) if got == id => return Some(at),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }

    let mut via_submit = Vec::new();
    let mut to_outcome = Vec::new();
    let mut to_outcome_pinged = Vec::new();
    let mut via_store = Vec::new();
    let mut lost = 0usize;
    let warmup = 20;
    let mut seq = 0u64;
    for pinged in [false, true] {
        ping_after_ack.store(pinged, std::sync::atomic::Ordering::Relaxed);
        for i in 0..samples + warmup {
            tokio::time::sleep(Duration::from_millis(3)).await;
            seq += 1;
            let id = format!("s{seq}");
            let change = ChangeRequest {
                id: ChangeId::new(&format!("bench-pub-{run}"), seq),
                op: Operation::Publish {
                    feed: feed.clone(),
                    id: ItemId::new(id.clone())?,
                    item: json!({"title": "latency", "i": i}),
                    position: None,
                },
                base: BTreeMap::new(),
            };
            let frame = serde_json::to_string(&ClientMessage::Submit {
                change: change.clone(),
            })?;
            let t0 = Instant::now();
            out_tx.send(Message::text(frame))?;
            let seen = wait_for(&mut seen_rx, &id).await;
            let outcome = wait_for(&mut outcome_rx, &change.id.0).await;
            let (Some(seen), Some(outcome)) = (seen, outcome) else {
                lost += 1;
                anyhow::ensure!(lost <= 10, "more than 10 samples lost");
                continue;
            };
            if i >= warmup {
                let ms = |at: Instant| at.duration_since(t0).as_secs_f64() * 1000.0;
                if pinged {
                    to_outcome_pinged.push(ms(outcome));
                } else {
                    via_submit.push(ms(seen));
                    to_outcome.push(ms(outcome));
                }
            }
        }
    }
    for i in 0..samples + warmup {
        tokio::time::sleep(Duration::from_millis(3)).await;
        let id = format!("d{i}");
        let t0 = Instant::now();
        let (item_id, item) = (
            ItemId::new(id.clone())?,
            json!({"title": "latency", "i": i}),
        );
        retry(|| store.publish(&feed, Some(&item_id), &item, None)).await?;
        let Some(seen) = wait_for(&mut seen_rx, &id).await else {
            lost += 1;
            anyhow::ensure!(lost <= 10, "more than 10 samples lost");
            continue;
        };
        if i >= warmup {
            via_store.push(seen.duration_since(t0).as_secs_f64() * 1000.0);
        }
    }
    Ok(json!({
        "submit_to_event": summary_ms(&mut via_submit),
        "submit_to_outcome": summary_ms(&mut to_outcome),
        "submit_to_outcome_ping_after_ack": summary_ms(&mut to_outcome_pinged),
        "store_publish_to_event": summary_ms(&mut via_store),
        "lost": lost,
    }))
}

/// Replay and snapshot time by feed size, and Redis memory per item.
pub async fn replay(args: &Args) -> anyhow::Result<Value> {
    let url = args.text("url")?;
    let items: usize = args.or("items", 1000)?;
    let reps: usize = args.or("reps", 3)?;
    let client = redis::Client::open(args.text("redis")?.as_str())?;
    let store = retry(|| FeedStore::open(&client, "thoonk-bench")).await?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let used_memory = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mem_before = used_memory(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await?,
    );
    let feed = FeedName::new(format!("bench:replay:{items}:{}", stamp()))?;
    let mut settings = FeedSettings::new(FeedType::Feed);
    settings.retention = Some(items as u64 + 10);
    retry(|| store.create(&feed, &settings)).await?;
    let fill_start = Instant::now();
    fill_feed(&store, &feed, 0, items).await?;
    let fill_secs = fill_start.elapsed().as_secs_f64();
    let mem_after = used_memory(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await?,
    );
    let epoch = retry(|| store.info(&feed))
        .await?
        .map(|i| i.epoch)
        .unwrap_or(0);

    let mut snapshot_ms = Vec::new();
    let mut replay_ms = Vec::new();
    let mut replay_kind = "";
    for rep in 0..reps {
        let mut ws = open(&url, &format!("bench-snap-{rep}")).await?;
        let t0 = Instant::now();
        let (_, got) = subscribe(&mut ws, &feed, None, items).await?;
        snapshot_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(got == items, "snapshot had {got} of {items} items");
        let _ = ws.close(None).await;

        let mut ws = open(&url, &format!("bench-replay-{rep}")).await?;
        let t0 = Instant::now();
        let (kind, got) =
            subscribe(&mut ws, &feed, Some(FeedPosition { epoch, rev: 0 }), items).await?;
        replay_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        replay_kind = kind;
        anyhow::ensure!(got == items, "replay had {got} of {items} changes");
        let _ = ws.close(None).await;
    }
    Ok(json!({
        "items": items,
        "fill_secs": fill_secs,
        "fill_per_sec": items as f64 / fill_secs,
        "retried_calls": RETRIES.load(std::sync::atomic::Ordering::Relaxed),
        "redis_bytes_per_item": (mem_after.saturating_sub(mem_before)) as f64 / items as f64,
        "snapshot_ms": snapshot_ms,
        "replay_ms": replay_ms,
        "replay_kind": replay_kind,
    }))
}

/// Publishes items `from..to` of the benchmark's item shape, 16 at a time.
async fn fill_feed(
    store: &FeedStore,
    feed: &FeedName,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
    let mut fillers = Vec::new();
    for _ in 0..16 {
        let (store, feed, next) = (store.clone(), feed.clone(), next.clone());
        fillers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= to {
                    return Ok::<_, anyhow::Error>(());
                }
                let item = json!({"title": format!("Task number {n}"), "done": n % 3 == 0, "n": n});
                let id = ItemId::new(format!("item-{n}"))?;
                retry(|| store.publish(&feed, Some(&id), &item, None)).await?;
            }
        }));
    }
    for filler in fillers {
        filler.await??;
    }
    Ok(())
}

/// Creates `--feed` (empty, with a change log holding `--retention` entries)
/// or fills it with items `--from`..`--to`.
pub async fn fill(args: &Args) -> anyhow::Result<Value> {
    let store = store(args).await?;
    let feed = FeedName::new(args.text("feed")?)?;
    let to: usize = args.or("to", 0)?;
    if to == 0 {
        let mut settings = FeedSettings::new(FeedType::Feed);
        settings.retention = Some(args.or("retention", 20_000)?);
        let epoch = store.create(&feed, &settings).await?;
        return Ok(json!({"feed": feed.as_str(), "epoch": epoch}));
    }
    let from: usize = args.or("from", 0)?;
    let start = Instant::now();
    fill_feed(&store, &feed, from, to).await?;
    Ok(json!({"feed": feed.as_str(), "items": to - from, "secs": start.elapsed().as_secs_f64()}))
}

/// Calls retried by [`retry`] in this process.
pub static RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Retries a Redis call that failed (the client's 500 ms response timeout
/// fires on an overloaded machine); the calls retried here are idempotent.
pub async fn retry<T, E, F, Fut>(mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt >= 10 => return Err(err.into()),
            Err(_) => {
                RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await
            }
        }
    }
}

/// `--conns` connections (20) that each subscribe to one feed of `--items`
/// items of 128 KiB (24: 3 MiB) and never read, `--rounds` times (5): the
/// gateway's RSS before, at its peak during each round (sampled every
/// 100 ms until the gateway closed them all or `--hold` seconds passed) and
/// after each round's connections are gone. Meanwhile a reading client
/// subscribes to the same feed each round: its time to the snapshot.
pub async fn slow_readers(args: &Args) -> anyhow::Result<Value> {
    let url = args.text("url")?;
    let pid: u32 = args.or("pid", 0)?;
    let count: usize = args.or("conns", 20)?;
    let rounds: usize = args.or("rounds", 5)?;
    let items: usize = args.or("items", 24)?;
    let hold: u64 = args.or("hold", 15)?;
    let store = store(args).await?;
    let feed = FeedName::new(format!("bench:slow:{}", stamp()))?;
    let pad = json!({ "pad": "s".repeat(128 * 1024) });
    for i in 0..items {
        let id = ItemId::new(format!("s{i}"))?;
        retry(|| store.publish(&feed, Some(&id), &pad, None)).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("--url needs a port"))?;
    let rss_before = rss(pid);
    let mut per_round = Vec::new();
    for round in 0..rounds {
        let mut slow = Vec::new();
        for n in 0..count {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_recv_buffer_size(256 * 1024)?;
            let stream = socket.connect(([127, 0, 0, 1], port).into()).await?;
            let (mut ws, _) =
                tokio_tungstenite::client_async(url.as_str(), MaybeTlsStream::Plain(stream))
                    .await?;
            send(
                &mut ws,
                &ClientMessage::Hello {
                    protocol: PROTOCOL_VERSION,
                    token: "bench".into(),
                    client_id: format!("slow-{round}-{n}"),
                },
            )
            .await?;
            send(
                &mut ws,
                &ClientMessage::Subscribe {
                    pattern: FeedPattern::new(feed.as_str())?,
                    known: BTreeMap::new(),
                },
            )
            .await?;
            slow.push(ws);
        }
        // A reading client meanwhile.
        let start = Instant::now();
        let mut reader = open(&url, &format!("reader-{round}")).await?;
        send(
            &mut reader,
            &ClientMessage::Subscribe {
                pattern: FeedPattern::new(feed.as_str())?,
                known: BTreeMap::new(),
            },
        )
        .await?;
        loop {
            if let ServerMessage::Snapshot { .. } = recv(&mut reader).await? {
                break;
            }
        }
        let reader_ms = start.elapsed().as_secs_f64() * 1000.0;
        let mut peak = rss(pid);
        let until = Instant::now() + Duration::from_secs(hold);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(rss(pid));
        }
        drop(slow);
        drop(reader);
        tokio::time::sleep(Duration::from_secs(2)).await;
        per_round.push(json!({
            "peak_mb": peak as f64 / 1e6,
            "after_mb": rss(pid) as f64 / 1e6,
            "reader_snapshot_ms": reader_ms,
        }));
    }
    Ok(json!({
        "measure": "slow-readers",
        "conns": count,
        "feed_mb": (items * 128 * 1024) as f64 / 1e6,
        "rss_before_mb": rss_before as f64 / 1e6,
        "rounds": per_round,
    }))
}
