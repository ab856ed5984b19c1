//! Fan-out on a Redis Cluster, broadcast vs sharded: how many change
//! notices each gateway gets from Redis while a writer publishes to every
//! team's feed, measured from outside the gateways.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::cluster::ClusterClientBuilder;
use redis::PushKind;
use serde_json::{json, Value};
use thoonk_protocol::{FeedName, ItemId, ServerMessage};
use thoonk_server::feeds::{
    tag_change_channel, FeedSettings, FeedStore, FeedType, CHANGE_CHANNEL_PATTERN,
};
use thoonk_server::redis_target::RedisTarget;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::jobs::slot_owners;

/// Notices heard by one listener and their size on the wire.
#[derive(Default)]
struct Heard {
    notices: AtomicU64,
    wire_bytes: AtomicU64,
}

impl Heard {
    fn add(&self, parts: &[usize]) {
        self.notices.fetch_add(1, Ordering::Relaxed);
        self.wire_bytes
            .fetch_add(resp_bytes(parts) as u64, Ordering::Relaxed);
    }
}

/// The size of a RESP array (RESP2 `*`, RESP3 push `>`: the same) of bulk
/// strings of `parts` bytes each.
fn resp_bytes(parts: &[usize]) -> usize {
    let bulk = |len: usize| 1 + len.to_string().len() + 2 + len + 2;
    1 + parts.len().to_string().len() + 2 + parts.iter().map(|&len| bulk(len)).sum::<usize>()
}

/// `--url` gateways (comma-separated, with their `--pid`s) on the cluster
/// `--redis`; gateway g's `--conns-per-feed` connections per feed follow
/// `--follow` teams of its own (g·follow …), each team one feed
/// `team:{<n>}:fanout-…`. A writer (`--concurrency` tasks, one store)
/// publishes to all `--teams` teams' feeds for `--seconds`.
///
/// Measured per gateway, from outside it: the bytes its sockets to the
/// cluster's primaries received (`ss -tinp`, `bytes_received`, before and
/// after) and its CPU time (`/proc/PID/stat`). Beside them two listeners of
/// this process count the notices each fan-out mode sends a gateway: one
/// `PSUBSCRIBE feed.changes:*` (broadcast: every notice of the system) and,
/// per gateway, one RESP3 cluster connection that `SSUBSCRIBE`s the tags
/// that gateway follows (sharded); both run in either mode, so the load on
/// Redis is the same. `--mode` only labels the result (the script starts
/// the gateways with `--fanout broadcast` or `--fanout sharded`).
pub async fn tag_fanout(args: &Args) -> anyhow::Result<Value> {
    let spec = args.text("redis")?;
    let target = RedisTarget::parse(&spec)?;
    let RedisTarget::Cluster { nodes, .. } = &target else {
        anyhow::bail!("--redis must name a cluster (redis+cluster://…)");
    };
    let mode = args.text("mode")?;
    let urls: Vec<String> = args.text("url")?.split(',').map(str::to_owned).collect();
    let pids: Vec<u32> = args
        .text("pid")?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(pids.len() == urls.len(), "one --pid per --url");
    let teams: usize = args.or("teams", 12)?;
    let follow: usize = args.or("follow", 3)?;
    let per_feed: usize = args.or("conns-per-feed", 2)?;
    let seconds: f64 = args.or("seconds", 3.0)?;
    let concurrency: usize = args.or("concurrency", 50)?;
    anyhow::ensure!(
        follow * urls.len() <= teams,
        "the gateways follow more teams than there are"
    );

    let stamp = crate::ws::stamp();
    let feeds: Vec<FeedName> = (0..teams)
        .map(|n| FeedName::new(format!("team:{{{n}}}:fanout-{stamp}")))
        .collect::<Result<_, _>>()?;
    let store = crate::ws::retry(|| FeedStore::open(&target, "thoonk-bench")).await?;
    let settings = FeedSettings::new(FeedType::Feed);
    for feed in &feeds {
        let (seed, item) = (ItemId::new("seed")?, json!({"title": "seed"}));
        let _ = store.create(feed, &settings).await;
        crate::ws::retry(|| store.publish(feed, Some(&seed), &item, None)).await?;
    }
    let primaries: Vec<String> = {
        let mut p: Vec<String> = slot_owners(&nodes[0])
            .await?
            .into_iter()
            .map(|(_, _, node)| node)
            .collect();
        p.sort();
        p.dedup();
        p
    };

    // The gateways' clients: each counts the changes it is sent.
    let delivered: Vec<Arc<AtomicU64>> = urls.iter().map(|_| Arc::default()).collect();
    let mut followed: Vec<Vec<usize>> = Vec::new();
    let mut clients = Vec::new();
    for (g, url) in urls.iter().enumerate() {
        let tags: Vec<usize> = (g * follow..(g + 1) * follow).collect();
        for &team in &tags {
            for c in 0..per_feed {
                let mut ws =
                    crate::ws::open(url, &format!("fanout-{stamp}-{g}-{team}-{c}")).await?;
                crate::ws::subscribe(&mut ws, &feeds[team], None, 0).await?;
                let count = delivered[g].clone();
                clients.push(tokio::spawn(async move {
                    while let Some(Ok(frame)) = ws.next().await {
                        if let Message::Text(text) = frame {
                            match serde_json::from_str(text.as_str()) {
                                Ok(ServerMessage::Event { .. }) => {
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(ServerMessage::Changes { events, .. }) => {
                                    count.fetch_add(events.len() as u64, Ordering::Relaxed);
                                }
                                _ => {}
                            }
                        }
                    }
                }));
            }
        }
        followed.push(tags);
    }

    // The listeners that mimic each mode.
    let broadcast = Arc::new(Heard::default());
    let mut pubsub = target.pubsub().await?;
    pubsub.psubscribe(CHANGE_CHANNEL_PATTERN).await?;
    {
        let heard = broadcast.clone();
        tokio::spawn(async move {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                heard.add(&[
                    "pmessage".len(),
                    CHANGE_CHANNEL_PATTERN.len(),
                    message.get_channel_name().len(),
                    message.get_payload_bytes().len(),
                ]);
            }
        });
    }
    let mut sharded = Vec::new();
    let mut sharded_conns = Vec::new();
    for tags in &followed {
        let heard = Arc::new(Heard::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut conn =
            ClusterClientBuilder::new(nodes.iter().map(|n| n.get_connection_info().clone()))
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .build()?
                .get_async_connection()
                .await?;
        for &team in tags {
            conn.ssubscribe(tag_change_channel(&team.to_string()))
                .await?;
        }
        let counter = heard.clone();
        tokio::spawn(async move {
            while let Some(push) = rx.recv().await {
                if push.kind != PushKind::SMessage {
                    continue;
                }
                let sizes: Vec<usize> = push
                    .data
                    .iter()
                    .map(|part| match part {
                        redis::Value::BulkString(bytes) => bytes.len(),
                        _ => 0,
                    })
                    .collect();
                let mut parts = vec!["smessage".len()];
                parts.extend(sizes);
                counter.add(&parts);
            }
        });
        sharded.push(heard);
        sharded_conns.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let clock = clock_ticks();
    let bytes_before = redis_bytes_read(&pids, &primaries)?;
    let cpu_before: Vec<u64> = pids.iter().map(|&pid| cpu_ticks(pid)).collect();
    let nodes_before = node_counters(nodes).await;
    let delivered_before: Vec<u64> = delivered
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .collect();
    let (broadcast_before, sharded_before) = (
        snapshot(&broadcast),
        sharded.iter().map(|h| snapshot(h)).collect::<Vec<_>>(),
    );

    let per_team: Arc<Vec<AtomicU64>> = Arc::new((0..teams).map(|_| AtomicU64::new(0)).collect());
    let counted = {
        let (store, feeds, per_team) = (store.clone(), Arc::new(feeds.clone()), per_team.clone());
        crate::feed::run_for(concurrency, seconds, move |task, n| {
            let (store, feeds, per_team) = (store.clone(), feeds.clone(), per_team.clone());
            async move {
                let team = (task + n as usize) % feeds.len();
                let id = ItemId::new(format!("{task}-{n}"))?;
                store
                    .publish(
                        &feeds[team],
                        Some(&id),
                        &json!({"title": "x", "n": n}),
                        None,
                    )
                    .await?;
                per_team[team].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?
    };
    // Let the notices in flight arrive.
    let mut last = u64::MAX;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = broadcast.notices.load(Ordering::Relaxed)
            + delivered
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .sum::<u64>();
        if now == last {
            break;
        }
        last = now;
    }
    let bytes_after = redis_bytes_read(&pids, &primaries)?;
    let cpu_after: Vec<u64> = pids.iter().map(|&pid| cpu_ticks(pid)).collect();
    let nodes_after = node_counters(nodes).await;

    let published: Vec<u64> = per_team.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    let (bn, bw) = since(&broadcast, broadcast_before);
    let gateways: Vec<Value> = (0..urls.len())
        .map(|g| {
            let (sn, sw) = since(&sharded[g], sharded_before[g]);
            let expected: u64 =
                followed[g].iter().map(|&t| published[t]).sum::<u64>() * per_feed as u64;
            json!({
                "tags": followed[g],
                "conns": followed[g].len() * per_feed,
                "redis_bytes_read": bytes_after[g].saturating_sub(bytes_before[g]),
                "cpu_secs": cpu_after[g].saturating_sub(cpu_before[g]) as f64 / clock,
                "sharded_notices": sn,
                "sharded_wire_bytes": sw,
                "events_delivered": delivered[g].load(Ordering::Relaxed) - delivered_before[g],
                "events_expected": expected,
            })
        })
        .collect();
    drop(sharded_conns);
    for client in clients {
        client.abort();
    }
    Ok(json!({
        "mode": mode,
        "teams": teams,
        "follow": follow,
        "conns_per_feed": per_feed,
        "concurrency": concurrency,
        "publishes": counted.ops,
        "publishes_per_team": published,
        "errors": counted.errors,
        "secs": counted.secs,
        "per_sec": counted.ops as f64 / counted.secs,
        "broadcast_notices": bn,
        "broadcast_wire_bytes": bw,
        "gateways": gateways,
        "nodes": nodes.iter().enumerate().map(|(i, n)| json!({
            "node": n.get_connection_info().addr().to_string(),
            "net_output_bytes": nodes_after[i].0.saturating_sub(nodes_before[i].0),
            "bus_publishes_sent": nodes_after[i].1.saturating_sub(nodes_before[i].1),
        })).collect::<Vec<_>>(),
    }))
}

fn snapshot(heard: &Heard) -> (u64, u64) {
    (
        heard.notices.load(Ordering::Relaxed),
        heard.wire_bytes.load(Ordering::Relaxed),
    )
}

fn since(heard: &Heard, before: (u64, u64)) -> (u64, u64) {
    let now = snapshot(heard);
    (now.0 - before.0, now.1 - before.1)
}

/// Per pid, the bytes received so far on its TCP sockets whose peer is one
/// of `peers` (`host:port`), from `ss -tinpH` (`bytes_received`).
fn redis_bytes_read(pids: &[u32], peers: &[String]) -> anyhow::Result<Vec<u64>> {
    let out = std::process::Command::new("ss").args(["-tinpH"]).output()?;
    anyhow::ensure!(out.status.success(), "ss -tinpH failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut totals = vec![0u64; pids.len()];
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // State Recv-Q Send-Q Local Peer Process
            let fields: Vec<&str> = line.split_whitespace().collect();
            current = None;
            if fields.len() >= 6 && peers.iter().any(|p| p == fields[4]) {
                current = pids.iter().position(|pid| {
                    fields[5..]
                        .iter()
                        .any(|f| f.contains(&format!("pid={pid},")))
                });
            }
        } else if let Some(g) = current {
            if let Some(bytes) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("bytes_received:"))
                .and_then(|v| v.parse::<u64>().ok())
            {
                totals[g] += bytes;
            }
            current = None;
        }
    }
    Ok(totals)
}

/// User + system CPU time of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when unknown).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Per node: `INFO stats` `total_net_output_bytes` (everything Redis sent
/// its clients) and `CLUSTER INFO` `cluster_stats_messages_publish_sent`
/// (classic `PUBLISH`es forwarded to the other nodes over the cluster bus);
/// 0 when unreadable.
async fn node_counters(nodes: &[redis::Client]) -> Vec<(u64, u64)> {
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    for node in nodes {
        let texts: Option<(String, String)> = async {
            let mut conn = node.get_multiplexed_async_connection().await.ok()?;
            let stats: String = redis::cmd("INFO")
                .arg("stats")
                .query_async(&mut conn)
                .await
                .ok()?;
            let cluster: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .ok()?;
            Some((stats, cluster))
        }
        .await;
        let (stats, cluster) = texts.unwrap_or_default();
        out.push((
            field(&stats, "total_net_output_bytes"),
            field(&cluster, "cluster_stats_messages_publish_sent"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::resp_bytes;

    #[test]
    fn resp_sizes() {
        // *2\r\n$1\r\na\r\n$2\r\nbc\r\n
        assert_eq!(resp_bytes(&[1, 2]), 4 + 7 + 8);
    }
}
